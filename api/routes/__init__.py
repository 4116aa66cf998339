"""One router per resource: health, batches, scores, lists, outcomes, query."""

__all__ = ["batches", "health", "lists", "outcomes", "query", "scores"]
