"""What every hubnode service does the same way: FHIR errors, callers, database, audit.

The trust centre and the connector share it so a refused request, a bearer token, a migration
or an audit record behaves identically in both, and a fix lands once.
"""
