"""The sign-in limit: failed console sign-ins counted per client address, in memory.

An address that sent `attempts` invalid tokens within `window` seconds is refused (429, with
Retry-After) until the oldest of them is `window` seconds old; a valid token signs in as long as
the address is not refused, and only invalid tokens count. A token is 32 random bytes, so the
limit does not guard the tokens (no rate makes guessing one feasible): it keeps one address from
making the service verify tokens without end, and it makes a run of failures visible (each is
audited as a 401). The book holds at most `addresses` addresses (the least recently failed go
first) and lives in the service's memory: a restart forgets it. Behind a gateway every client
has the gateway's address, so the limit is then the gateway's, for all of them together.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable

__all__ = ["SignInLimit"]


class SignInLimit:
    """Failed sign-ins per client address within a sliding window."""

    def __init__(
        self,
        *,
        attempts: int = 10,
        window: float = 300.0,
        addresses: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Refuse an address after `attempts` failures within `window` seconds."""
        if not (attempts >= 1 and window > 0 and addresses >= 1):
            raise ValueError(
                f"attempts and addresses must be >= 1 and window > 0 seconds; got "
                f"attempts={attempts}, window={window}, addresses={addresses}"
            )
        self._attempts = attempts
        self._window = window
        self._addresses = addresses
        self._clock = clock
        self._lock = threading.Lock()
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def _recent(self, address: str, now: float) -> deque[float]:
        """Return the address's failures within the window (older ones dropped); lock held."""
        times = self._failures.get(address, deque())
        while times and now - times[0] >= self._window:
            times.popleft()
        if not times:
            self._failures.pop(address, None)
        return times

    def retry_after(self, address: str) -> int | None:
        """Return the seconds until `address` may try again, or None when it may now."""
        now = self._clock()
        with self._lock:
            times = self._recent(address, now)
            if len(times) < self._attempts:
                return None
            return max(1, math.ceil(times[-self._attempts] + self._window - now))

    def failed(self, address: str) -> None:
        """Count one failed sign-in from `address`."""
        now = self._clock()
        with self._lock:
            times = self._recent(address, now)
            times.append(now)
            while len(times) > self._attempts:  # more are never needed to judge
                times.popleft()
            self._failures[address] = times
            self._failures.move_to_end(address)
            while len(self._failures) > self._addresses:
                self._failures.popitem(last=False)

    def clear(self) -> None:
        """Forget every failure."""
        with self._lock:
            self._failures.clear()
