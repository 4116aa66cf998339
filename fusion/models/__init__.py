"""fusion/models."""
