"""Monitor one snapshot: score and feature stability of every monitored model, vendor drift,
realised performance; the report written, the latest result kept for /metrics.

`monitor_snapshot` computes (`fusion.monitoring`, `fusion.monitoring_checks`), `write_monitoring`
writes `<run>/reports/monitoring-<date>/` (HTML with PNG plots, Parquet, JSON) and
`<run>/reports/monitoring-latest.json`, which the service's /metrics reads (`latest_monitoring`);
`read_monitoring` reads the latest result back whole (the summary, the report's folder and its
Parquet tables) for the console, so no page computes a figure again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import polars as pl

from contracts.errors import ConfigError, ModelError
from fusion.features import FeatureSet
from fusion.monitoring import (
    MONITORED,
    ModelProfile,
    MonitorSettings,
    Stability,
    Status,
    model_stability,
    read_profile,
    scored_population,
)
from fusion.monitoring_checks import MonitoringResult, realised_performance, vendor_drift
from fusion.pipeline.bank import Bank
from fusion.pipeline.feature_tables import features_dir, read_features
from fusion.registry import Registry
from fusion.runfolder import RunFolder
from matcher.atomic import write_atomic

__all__ = [
    "LATEST_FILE",
    "MonitoringReport",
    "latest_monitoring",
    "monitor_snapshot",
    "monitoring_dir",
    "read_monitoring",
    "write_monitoring",
]

LATEST_FILE = "monitoring-latest.json"
_TABLES = ("stability", "vendor", "realised")  # the report's Parquet tables read back


def _training_features(folder: RunFolder, registry: Registry, name: str) -> FeatureSet | None:
    """Return the feature table the CURRENT version of `name` was trained on, if still there."""
    snapshot = registry.describe(name)["metadata"].get("snapshot_date")
    try:
        return read_features(folder, date.fromisoformat(str(snapshot))) if snapshot else None
    except ConfigError:
        return None


def _profile(folder: RunFolder, registry: Registry, name: str) -> ModelProfile:
    """Return the model's training profile; computed from its training table when it has none."""
    try:
        return read_profile(registry, name)
    except ModelError:
        training = _training_features(folder, registry, name)
        if training is None:
            raise
        return read_profile(registry, name, training_features=training)


def monitor_snapshot(
    bank: Bank,
    *,
    snapshot_date: date,
    now: datetime,
    settings: MonitorSettings | None = None,
) -> MonitoringResult:
    """Return every monitoring check of the snapshot's scoring against the training profiles.

    The scores are the CURRENT models' on the snapshot's feature table (`scored_population`):
    what its scoring run writes, so the check does not depend on which snapshot the run folder's
    score files were last written for.
    """
    settings = settings or MonitorSettings()
    folder = bank.folder
    features_dir(folder, snapshot_date)  # refused first, with what to run, when it was not built
    features = read_features(folder, snapshot_date)
    registry = Registry(folder.models)
    stability: list[Stability] = []
    profiles: dict[str, ModelProfile] = {}
    for name in MONITORED:
        if registry.current(name) is None:
            continue
        profile = profiles[name] = _profile(folder, registry, name)
        rows, scores = scored_population(registry, registry.load(name), features)
        stability += model_stability(
            profile,
            pl.Series("score", scores),
            features.table[rows],
            codes=features.manifest.codes,
            settings=settings,
        )
    if not profiles:
        raise ConfigError(
            f"no model to monitor under {folder.models}; run `fusion train` first",
            setting="models",
        )
    drift = vendor_drift(
        bank.store,
        snapshot_date=snapshot_date,
        salt_epoch=features.manifest.salt_epoch,
        settings=settings,
    )
    realised = realised_performance(bank.store, profiles, settings=settings)
    return MonitoringResult(
        snapshot_date=snapshot_date,
        computed_at=now.astimezone(UTC),
        settings=settings,
        models={name: p.version for name, p in profiles.items()},
        stability=tuple(stability),
        vendor=tuple(drift),
        realised=tuple(realised),
    )


def monitoring_dir(folder: RunFolder, snapshot_date: date) -> Path:
    """Return the folder of the snapshot's monitoring report."""
    return folder.reports / f"monitoring-{snapshot_date.isoformat()}"


def write_monitoring(folder: RunFolder, result: MonitoringResult) -> Path:
    """Return the report page written for `result`; the summary also becomes the latest."""
    # matplotlib loads with the report only: the service imports this module for /metrics.
    from fusion.reports.monitoring import write_monitoring_report

    page = write_monitoring_report(result, monitoring_dir(folder, result.snapshot_date))
    latest = folder.reports / LATEST_FILE
    current = latest_monitoring(folder)
    # The newest snapshot's result is the latest; re-monitoring an older one does not replace it.
    if current is None or str(current.get("snapshot_date", "")) <= result.snapshot_date.isoformat():
        write_atomic(latest, json.dumps(result.summary(), indent=1, default=str) + "\n")
    return page


def latest_monitoring(folder: RunFolder) -> dict[str, Any] | None:
    """Return the latest monitoring summary of the run, or None before the first."""
    try:
        document = json.loads((folder.reports / LATEST_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return document if isinstance(document, dict) else None


@dataclass(frozen=True)
class MonitoringReport:
    """The latest monitoring result as `write_monitoring` stored it.

    `summary` is `MonitoringResult.summary()`; `folder` the report's folder (its page and
    plots); the frames are its stability, vendor and realised Parquet tables, one row per check
    with its verdict in `status` (`fusion.reports.monitoring`).
    """

    summary: dict[str, Any]
    folder: Path
    stability: pl.DataFrame
    vendor: pl.DataFrame
    realised: pl.DataFrame

    @property
    def snapshot_date(self) -> date:
        return date.fromisoformat(str(self.summary["snapshot_date"]))

    @property
    def status(self) -> Status:
        return Status(str(self.summary["status"]))

    @property
    def plots(self) -> list[str]:
        """Return the file names of the report's plots."""
        return sorted(p.name for p in self.folder.glob("*.png") if p.is_file())


def read_monitoring(folder: RunFolder) -> MonitoringReport | None:
    """Return the latest monitoring result of the run, or None before the first.

    None too when the latest summary's report folder, or one of its tables, is gone (a report
    deleted by hand): the next `fusion monitor` writes them again.
    """
    summary = latest_monitoring(folder)
    if summary is None:
        return None
    try:
        report = monitoring_dir(folder, date.fromisoformat(str(summary.get("snapshot_date"))))
    except ValueError:
        return None
    paths = {name: report / f"{name}.parquet" for name in _TABLES}
    if not all(p.is_file() for p in paths.values()):
        return None
    tables = {name: pl.read_parquet(path) for name, path in paths.items()}
    return MonitoringReport(summary=summary, folder=report, **tables)
