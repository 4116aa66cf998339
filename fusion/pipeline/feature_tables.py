"""The fused feature tables of a matched snapshot: build them (here or by bucket), find them.

A run keeps one table per snapshot under `<run>/features/<date>/`; a cluster build leaves its
customer buckets beside it, under `buckets/`, for bucketed scoring. A table the CURRENT models
are to score is built `like` the table they were trained on (`scoring_manifest`: its columns,
category codes and top apps), as `fusion features` and the cycle build it. A build is refused before
anything is written when the snapshot was not matched under the salt epoch asked for (a rotated
salt, a mistyped epoch): it would replace the table with one in which nobody matched.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from contracts.errors import ConfigError
from fusion.features import FeatureManifest, FeatureSet, build_features
from fusion.jobs import Engine, FeatureBuckets, build_feature_buckets
from fusion.match import keyed_epochs
from fusion.pipeline.bank import Bank, open_bank
from fusion.registry import Registry
from fusion.runfolder import RunFolder
from fusion.store import Store
from matcher.keyring import Keyring

__all__ = [
    "BuiltFeatures",
    "build_snapshot_features",
    "build_snapshot_features_by_bucket",
    "features_dir",
    "read_features",
    "scoring_manifest",
]

# The model whose training table a scoring table follows: every model of a training run is
# trained on the same table (`fusion.training.train_all`).
_ALIGNED_TO = "acquisition"


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


def _matched_on_disk(path: Path) -> int:
    """Return how many customers have vendor data in the table at `path` (0: none, unreadable)."""
    try:
        return int(json.loads((path / "manifest.json").read_text())["matched"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0


def _check_matched(
    store: Store, path: Path, *, snapshot_date: date, epoch_id: str, replace: bool
) -> None:
    """Raise ConfigError unless the snapshot was matched under `epoch_id` and its build would not
    replace a table with vendor data by one without (unless `replace`)."""
    epochs = keyed_epochs(store, snapshot_date)
    if epoch_id not in epochs:
        where = (
            f"it was matched under salt epoch {', '.join(epochs)} (--epoch {epochs[-1]})"
            if epochs
            else "it was never matched"
        )
        raise ConfigError(
            f"no match run for snapshot {snapshot_date} under salt epoch {epoch_id}, so nobody "
            f"would have vendor data; nothing was written: {where}, or run `fusion match "
            f"--extract EXTRACT --snapshot {snapshot_date}` first",
            setting="epoch",
        )
    row = store.execute(
        "SELECT count(*) FROM matches WHERE snapshot_date = ? AND salt_epoch = ?",
        [snapshot_date, epoch_id],
    ).fetchone()
    before = _matched_on_disk(path)
    if not replace and (row is None or row[0] == 0) and before:
        raise ConfigError(
            f"the match of snapshot {snapshot_date} under salt epoch {epoch_id} found nobody, "
            f"but the feature table in {path} has {before:,} customers with vendor data; "
            "nothing was written: match again (`fusion match`), or pass --replace to replace "
            "the table with one in which nobody matched",
            setting="epoch",
        )


def scoring_manifest(folder: RunFolder, snapshot_date: date) -> FeatureManifest | None:
    """Return the manifest a table of `snapshot_date` must be built like for the CURRENT models
    to score it: that of the table the CURRENT acquisition model was trained on.

    None when no model is trained, when the models were trained on this very snapshot (its own
    columns are theirs), or when the training table is gone (the table is then the snapshot's
    own, and scoring names the columns it lacks). A later snapshot built on its own would pick
    its own top apps and number its categories afresh: columns the models never saw.
    """
    registry = Registry(folder.models)
    if registry.current(_ALIGNED_TO) is None:
        return None
    trained_on = registry.describe(_ALIGNED_TO)["metadata"].get("snapshot_date")
    try:
        day = date.fromisoformat(str(trained_on))
    except ValueError:
        return None
    if day == snapshot_date:
        return None
    path = _snapshot_dir(folder, day) / "manifest.json"
    try:
        return FeatureManifest.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def build_snapshot_features(
    bank: Bank,
    *,
    snapshot_date: date,
    epoch: str | None = None,
    replace: bool = False,
    like: FeatureManifest | None = None,
) -> BuiltFeatures:
    """Return the snapshot's features built in this process and written to the run folder.

    `epoch` is the salt epoch of the match (default: the keyring's current one); `like` a
    training manifest whose columns, codes and top apps the table takes (`scoring_manifest`;
    None: the snapshot's own). Refused (ConfigError, nothing written) when the snapshot was not
    matched under the epoch, or, unless `replace`, when its match found nobody but the table on
    disk has vendor data.
    """
    epoch_id = epoch or bank.keyring.current_salt().epoch_id
    path = _snapshot_dir(bank.folder, snapshot_date)
    _check_matched(
        bank.store, path, snapshot_date=snapshot_date, epoch_id=epoch_id, replace=replace
    )
    built = build_features(bank.store, snapshot_date=snapshot_date, salt_epoch=epoch_id, like=like)
    built.write(path)
    return BuiltFeatures(built, path)


def build_snapshot_features_by_bucket(
    engine: Engine,
    folder: RunFolder,
    keyring: Keyring,
    *,
    snapshot_date: date,
    epoch: str | None = None,
    replace: bool = False,
    like: FeatureManifest | None = None,
) -> BuiltFeatures:
    """Return the snapshot's features built by customer bucket on `engine`, assembled, written.

    Each task opens the store read-only, so no writer may hold it meanwhile; the buckets stay
    under `buckets/` beside the table; `like` as for `build_snapshot_features`. Refused before
    any task runs as `build_snapshot_features` refuses.
    """
    epoch_id = epoch or keyring.current_salt().epoch_id
    path = _snapshot_dir(folder, snapshot_date)
    with open_bank(folder, keyring=keyring, read_only=True) as bank:
        _check_matched(
            bank.store, path, snapshot_date=snapshot_date, epoch_id=epoch_id, replace=replace
        )
    buckets = build_feature_buckets(
        engine,
        folder.store,
        keyring.store_key(),
        snapshot_date=snapshot_date,
        salt_epoch=epoch_id,
        out=path / "buckets",
        like=like,
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
