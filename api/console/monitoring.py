"""The monitoring page: the latest `fusion monitor` result, as it was stored.

`fusion monitor` (`fusion.pipeline.monitoring.monitor_snapshot`, then `write_monitoring`) writes
the report folder `reports/monitoring-<date>/` and the latest summary; the
page reads them back through `read_monitoring` and computes nothing: the PSI of each model's
scores and the CSI of each input column with their bands (the thresholds the run was judged
by), the vendor's batch against the previous one, the realised performance of campaign
controls, and the report's own plots. "What moved" (here and on the home page) lists the
checks whose stored verdict is warn or alert, worded as `fusion monitor` words its findings.
Head office reads it (marketers, admins, head-office analysts), as the other reports: the
figures count every branch. The tables holding customer counts pass the disclosure module
(k-anonymous), and so do the findings made from them (a campaign control's successes); the
vendor figures are shares of the vendor's users, not counts of customers.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

import polars as pl
from fastapi import APIRouter, Depends, Request, status
from fastapi.responses import FileResponse, HTMLResponse

from api.console.access import MONITORING_READERS, ConsoleRefusal, Visitor, allow
from api.console.pages import disclosed, render
from api.deps import ServiceDep, audit
from fusion.monitoring import Status
from fusion.pipeline.monitoring import MonitoringReport, read_monitoring
from fusion.reports.disclosure import DEFAULT_K, DisclosurePolicy, Layout

__all__ = ["BANDS", "attention", "moved", "router"]

router = APIRouter(prefix="/console", include_in_schema=False)

# A stability index's reading by its verdict (Siddiqi 2006, as `fusion.monitoring` says).
BANDS = {
    Status.OK.value: "stable",
    Status.WARN.value: "a shift to look at",
    Status.ALERT.value: "a shift to act on",
}
_PLOT = re.compile(r"[A-Za-z0-9_-]{1,100}\.png")
_HeadOffice = Annotated[Visitor, Depends(allow(*MONITORING_READERS, head_office=True))]
_SCORED = Layout(counts=("customers",))
# Control customers and their successes; the failures are a difference a reader could take.
_REALISED = Layout(
    counts=("control", "observed"),
    complements=(("failures", "control", "observed"),),
    sums=(("control", ("observed", "failures")),),
    derived=(("expected", ("control",)), ("ratio", ("observed",)), ("p_value", ("observed",))),
)


def _share(metric: str, value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.3g}" if metric == "tags per user" else f"{value:.1%}"


def _realised(report: MonitoringReport) -> list[dict[str, Any]]:
    return disclosed(report.realised, _REALISED, policy=DisclosurePolicy.K_ANONYMOUS, k=DEFAULT_K)


def moved(report: MonitoringReport) -> list[dict[str, str]]:
    """Return each check whose stored verdict is alert or warn: {"status", "text"}, the alerts
    first, the largest index first among the stability checks."""
    found: list[tuple[int, dict[str, str]]] = []
    rank = {Status.ALERT.value: 0, Status.WARN.value: 1}
    stability = report.stability.filter(pl.col("status") != Status.OK.value).sort(
        "index", descending=True
    )
    for row in stability.iter_rows(named=True):
        what = "score PSI" if row["kind"] == "score" else f"CSI of {row['name']}"
        text = f"{row['model']} {what} = {row['index']:.3f}"
        found.append((rank[row["status"]], {"status": row["status"], "text": text}))
    for row in report.vendor.filter(pl.col("status") != Status.OK.value).iter_rows(named=True):
        text = (
            f"vendor {row['metric']}: {_share(row['metric'], row['before'])} -> "
            f"{_share(row['metric'], row['after'])} ({row['compared']})"
        )
        found.append((rank[row["status"]], {"status": row["status"], "text": text}))
    for row in _realised(report):
        if row["status"] == Status.OK.value:
            continue
        observed = "suppressed" if row["observed"] is None else f"{row['observed']:,}"
        expected = "suppressed" if row["expected"] is None else f"{row['expected']:.1f}"
        text = (
            f"campaign {row['campaign']} ({row['model']}) control successes {observed} against "
            f"{expected} expected from training"
        )
        found.append((rank[row["status"]], {"status": row["status"], "text": text}))
    return [item for _, item in sorted(found, key=lambda pair: pair[0])]


def attention(report: MonitoringReport | None) -> dict[str, Any] | None:
    """Return the home page's monitoring panel: the verdict, its counts and what moved (None
    before the first monitoring run)."""
    if report is None:
        return None
    return {
        "snapshot": report.snapshot_date.isoformat(),
        "status": report.status.value,
        "alerts": int(report.summary.get("alerts", 0)),
        "warnings": int(report.summary.get("warnings", 0)),
        "moved": moved(report),
    }


def _stability(report: MonitoringReport, kind: str) -> list[dict[str, Any]]:
    """Return the stability rows of `kind` (score or feature), the largest index first."""
    frame = report.stability.filter(pl.col("kind") == kind).sort(
        ["model", "index"], descending=[False, True]
    )
    rows = disclosed(frame, _SCORED, policy=DisclosurePolicy.K_ANONYMOUS, k=DEFAULT_K)
    return [row | {"band": BANDS.get(str(row["status"]), str(row["status"]))} for row in rows]


def _context(report: MonitoringReport) -> dict[str, Any]:
    settings = report.summary.get("settings", {})
    features = _stability(report, "feature")
    return {
        "summary": report.summary,
        "snapshot": report.snapshot_date.isoformat(),
        "folder": report.folder.name,
        "psi_warn": settings.get("psi_warn"),
        "psi_alert": settings.get("psi_alert"),
        "scores": _stability(report, "score"),
        "features": {
            model: [row for row in features if row["model"] == model]
            for model in dict.fromkeys(row["model"] for row in features)
        },
        "vendor": report.vendor.to_dicts(),
        "realised": _realised(report),
        "moved": moved(report),
        "plots": report.plots,
        "k": DEFAULT_K,
    }


@router.get("/monitoring", name="console_monitoring")
def _monitoring(request: Request, service: ServiceDep, visitor: _HeadOffice) -> HTMLResponse:
    """The latest monitoring result: stability by model and column, vendor drift, realised."""
    report = read_monitoring(service.folder)
    if report is None:
        return render(request, "monitoring.html", title="Monitoring", report=None)
    audit(request, rows=report.stability.height, detail=report.folder.name)
    return render(request, "monitoring.html", title="Monitoring", report=report,
                  **_context(report))  # fmt: skip


@router.get("/monitoring/plots/{name}", name="console_monitoring_plot")
def _plot(name: str, service: ServiceDep, visitor: _HeadOffice) -> FileResponse:
    """One plot of the latest monitoring report."""
    report = read_monitoring(service.folder)
    if report is None or not _PLOT.fullmatch(name) or name not in report.plots:
        raise ConsoleRefusal(
            status.HTTP_404_NOT_FOUND,
            "No such plot",
            "the latest monitoring report has no such plot; the monitoring page shows its plots",
        )
    return FileResponse(
        report.folder / name, media_type="image/png", headers={"Cache-Control": "no-store"}
    )
