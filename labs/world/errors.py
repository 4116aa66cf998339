"""The synthetic world's one error: it cannot be generated or read with what it was given."""

from __future__ import annotations

from contracts.errors import FusionError

__all__ = ["WorldError"]


class WorldError(FusionError, ValueError):
    """The synthetic world (or the scale inputs) cannot be generated or opened as asked.

    Also a ValueError: every cause is an argument (a size, a share, a seed, a folder) that is
    out of range or does not hold what it should.
    """
