"""hubnode connector: ingest into a node and DSF-style processes between nodes (docs/federation.md)."""
