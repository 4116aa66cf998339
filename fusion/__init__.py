"""The bank's engine: encrypted store, ingest, matching, features, models, scoring, queries."""

__all__ = [
    "coverage",
    "engine",
    "features",
    "ingest",
    "lists",
    "match",
    "models",
    "oprf_psi",
    "progress",
    "query",
    "registry",
    "runfolder",
    "scoring",
    "store",
    "tokens",
    "training",
]
