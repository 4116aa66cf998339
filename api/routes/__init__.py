"""One router per resource: health, batches, scores, lists, outcomes, query, tokens."""

__all__ = ["batches", "health", "lists", "outcomes", "query", "scores", "tokens"]
