"""One router per resource: health, batches, scores, lists, outcomes, query, tokens,
campaigns, journeys, models.

Each module exports its `router`; the route functions are private to it, and each route's
`name=` keeps its OpenAPI operation id and summary.
"""

__all__ = [
    "batches",
    "campaigns",
    "health",
    "journeys",
    "lists",
    "models",
    "outcomes",
    "query",
    "scores",
    "tokens",
]
