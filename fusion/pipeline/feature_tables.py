"""The fused feature tables of a matched snapshot: build them (here or by bucket), find them.

A run keeps one table per snapshot under `<run>/features/<date>/`; a cluster build leaves its
customer buckets beside it, under `buckets/`, for bucketed scoring.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path

from contracts.errors import ConfigError
from fusion.features import FeatureSet, build_features
from fusion.jobs import Engine, FeatureBuckets, build_feature_buckets
from fusion.pipeline.bank import Bank
from fusion.runfolder import RunFolder
from matcher.keyring import Keyring

__all__ = [
    "BuiltFeatures",
    "build_snapshot_features",
    "build_snapshot_features_by_bucket",
    "features_dir",
    "read_features",
]


@dataclass(frozen=True)
class BuiltFeatures:
    """A snapshot's feature set and the folder it was written to."""

    features: FeatureSet
    path: Path  # <run>/features/<date>
    buckets: FeatureBuckets | None = None  # a cluster build's customer buckets (under buckets/)

    @property
    def buckets_dir(self) -> Path:
        """Return the folder a cluster build writes its customer buckets to."""
        return self.path / "buckets"


def _snapshot_dir(folder: RunFolder, snapshot_date: date) -> Path:
    return folder.features / snapshot_date.isoformat()


def build_snapshot_features(
    bank: Bank, *, snapshot_date: date, epoch: str | None = None
) -> BuiltFeatures:
    """Return the snapshot's features built in this process and written to the run folder.

    `epoch` is the salt epoch of the match (default: the keyring's current one).
    """
    epoch_id = epoch or bank.keyring.current_salt().epoch_id
    built = build_features(bank.store, snapshot_date=snapshot_date, salt_epoch=epoch_id)
    path = _snapshot_dir(bank.folder, snapshot_date)
    built.write(path)
    return BuiltFeatures(built, path)


def build_snapshot_features_by_bucket(
    engine: Engine,
    folder: RunFolder,
    keyring: Keyring,
    *,
    snapshot_date: date,
    epoch: str | None = None,
) -> BuiltFeatures:
    """Return the snapshot's features built by customer bucket on `engine`, assembled, written.

    Each task opens the store read-only, so no writer may hold it meanwhile; the buckets stay
    under `buckets/` beside the table.
    """
    epoch_id = epoch or keyring.current_salt().epoch_id
    path = _snapshot_dir(folder, snapshot_date)
    buckets = build_feature_buckets(
        engine,
        folder.store,
        keyring.store_key(),
        snapshot_date=snapshot_date,
        salt_epoch=epoch_id,
        out=path / "buckets",
    )
    built = buckets.assemble()
    built.write(path)
    return BuiltFeatures(built, path, buckets)


def features_dir(folder: RunFolder, snapshot: date | None = None) -> Path:
    """Return the feature folder of `snapshot`, or the newest one of the run."""
    if snapshot:
        chosen = _snapshot_dir(folder, snapshot)
    else:
        built = sorted(p for p in folder.features.glob("*") if (p / "manifest.json").exists())
        if not built:
            raise ConfigError(
                f"no feature table under {folder.features}; run `fusion features` first",
                setting="snapshot",
            )
        chosen = built[-1]
    if not (chosen / "manifest.json").exists():
        raise ConfigError(
            f"no feature table in {chosen}; run `fusion features`", setting="snapshot"
        )
    return chosen


def read_features(folder: RunFolder, snapshot: date | None = None) -> FeatureSet:
    """Return the feature set of `snapshot` (default: the run's newest)."""
    return FeatureSet.read(features_dir(folder, snapshot))
