"""GET /healthz (anyone) and GET /metrics (admin, Prometheus text format 0.0.4)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import PlainTextResponse

from api.deps import ServiceDep, require
from api.service import LATENCY_BUCKETS
from fusion.tokens import Principal

__all__ = ["router"]

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz(service: ServiceDep) -> dict[str, str | int]:
    """Report that the service is up, which run folder it serves and its ingest queue."""
    return {"status": "ok", "run": service.folder.root.name, "pending_uploads": service.pending()}


@router.get("/metrics", response_class=PlainTextResponse)
def metrics(
    service: ServiceDep, _: Annotated[Principal, Depends(require("admin"))]
) -> PlainTextResponse:
    """Return request counts, latency histograms and ingest state as Prometheus text."""
    lines = [
        "# HELP bankfusion_requests_total HTTP requests by method, route and status.",
        "# TYPE bankfusion_requests_total counter",
    ]
    counts, latency = service.metrics_snapshot()
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
        f"bankfusion_pending_uploads {service.pending()}",
        "# HELP bankfusion_batches Batches in the ledger by status.",
        "# TYPE bankfusion_batches gauge",
    ]
    for status, n in (
        service.cursor()
        .execute("SELECT status, count(*) FROM batches GROUP BY status ORDER BY status")
        .fetchall()
    ):
        lines.append(f'bankfusion_batches{{status="{status}"}} {n}')
    return PlainTextResponse("\n".join(lines) + "\n", media_type="text/plain; version=0.0.4")
