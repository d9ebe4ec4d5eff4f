"""Conformance suite: replay patient journeys across nodes and certify interoperability."""
