"""A small run folder with every model trained and profiled, and later snapshots to monitor.

`trained_run` builds a run as `fusion demo` does (world, keys, vendor batch, ingest, match,
features, training with the FAST settings, the training profiles, scores and lists);
`add_later_snapshot` draws a later world (`labs.world.drift`: stable or drifted) and seals its
vendor batch into the inbox, where the next cycle (`fusion.pipeline.cycle`) picks it up.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

import polars as pl

from fusion.monitoring import write_training_profiles
from fusion.pipeline.bank import ingest_batches, open_bank
from fusion.pipeline.feature_tables import build_snapshot_features, read_features
from fusion.pipeline.matching import match_salted
from fusion.pipeline.modelling import score_and_list
from fusion.registry import Registry
from fusion.runfolder import RunFolder
from fusion.training import train_all
from labs.world import WorldConfig, WorldFiles, generate_world
from labs.world.drift import Later, later_world
from matcher.keyring import Keyring, init_local_pair
from matcher.pack import pack_users
from tests.support.models import FAST, TRAINED_AT

__all__ = ["SNAPSHOT", "add_later_snapshot", "pack_world", "trained_run"]

SNAPSHOT = WorldConfig().snapshot_date


def _clock(day: date) -> datetime:
    return datetime.combine(day + timedelta(days=1), time(9), UTC)


def pack_world(folder: RunFolder, world: WorldFiles, snapshot: date, name: str) -> Path:
    """Seal the world's vendor users, dated `snapshot`, into the run's inbox; return the file."""
    sealed = folder.inbox.ensure().inbox / f"{name}.sealed"
    pack_users(
        world.vendor_users,
        sealed,
        keyring=Keyring.open(folder.vendor_keys),
        now=datetime.combine(snapshot, time(6), UTC),
    )
    return sealed


def _bank_snapshot(folder: RunFolder, world: WorldFiles, snapshot: date) -> None:
    """Ingest what waits, match the world's extract for `snapshot` and build its features."""
    with open_bank(folder) as bank:
        ingest_batches(bank, clock=lambda: _clock(snapshot))
        extract = pl.read_parquet(world.customers)
        match_salted(bank, extract, snapshot_date=snapshot, now=_clock(snapshot))
        build_snapshot_features(bank, snapshot_date=snapshot)


def trained_run(root: Path, *, customers: int = 3_000, seed: int = 5) -> RunFolder:
    """Return a run folder with a world, its first snapshot, every model and its lists."""
    folder = RunFolder(root).ensure()
    world = WorldFiles(folder.world)
    generate_world(WorldConfig(customers=customers, seed=seed), world.root)
    init_local_pair(folder.bank_keys, folder.vendor_keys, vendor_id="vendor-a")
    pack_world(folder, world, SNAPSHOT, "vendor-a-0001")
    _bank_snapshot(folder, world, SNAPSHOT)
    features = read_features(folder, SNAPSHOT)
    registry = Registry(folder.models)
    train_all(
        features,
        campaign=pl.read_parquet(world.campaign),
        registry=registry,
        now=TRAINED_AT,
        config=FAST,
    )
    write_training_profiles(registry, features)
    score_and_list(folder, features)
    return folder


def add_later_snapshot(folder: RunFolder, kind: Later) -> tuple[date, WorldFiles]:
    """Draw a later world of `kind` beside the run's and seal its vendor batch into the inbox;
    return its snapshot date and files (its extract is `files.customers`)."""
    world = later_world(folder.world, folder.root / f"world-{kind.value}", kind=kind)
    config = json.loads(world.manifest.read_text(encoding="utf-8"))["config"]
    snapshot = date.fromisoformat(config["snapshot_date"])
    pack_world(folder, world, snapshot, f"vendor-a-{kind.value}")
    return snapshot, world
