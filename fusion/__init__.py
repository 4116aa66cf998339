"""The bank's engine: encrypted store, ingest, matching, features, models, scoring, queries."""

__all__ = [
    "coverage",
    "engine",
    "features",
    "ingest",
    "lists",
    "match",
    "oprf_psi",
    "query",
    "registry",
    "runfolder",
    "scoring",
    "store",
    "tokens",
    "training",
]
