"""The bank's engine: encrypted store, ingest, matching, features, models, scoring, queries."""

__all__ = [
    "coverage",
    "features",
    "ingest",
    "lists",
    "match",
    "query",
    "registry",
    "runfolder",
    "scoring",
    "store",
    "tokens",
    "training",
]
