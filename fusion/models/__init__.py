"""Models that prove the data's worth: acquisition, rescue, uplift, and the metrics judging them."""

__all__ = [
    "acquisition",
    "booster",
    "campaign",
    "classifier",
    "design",
    "distributed",
    "metrics",
    "proportions",
    "rescue",
    "targeting",
    "uplift",
    "vectors",
]
