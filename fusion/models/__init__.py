"""Models that prove the data's worth: acquisition, rescue, uplift, and the metrics judging them."""

__all__ = [
    "acquisition",
    "booster",
    "campaign",
    "campaign_outcomes",
    "champion",
    "classifier",
    "design",
    "distributed",
    "metrics",
    "promotion",
    "proportions",
    "rescue",
    "scenarios",
    "targeting",
    "uplift",
    "uplift_arms",
    "uplift_inputs",
    "vectors",
]
