"""Deliveries: the treatment arm's customers, per channel and branch, in versioned files.

`deliver` writes every treated customer of the campaign not delivered before as version n + 1:

    <deliveries>/<campaign>/v<n>/<channel>/<branch>.csv and .parquet

with the columns campaign_id, version, stage, channel, branch_id, customer_id, contact_day, rank
(the order to contact them in: best expected value first). Control customers are never in a file;
nor is any match key, vendor row or score. The store records each file's SHA-256 (`deliveries`)
and each touch (`contacts`, which the frequency cap and cooling-off read).

Order of writes, so a kill at any point leaves the store as before and a rerun the same files:
the version's folder is written whole under a temporary name and renamed into place, then the
store's rows are committed in one transaction. A folder without its rows (killed between the
two) is written again, byte for byte the same. Rows without their folder (the folder deleted)
are written again from the store. Nothing new to deliver returns the latest version unchanged.
"""

from __future__ import annotations

import hashlib
import re
import shutil
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import polars as pl

from contracts.errors import CampaignError
from fusion.campaigns.book import get_campaign
from fusion.store import Store
from matcher.atomic import atomic_path

__all__ = ["DELIVERY_COLUMNS", "Delivery", "deliver", "delivery_rows", "latest_delivery"]

DELIVERY_COLUMNS = (
    "campaign_id", "version", "stage", "channel", "branch_id", "customer_id", "contact_day", "rank",
)  # fmt: skip
_BRANCH = re.compile(r"[A-Za-z0-9_-]{1,64}")


@dataclass(frozen=True)
class Delivery:
    """One delivery version: its files by branch and their digests."""

    campaign_id: str
    version: int
    stage: str
    channel: str
    rows: int
    files: dict[str, dict[str, Path]]  # branch -> {"csv": path, "parquet": path}
    sha256: dict[str, str]  # branch -> digest of the Parquet file
    new: bool  # False: nothing new to deliver, this is the latest version as it was

    def to_dict(self) -> dict[str, Any]:
        """Return the delivery as JSON-ready data (paths as text)."""
        return {
            "campaign_id": self.campaign_id,
            "version": self.version,
            "stage": self.stage,
            "channel": self.channel,
            "rows": self.rows,
            "new": self.new,
            "branches": {
                b: {"csv": str(f["csv"]), "parquet": str(f["parquet"]), "sha256": self.sha256[b]}
                for b, f in sorted(self.files.items())
            },
        }


def deliver(store: Store, campaign_id: str, *, out_dir: Path, now: datetime) -> Delivery:
    """Return the campaign's next delivery version, written to files and recorded in the store.

    Raises CampaignError for a draft or closed campaign, or when nobody was ever planned.
    """
    record = get_campaign(store, campaign_id)
    if record.stage in ("draft", "closed"):
        raise CampaignError(
            f"campaign {campaign_id!r} is in stage {record.stage!r}: there is nothing to "
            "deliver" + (" (promote it to the whitelist and plan it first)"
                         if record.stage == "draft" else ""),
            campaign=campaign_id,
        )  # fmt: skip
    channel = record.campaign.channel.kind
    latest = latest_delivery(store, campaign_id, out_dir=out_dir)
    if latest is not None and not _files_match(latest):
        # Committed rows whose files are gone or changed: write them again from the store.
        _write_files(delivery_rows(store, campaign_id, latest.version), out_dir, campaign_id,
                     latest.version, channel)  # fmt: skip
    version = (latest.version if latest else 0) + 1
    rows = _pending(store, campaign_id, version, channel)
    if rows.is_empty():
        if latest is None:
            raise CampaignError(
                f"campaign {campaign_id!r} has no treated customer to deliver; plan its stage "
                "first (`fusion campaign plan`)",
                campaign=campaign_id,
            )
        return latest
    files, digests = _write_files(rows, out_dir, campaign_id, version, channel)
    stage = record.stage
    stamp = now.replace(tzinfo=None)
    counts = rows.group_by("branch_id").len()
    with store.transaction():
        for branch, n in counts.iter_rows():
            store.execute(
                "INSERT INTO deliveries VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [campaign_id, version, _plan_of(store, campaign_id, stage), stage, channel,
                 branch, n, digests[branch], stamp],
            )  # fmt: skip
        store.insert_frame(
            "contacts",
            rows.select(
                "customer_id",
                pl.col("campaign_id").alias("source"),
                "channel",
                pl.col("contact_day").alias("day"),
                pl.col("version").alias("delivery_version"),
            ),
        )
    return Delivery(campaign_id, version, stage, channel, rows.height, files, digests, True)


def _plan_of(store: Store, campaign_id: str, stage: str) -> str:
    row = store.execute(
        "SELECT max(plan_id) FROM assignments WHERE campaign_id = ? AND stage = ?",
        [campaign_id, stage],
    ).fetchone()
    return str(row[0]) if row and row[0] else ""


def _pending(store: Store, campaign_id: str, version: int, channel: str) -> pl.DataFrame:
    """Return the treated customers not yet delivered, as rows of delivery `version`."""
    frame = store.execute(
        "SELECT a.campaign_id, a.stage, a.branch_id, a.customer_id, a.contact_day, "
        "a.expected_value FROM assignments a WHERE a.campaign_id = ? AND a.arm = 'treatment' "
        "AND NOT EXISTS (SELECT 1 FROM contacts k WHERE k.source = a.campaign_id "
        "AND k.customer_id = a.customer_id AND k.delivery_version IS NOT NULL)",
        [campaign_id],
    ).pl()
    return _shape(frame, version, channel)


def delivery_rows(store: Store, campaign_id: str, version: int) -> pl.DataFrame:
    """Return the rows of a recorded delivery version, rebuilt from the store."""
    record = get_campaign(store, campaign_id)
    frame = store.execute(
        "SELECT a.campaign_id, a.stage, a.branch_id, a.customer_id, a.contact_day, "
        "a.expected_value FROM assignments a JOIN contacts k ON k.source = a.campaign_id "
        "AND k.customer_id = a.customer_id WHERE a.campaign_id = ? AND k.delivery_version = ?",
        [campaign_id, version],
    ).pl()
    return _shape(frame, version, record.campaign.channel.kind)


def _shape(frame: pl.DataFrame, version: int, channel: str) -> pl.DataFrame:
    """Return assignment rows as delivery rows, ranked within branch by expected value."""
    return (
        frame.sort(
            ["branch_id", "contact_day", "expected_value", "customer_id"],
            descending=[False, False, True, False],
            nulls_last=True,
        )
        .with_columns(
            pl.lit(version, dtype=pl.Int32).alias("version"),
            pl.lit(channel).alias("channel"),
            pl.int_range(1, pl.len() + 1, dtype=pl.Int32).over("branch_id").alias("rank"),
        )
        .select(DELIVERY_COLUMNS)
    )


def _write_files(
    rows: pl.DataFrame, out_dir: Path, campaign_id: str, version: int, channel: str
) -> tuple[dict[str, dict[str, Path]], dict[str, str]]:
    """Write the version's folder whole (temporary name, then renamed); return files, digests."""
    final = Path(out_dir) / campaign_id / f"v{version}"
    files: dict[str, dict[str, Path]] = {}
    digests: dict[str, str] = {}
    parts = rows.partition_by("branch_id", as_dict=True, maintain_order=True)
    for (branch,) in parts:
        if not isinstance(branch, str) or not _BRANCH.fullmatch(branch):
            raise CampaignError(f"branch id {branch!r} cannot name a delivery file")
    if final.exists():
        shutil.rmtree(final)  # a folder the store never recorded: written again below
    with atomic_path(final) as tmp:
        (tmp / channel).mkdir(parents=True)
        for (branch,), part in parts.items():
            name = str(branch)
            part.write_csv(tmp / channel / f"{name}.csv")
            part.write_parquet(tmp / channel / f"{name}.parquet", statistics=False)
            digests[name] = _sha256(tmp / channel / f"{name}.parquet")
            files[name] = {
                "csv": final / channel / f"{name}.csv",
                "parquet": final / channel / f"{name}.parquet",
            }
    return files, digests


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _files_match(delivery: Delivery) -> bool:
    """Return whether every file of the delivery is on disk with its recorded digest."""
    for branch, paths in delivery.files.items():
        parquet = paths["parquet"]
        if not parquet.is_file() or not paths["csv"].is_file():
            return False
        if _sha256(parquet) != delivery.sha256[branch]:
            return False
    return True


def latest_delivery(store: Store, campaign_id: str, *, out_dir: Path) -> Delivery | None:
    """Return the campaign's newest recorded delivery version, or None."""
    rows = store.execute(
        "SELECT version, stage, channel, branch_id, rows, sha256 FROM deliveries "
        "WHERE campaign_id = ? AND version = (SELECT max(version) FROM deliveries "
        "WHERE campaign_id = ?) ORDER BY branch_id",
        [campaign_id, campaign_id],
    ).fetchall()
    if not rows:
        return None
    version, stage, channel = int(rows[0][0]), str(rows[0][1]), str(rows[0][2])
    folder = Path(out_dir) / campaign_id / f"v{version}" / channel
    files = {str(r[3]): {"csv": folder / f"{r[3]}.csv", "parquet": folder / f"{r[3]}.parquet"}
             for r in rows}  # fmt: skip
    return Delivery(
        campaign_id, version, stage, channel, sum(int(r[4]) for r in rows), files,
        {str(r[3]): str(r[5]) for r in rows}, False,
    )  # fmt: skip
