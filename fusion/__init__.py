"""The bank's engine: encrypted store, ingest, matching, features, the run folder layout."""

__all__ = ["coverage", "features", "ingest", "match", "runfolder", "store"]
