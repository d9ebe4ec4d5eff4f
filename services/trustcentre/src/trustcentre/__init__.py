"""The hub node's trusted third party: pseudonyms, consent, identity linkage and their audit.

Speaks the MOSAIC TTP-FHIR gateway contracts (gPAS, gICS), so the real tools can be swapped in.
"""
