"""Models that prove the data's worth: acquisition, rescue, uplift, and the metrics judging them."""

__all__ = [
    "acquisition",
    "campaign",
    "classifier",
    "design",
    "distributed",
    "metrics",
    "rescue",
    "uplift",
]
