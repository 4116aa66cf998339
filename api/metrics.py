"""Request counts and latency histograms by route, and how full the kept sealed files are, for
GET /metrics (Prometheus text)."""

from __future__ import annotations

import bisect
import threading
from collections import Counter
from collections.abc import Mapping

from fusion.retention import FolderUsage, Retention

__all__ = ["LATENCY_BUCKETS", "RequestMetrics", "kept_lines"]

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class RequestMetrics:
    """Counts of finished requests by (method, route, status), latency buckets by route."""

    def __init__(self) -> None:
        # Its own lock: the event loop takes it for every request, and nothing slow runs
        # under it.
        self._lock = threading.Lock()
        self._counts: Counter[tuple[str, str, str]] = Counter()
        # route -> request counts per latency bucket (the last: slower than every bound), sum
        self._latency: dict[str, tuple[list[int], list[float]]] = {}

    def count(self, *, method: str, route: str, status: str, seconds: float) -> None:
        """Count one finished request and the time it took."""
        with self._lock:
            self._counts[(method, route, status)] += 1
            counts, total = self._latency.setdefault(
                route, ([0] * (len(LATENCY_BUCKETS) + 1), [0.0])
            )
            counts[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
            total[0] += seconds

    def snapshot(
        self,
    ) -> tuple[list[tuple[tuple[str, str, str], int]], dict[str, tuple[list[int], float]]]:
        """Return (request counts, latency buckets and sums by route), copied under the lock."""
        with self._lock:
            counts = sorted(self._counts.items())
            latency = {route: (list(c), s[0]) for route, (c, s) in self._latency.items()}
        return counts, latency


def kept_lines(kept: Mapping[str, tuple[FolderUsage, Retention]]) -> list[str]:
    """Return the Prometheus lines saying how full each kept folder is, and its bounds."""
    lines = [
        "# HELP bankfusion_kept_bytes Bytes of judged sealed files (and reports) kept, by folder.",
        "# TYPE bankfusion_kept_bytes gauge",
        *(f'bankfusion_kept_bytes{{folder="{name}"}} {u.bytes}' for name, (u, _) in kept.items()),
        "# HELP bankfusion_kept_files Files kept, by folder.",
        "# TYPE bankfusion_kept_files gauge",
        *(f'bankfusion_kept_files{{folder="{name}"}} {u.files}' for name, (u, _) in kept.items()),
        "# HELP bankfusion_kept_max_bytes Size bound of each kept folder (oldest pruned first).",
        "# TYPE bankfusion_kept_max_bytes gauge",
        *(
            f'bankfusion_kept_max_bytes{{folder="{name}"}} {r.max_bytes}'
            for name, (_, r) in kept.items()
        ),
        "# HELP bankfusion_kept_max_age_seconds Age bound of each kept folder.",
        "# TYPE bankfusion_kept_max_age_seconds gauge",
        *(
            f'bankfusion_kept_max_age_seconds{{folder="{name}"}} {int(r.max_age.total_seconds())}'
            for name, (_, r) in kept.items()
        ),
    ]
    return lines
