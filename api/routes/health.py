"""GET /healthz (anyone) and GET /metrics (admin, Prometheus text format 0.0.4).

Health says only that the service is up, as a load balancer needs; which run folder it serves
and how many uploads wait are for admins, on /metrics.
"""

from __future__ import annotations

from typing import Annotated

import psutil
from fastapi import APIRouter, Depends, Request
from fastapi.responses import PlainTextResponse

from api.deps import ServiceDep, require
from api.metrics import LATENCY_BUCKETS, kept_lines, memory_lines, monitoring_lines
from fusion.pipeline.monitoring import latest_monitoring
from fusion.tokens import Principal

__all__ = ["router"]

router = APIRouter(tags=["health"])


@router.get("/healthz", name="healthz")
def _healthz() -> dict[str, str]:
    """Report that the service is up."""
    return {"status": "ok"}


@router.get("/metrics", response_class=PlainTextResponse, name="metrics")
def _metrics(
    request: Request, service: ServiceDep, _: Annotated[Principal, Depends(require("admin"))]
) -> PlainTextResponse:
    """Return the run folder served, request counts, latency, ingest and audit state, memory."""
    lines = [
        "# HELP bankfusion_info The run folder this service serves, and its version.",
        "# TYPE bankfusion_info gauge",
        f'bankfusion_info{{run="{_label(service.folder.root.name)}",'
        f'version="{_label(request.app.version)}"}} 1',
        "# HELP bankfusion_requests_total HTTP requests by method, route and status.",
        "# TYPE bankfusion_requests_total counter",
    ]
    counts, latency = service.metrics.snapshot()
    for (method, route, status), n in counts:
        lines.append(
            f'bankfusion_requests_total{{method="{method}",route="{route}",status="{status}"}} {n}'
        )
    lines += [
        "# HELP bankfusion_request_seconds Request latency by route.",
        "# TYPE bankfusion_request_seconds histogram",
    ]
    for route, (buckets, total) in sorted(latency.items()):
        running = 0
        for bound, count in zip((*LATENCY_BUCKETS, "+Inf"), buckets, strict=True):
            running += count
            lines.append(
                f'bankfusion_request_seconds_bucket{{route="{route}",le="{bound}"}} {running}'
            )
        lines.append(f'bankfusion_request_seconds_sum{{route="{route}"}} {total:.6f}')
        lines.append(f'bankfusion_request_seconds_count{{route="{route}"}} {running}')
    lines += [
        "# HELP bankfusion_pending_uploads Sealed batches waiting for the ingest worker.",
        "# TYPE bankfusion_pending_uploads gauge",
        f"bankfusion_pending_uploads {service.uploads.pending()}",
        *kept_lines(service.uploads.inbox.usage()),
        "# HELP bankfusion_audit_queue_depth Audit records waiting to be written.",
        "# TYPE bankfusion_audit_queue_depth gauge",
        f"bankfusion_audit_queue_depth {service.audit.depth()}",
        "# HELP bankfusion_audit_write_failures_total Failed audit writes (each retried).",
        "# TYPE bankfusion_audit_write_failures_total counter",
        f"bankfusion_audit_write_failures_total {service.audit.failures}",
        "# HELP bankfusion_audit_dropped_total Records of requests refused with 503 for want "
        "of audit room, dropped.",
        "# TYPE bankfusion_audit_dropped_total counter",
        f"bankfusion_audit_dropped_total {service.audit.dropped}",
        "# HELP bankfusion_batches Batches in the ledger by status.",
        "# TYPE bankfusion_batches gauge",
    ]
    cur = service.cursor()
    for status, n in cur.execute(
        "SELECT status, count(*) FROM batches GROUP BY status ORDER BY status"
    ).fetchall():
        lines.append(f'bankfusion_batches{{status="{status}"}} {n}')
    store_memory = cur.execute(
        "SELECT tag, memory_usage_bytes FROM duckdb_memory() WHERE memory_usage_bytes > 0 "
        "ORDER BY tag"
    ).fetchall()
    lines += memory_lines(psutil.Process().memory_info().rss, store_memory, service.audit.written)
    lines += monitoring_lines(latest_monitoring(service.folder))  # the newest `fusion monitor`
    return PlainTextResponse("\n".join(lines) + "\n", media_type="text/plain; version=0.0.4")


def _label(value: str) -> str:
    """Return `value` escaped as a Prometheus label value."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
