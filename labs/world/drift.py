"""A later snapshot of a world: a new sample of the same customers, or a drifted one.

Both are whole worlds (the same files as `generate_world` writes) dated `days` after the
original's snapshot, drawn from the original's files with a seed derived from its seed and the
kind, so the same world and kind give the same bytes:

    stable    a random `STABLE_KEEP` of the original's bank customers (the rest have left), the
              vendor's users as they were: the same population sampled again, so monitoring
              should find nothing beyond sampling noise
    drifted   the bank's customers thinned by persona (`DRIFT_KEEP`: seniors, investors and
              parents mostly gone, so the base is younger and more digital), and every app of
              one category (`REMOVED_CATEGORY`) gone from the vendor's users' lists: monitoring
              should alert on the columns that follow age and that category, on the scores
              that read them and on the category's penetration

Both keep the original's bank rather than drawing a world from another seed: a seed fixes the
bank itself (branch sizes and their city tiers are drawn per seed), so another seed's world is
another bank, not a later month of this one. Truth files keep only the remaining customers'
rows (and every vendor-only row); `world.json` records what was derived from what.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from datetime import date, timedelta
from enum import StrEnum
from pathlib import Path

import numpy as np
import polars as pl

from contracts.taxonomy import load_taxonomy
from labs.world.config import WorldConfig
from labs.world.errors import WorldError
from labs.world.files import WorldFiles, file_sha256, write_parquet
from labs.world.personas import PERSONAS

__all__ = ["DRIFT_KEEP", "REMOVED_CATEGORY", "STABLE_KEEP", "Later", "later_world"]

# Share of each main persona's customers the drifted snapshot keeps (others: all of them).
DRIFT_KEEP: dict[str, float] = {
    "senior": 0.1,
    "investor": 0.2,
    "parent": 0.35,
    "traveller": 0.5,
    "professional": 0.6,
}
STABLE_KEEP = 0.9  # share of the bank's customers still there in the stable snapshot
REMOVED_CATEGORY = "banking"  # the category whose apps the drifted vendor no longer reports
_SEED_OFFSET = {"stable": 1_000_003, "drifted": 2_000_003}


class Later(StrEnum):
    """Which later snapshot to draw."""

    STABLE = "stable"
    DRIFTED = "drifted"


def _config(world: WorldFiles) -> WorldConfig:
    """Return the config the world at `world` was generated from (its world.json)."""
    try:
        document = json.loads(world.manifest.read_text(encoding="utf-8"))["config"]
    except (OSError, ValueError, KeyError) as error:
        raise WorldError(
            f"no world.json with a config under {world.root} ({type(error).__name__}); "
            f"generate the world first with `fusion world --out {world.root}`"
        ) from None
    document = dict(document)
    document["snapshot_date"] = date.fromisoformat(document["snapshot_date"])
    return WorldConfig(**document)


def later_world(
    world: Path, out: Path, *, kind: Later, days: int = 31, category: str = REMOVED_CATEGORY
) -> WorldFiles:
    """Return the files of the later snapshot of `world` written under `out` (emptied first)."""
    source = WorldFiles(Path(world))
    config = _config(source)
    if days < 1:
        raise WorldError(f"days must be >= 1 (a later snapshot), got {days}")
    later = replace(config, snapshot_date=config.snapshot_date + timedelta(days=days))
    target = WorldFiles(Path(out))
    if target.root.exists():
        shutil.rmtree(target.root)
    shutil.copytree(source.root, target.root)
    seed = config.seed + _SEED_OFFSET[kind.value]
    if kind is Later.STABLE:
        kept = _thin_by_persona(target, seed, {p: STABLE_KEEP for p in PERSONAS})
        drift = None
    else:
        kept = _thin_by_persona(target, seed, DRIFT_KEEP)
        _drop_category(target, config.taxonomy_version, category)
        drift = {"keep": DRIFT_KEEP, "removed_category": category}
    _record(target, source, later, kind, {"customers": kept, "drift": drift})
    return target


def _thin_by_persona(files: WorldFiles, seed: int, keep_share: dict[str, float]) -> int:
    """Keep each bank customer with its main persona's share (1 when not named); return how
    many remain."""
    personas = (
        pl.read_parquet(files.personas, columns=["customer_id", "persona"])
        .filter(pl.col("customer_id").is_not_null())
        .sort("customer_id")
    )
    keep = personas["persona"].replace_strict(keep_share, default=1.0, return_dtype=pl.Float64)
    draw = np.random.default_rng(seed).random(personas.height)
    chosen = personas.filter(pl.Series(draw < keep.to_numpy()))["customer_id"]
    for name in WorldFiles.PARQUET:
        path = files.root / name
        if name == WorldFiles.VENDOR_USERS or not path.exists():
            continue
        frame = pl.read_parquet(path)
        if "customer_id" not in frame.columns:
            continue
        frame = frame.filter(
            pl.col("customer_id").is_null() | pl.col("customer_id").is_in(chosen.implode())
        )
        write_parquet(frame.to_arrow(), path)
    return chosen.len()


def _drop_category(files: WorldFiles, taxonomy_version: str, category: str) -> None:
    """Cut every app of `category` from the vendor users' app lists (days and sessions too)."""
    taxonomy = load_taxonomy(taxonomy_version)
    codes = taxonomy.categories.filter(pl.col("code") == category)["category_id"]
    if codes.is_empty():
        known = ", ".join(taxonomy.categories["code"].to_list())
        raise WorldError(f"no app category {category!r} in the taxonomy; one of: {known}")
    gone = taxonomy.apps.filter(pl.col("category_id").is_in(codes.implode()))["app_id"]
    users = pl.read_parquet(files.vendor_users).with_row_index("row")
    lists = ("app_ids", "app_days", "app_sessions")
    kept = (
        users.select("row", *lists)
        .explode(*lists)
        .filter(pl.col("app_ids").is_null() | ~pl.col("app_ids").is_in(gone.implode()))
        .group_by("row", maintain_order=True)
        .agg(pl.col(c).drop_nulls() for c in lists)
    )
    schema = users.schema
    out = (
        users.drop(*lists)
        .join(kept, on="row", how="left", maintain_order="left")
        .with_columns(pl.col(c).fill_null(pl.lit([], dtype=schema[c])) for c in lists)
        .select(pl.all().exclude("row"))
        .select(pl.read_parquet_schema(files.vendor_users).keys())
    )
    write_parquet(out.to_arrow(), files.vendor_users)


def _record(
    target: WorldFiles, source: WorldFiles, later: WorldConfig, kind: Later, what: dict[str, object]
) -> None:
    """Note in world.json the later date, what the snapshot was derived from and its files'
    new digests."""
    document = json.loads(target.manifest.read_text(encoding="utf-8"))
    document["config"] = later.to_dict()
    digests = {
        name: file_sha256(target.root / name)
        for name in WorldFiles.PARQUET
        if (target.root / name).exists()
    }
    document["summary"]["digests"] = digests
    document["later"] = {"of": str(source.root), "kind": kind.value, **what}
    target.manifest.write_text(json.dumps(document, indent=2) + "\n")
