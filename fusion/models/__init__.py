"""Models that prove the data's worth; `metrics` scores them (AUC, gains, Qini, uplift, A/B)."""

__all__ = ["metrics"]
