"""The bank's engine: the encrypted store, ingest of sealed batches, the run folder layout."""

__all__ = ["ingest", "runfolder", "store"]
