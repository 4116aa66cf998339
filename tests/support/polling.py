"""Wait for something that happens in another thread or process, without a hand-made loop."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

__all__ = ["eventually"]


def eventually(
    probe: Callable[[], T | None],
    *,
    timeout: float = 30.0,
    interval: float = 0.02,
    what: str = "the condition",
) -> T:
    """Return the first truthy value `probe()` gives, calling it until `timeout` seconds pass.

    An exception raised by `probe` counts as "not yet" until the deadline; then the last one is
    raised from the AssertionError, so a failing wait says what it last saw.
    """
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            value = probe()
            if value:
                return value
            last_error = None
        except Exception as error:  # "not yet"; re-raised at the deadline
            last_error = error
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what} did not happen within {timeout:g} s") from last_error
        time.sleep(interval)
