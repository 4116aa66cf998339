"""Request counts and latency histograms by route, how full the kept sealed files are, and the
latest monitoring verdict, for GET /metrics (Prometheus text)."""

from __future__ import annotations

import bisect
import re
import threading
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from fusion.retention import FolderUsage, Retention

__all__ = ["LATENCY_BUCKETS", "RequestMetrics", "kept_lines", "memory_lines", "monitoring_lines"]

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


def memory_lines(
    resident_bytes: int, store: Sequence[tuple[str, int]], audit_records: int
) -> list[str]:
    """Return the Prometheus lines of the service's memory: the process's resident set, what
    DuckDB accounts for by tag (`duckdb_memory()`, tags holding none left out), and how many
    audit records this process wrote to its request trail (a counter)."""
    return [
        "# HELP bankfusion_resident_bytes Resident memory of the service's process.",
        "# TYPE bankfusion_resident_bytes gauge",
        f"bankfusion_resident_bytes {resident_bytes}",
        "# HELP bankfusion_store_memory_bytes Memory DuckDB accounts for in this process, by tag.",
        "# TYPE bankfusion_store_memory_bytes gauge",
        *(f'bankfusion_store_memory_bytes{{tag="{tag}"}} {n}' for tag, n in store),
        "# HELP bankfusion_audit_records_total Audit records written to the request trail.",
        "# TYPE bankfusion_audit_records_total counter",
        f"bankfusion_audit_records_total {audit_records}",
    ]


_VERDICTS = {"ok": 0, "warn": 1, "alert": 2}
_UNSAFE = re.compile(r"[^A-Za-z0-9 _:.\-]")


def _value(value: Any) -> str:
    """Return a gauge's value: the number, or NaN for a missing one."""
    return "NaN" if value is None else f"{float(value):.6g}"


def monitoring_lines(summary: Mapping[str, Any] | None) -> list[str]:
    """Return the gauges of the latest monitoring summary (`fusion.pipeline.monitoring`).

    None (nothing monitored yet) gives no line: an absent series, not a zero that reads as
    "stable".
    """
    if not summary:
        return []
    snapshot = _UNSAFE.sub("_", str(summary.get("snapshot_date", "")))
    computed = datetime.fromisoformat(str(summary["computed_at"])).timestamp()
    models = summary.get("models", {})
    vendor = summary.get("vendor", [])
    return [
        "# HELP bankfusion_monitoring_status Latest monitoring verdict: 0 ok, 1 warn, 2 alert.",
        "# TYPE bankfusion_monitoring_status gauge",
        f'bankfusion_monitoring_status{{snapshot="{snapshot}"}} '
        f"{_VERDICTS.get(str(summary.get('status')), 2)}",
        "# HELP bankfusion_monitoring_alerts Checks of the latest monitoring run that alert.",
        "# TYPE bankfusion_monitoring_alerts gauge",
        f"bankfusion_monitoring_alerts {int(summary.get('alerts', 0))}",
        "# HELP bankfusion_monitoring_warnings Checks of the latest monitoring run that warn.",
        "# TYPE bankfusion_monitoring_warnings gauge",
        f"bankfusion_monitoring_warnings {int(summary.get('warnings', 0))}",
        "# HELP bankfusion_monitoring_timestamp_seconds When the latest monitoring ran.",
        "# TYPE bankfusion_monitoring_timestamp_seconds gauge",
        f"bankfusion_monitoring_timestamp_seconds {computed:.0f}",
        "# HELP bankfusion_model_score_psi PSI of each model's scores, training against now.",
        "# TYPE bankfusion_model_score_psi gauge",
        *(
            f'bankfusion_model_score_psi{{model="{_UNSAFE.sub("_", name)}"}} '
            f"{_value(m.get('score_psi'))}"
            for name, m in models.items()
        ),
        "# HELP bankfusion_model_max_csi The largest CSI of each model's input columns.",
        "# TYPE bankfusion_model_max_csi gauge",
        *(
            f'bankfusion_model_max_csi{{model="{_UNSAFE.sub("_", name)}"}} '
            f"{_value(m.get('max_csi'))}"
            for name, m in models.items()
        ),
        "# HELP bankfusion_vendor_drift_status Each vendor figure's verdict: 0 ok, 1 warn, 2 "
        "alert.",
        "# TYPE bankfusion_vendor_drift_status gauge",
        *(
            f'bankfusion_vendor_drift_status{{metric="{_UNSAFE.sub("_", str(d["metric"]))}"}} '
            f"{_VERDICTS.get(str(d.get('status')), 2)}"
            for d in vendor
        ),
    ]
