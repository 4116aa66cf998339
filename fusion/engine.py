"""Bucketed jobs: moved to the `fusion.jobs` package; this name re-exports it."""

# transitional: removed when labs/ imports fusion.jobs
import fusion.jobs
from fusion.jobs import *  # noqa: F403

__all__ = fusion.jobs.__all__
