"""The bank's engine: encrypted store, ingest, matching, features, the run folder layout."""

__all__ = ["features", "ingest", "match", "runfolder", "store"]
