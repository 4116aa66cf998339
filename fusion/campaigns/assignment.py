"""Assignment: who enters a campaign's stage, and the arm, both keyed by the campaign's salt.

Entry order. A campaign's customers enter its stages in the order of
HMAC-SHA256(salt, "entry|" customer_id): the pilot takes the first ranks, the A/B test the next,
full launch the rest. The hash depends on the customer alone, so a customer's rank relative to
any other never changes when more candidates arrive; a new customer slots in between.

Arms: systematic sampling over the strata. A campaign's rows are put in the order (branch,
decile, HMAC-SHA256(salt, "arm|" customer_id)), so every stratum (stratum = "<branch_id>|d<decile
or na>") and every branch is one contiguous run, and row i (0-based) is control when
floor((i + 1) c + u) - floor(i c + u) = 1, with u in [0, 1) drawn from HMAC(salt, "offset|").
Any run of n rows then holds floor(c n) or ceil(c n) control rows: every stratum, every branch
and the whole campaign get the declared share to within one customer, a stratum of one is
control with probability c (a per-stratum floor would make every small stratum control), and
the expected control count is exactly c x n, which the sample-ratio check tests. Reproducible
from the salt alone and independent of row order.

Shares are counted in millionths (treated_units(c) = round((1 - c) x 1_000_000)), so the
arithmetic is exact integers; a run of n rows treats at most ceil(treated_units x n / 10^6),
the bound arbitration keeps within each channel's capacity.

The salt is the HMAC key given as its hex text (the native HMAC takes a text key), 32 bytes.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor

import polars as pl

from contracts.errors import ConfigError
from matcher.keyed_hash import SALT_BYTES, hmac_digest, hmac_sha256

__all__ = [
    "ARMS",
    "SHARE_SCALE",
    "assign_arms",
    "entry_order",
    "take_entrants",
    "treated_count",
    "treated_units",
]

ARMS = ("treatment", "control")
SHARE_SCALE = 1_000_000
"""Shares are counted in millionths, so that the sampling steps and capacity bounds are exact."""

_KEYS = ("campaign_id", "customer_id")
_ARM_HASH = "__assign_arm_hash"
_RANK = "__assign_rank"
_ROW = "__assign_row"
_OFFSET = "__assign_offset"


def treated_units(control_share: float) -> int:
    """Return the treated share (1 - control_share) in millionths, e.g. 0.05 -> 950_000."""
    if not 0 <= control_share <= 1 or math.isnan(control_share):
        raise ConfigError(
            f"a control share must be in [0, 1], got {control_share}; take it from the stage "
            "(control_share, or stages.full_control_share at full launch)",
            setting="control_share",
        )
    return round((1 - control_share) * SHARE_SCALE)


def treated_count(n: int, control_share: float) -> int:
    """Return floor((1 - control_share) x n), exactly: the fewest treated rows any run of n rows
    of one campaign holds (the most is one more)."""
    return treated_units(control_share) * n // SHARE_SCALE


def entry_order(candidates: pl.DataFrame, salts: Mapping[str, bytes]) -> pl.DataFrame:
    """Return the candidates (row order kept) with `entry`, 32 bytes: lower enters first.

    entry = HMAC-SHA256(salt of the campaign, "entry|" customer_id). Raises ConfigError when a
    campaign has no salt or a salt is not 32 bytes.
    """
    return candidates.with_columns(_keyed(candidates, salts, "entry|").alias("entry"))


def take_entrants(
    candidates: pl.DataFrame, salts: Mapping[str, bytes], quotas: Mapping[str, int | None]
) -> pl.DataFrame:
    """Return per campaign the `quota` candidates earliest in entry order (None = all of them).

    Rows keep their input order and columns. Raises ConfigError when a campaign has no quota
    entry (write None for all), a quota is negative, or a salt is missing or not 32 bytes.
    """
    campaigns = candidates.get_column("campaign_id").unique().to_list()
    missing = sorted(str(c) for c in campaigns if c not in quotas)
    if missing:
        raise ConfigError(
            f"no quota for {len(missing)} campaign(s) ({', '.join(missing[:5])}); give each "
            "campaign its stage's number of entrants, or None for all",
            setting="quotas",
        )
    negative = sorted(c for c, q in quotas.items() if q is not None and q < 0)
    if negative:
        raise ConfigError(
            f"quotas must be >= 0 or None, got a negative quota for {', '.join(negative[:5])}",
            setting="quotas",
        )
    limited = {c: q for c, q in quotas.items() if q is not None and c in campaigns}
    keep = pl.repeat(True, candidates.height, eager=True)
    for campaign, (index, hashes) in _keyed_parts(candidates, salts, "entry|", limited).items():
        # Rows past the quota in entry order leave; the order of equal hashes (one customer
        # twice) does not matter, as either copy is the same customer.
        late = index.gather(hashes.arg_sort().slice(limited[campaign] or 0))
        keep = keep.scatter(late, False)
    return candidates.filter(keep)


def assign_arms(
    frame: pl.DataFrame, salts: Mapping[str, bytes], control_shares: Mapping[str, float]
) -> pl.DataFrame:
    """Return the frame (row order kept) with `stratum` and `arm` ("treatment" | "control").

    Raises ConfigError when a campaign has no salt or control share, a (campaign_id,
    customer_id) pair repeats, or a needed column is missing.
    """
    needed = ("campaign_id", "customer_id", "branch_id", "decile")
    absent = [column for column in needed if column not in frame.columns]
    if absent:
        raise ConfigError(
            f"assign_arms needs the column(s) {', '.join(absent)}; pass the arbitrated frame",
            setting="frame",
        )
    campaigns = frame.get_column("campaign_id").unique().to_list()
    missing = sorted(str(c) for c in campaigns if c not in control_shares)
    if missing:
        raise ConfigError(
            f"no control share for {len(missing)} campaign(s) ({', '.join(missing[:5])}); pass "
            "the control share of the stage being planned for each",
            setting="control_shares",
        )
    if frame.select(pl.struct("campaign_id", "customer_id").is_duplicated().any()).item():
        raise ConfigError(
            "the frame repeats a (campaign_id, customer_id) pair; assign the frame arbitration "
            "returns (one row per campaign and customer)",
            setting="frame",
        )
    units = pl.DataFrame(
        {
            "campaign_id": campaigns,
            "__assign_control": [SHARE_SCALE - treated_units(control_shares[c]) for c in campaigns],
        },
        schema={"campaign_id": frame.schema["campaign_id"], "__assign_control": pl.Int64},
    )
    decile = pl.col("decile").cast(pl.String).fill_null("na")
    stratum = pl.concat_str(
        pl.col("branch_id").cast(pl.String).fill_null("na"), pl.lit("|d"), decile
    ).alias("stratum")
    offsets = _offsets(salts, campaigns, frame.schema["campaign_id"])
    order = ["campaign_id", "branch_id", "decile", _ARM_HASH]
    ranked = (
        frame.with_columns(stratum, _keyed(frame, salts, "arm|").alias(_ARM_HASH))
        .with_row_index(_ROW)
        .sort(order, nulls_last=True)
        .join(units, on="campaign_id", how="left", maintain_order="left")
        .join(offsets, on="campaign_id", how="left", maintain_order="left")
        .with_columns(pl.int_range(pl.len(), dtype=pl.Int64).over("campaign_id").alias(_RANK))
    )
    step = pl.col("__assign_control")
    before = (pl.col(_RANK) * step + pl.col(_OFFSET)) // SHARE_SCALE
    after = ((pl.col(_RANK) + 1) * step + pl.col(_OFFSET)) // SHARE_SCALE
    arm = pl.when(after > before).then(pl.lit("control")).otherwise(pl.lit("treatment"))
    return ranked.with_columns(arm.alias("arm")).sort(_ROW).select(*frame.columns, "stratum", "arm")


def _offsets(salts: Mapping[str, bytes], campaigns: list[str], dtype: pl.DataType) -> pl.DataFrame:
    """Return campaign_id, the campaign's systematic-sampling offset u in [0, 10^6)."""
    offsets = [
        int.from_bytes(hmac_digest(salts[c], b"offset|"), "big") % SHARE_SCALE for c in campaigns
    ]
    return pl.DataFrame(
        {"campaign_id": campaigns, _OFFSET: offsets},
        schema={"campaign_id": dtype, _OFFSET: pl.Int64},
    )


def _keyed_parts(
    frame: pl.DataFrame, salts: Mapping[str, bytes], label: str, campaigns: Iterable[str]
) -> dict[str, tuple[pl.Series, pl.Series]]:
    """Return per campaign its rows' indices and HMAC-SHA256(salt, label customer_id) (Binary).

    The campaigns' HMACs run side by side: one campaign's rows are often too few for the native
    HMAC to split them over the cores itself.
    """
    wanted = list(campaigns)
    for campaign in wanted:
        salt = salts.get(campaign)
        if salt is None or len(salt) != SALT_BYTES:
            got = "no salt" if salt is None else f"{len(salt)} bytes"
            raise ConfigError(
                f"campaign {campaign} needs a {SALT_BYTES}-byte salt, got {got}; use the salt the "
                "campaign book created with the campaign",
                setting="salts",
            )
    rows = (
        frame.select(pl.int_range(pl.len(), dtype=pl.UInt32).alias("index"), *_KEYS)
        .filter(pl.col("campaign_id").is_in(wanted))
        .select(
            "index",
            "campaign_id",
            pl.concat_str(pl.lit(label), pl.col("customer_id").cast(pl.String)).alias("message"),
        )
    )
    parts = {
        str(campaign): part
        for (campaign,), part in rows.partition_by("campaign_id", as_dict=True).items()
    }

    def hashed(campaign: str) -> tuple[pl.Series, pl.Series]:
        part = parts[campaign]
        return part["index"], hmac_sha256(part["message"], salts[campaign].hex())

    with ThreadPoolExecutor(max_workers=max(1, min(len(parts), os.cpu_count() or 1))) as pool:
        return dict(zip(parts, pool.map(hashed, parts), strict=True))


def _keyed(frame: pl.DataFrame, salts: Mapping[str, bytes], label: str) -> pl.Series:
    """Return HMAC-SHA256(salt of the row's campaign, label customer_id) per row (Binary 32)."""
    campaigns = frame.get_column("campaign_id").unique().to_list()
    out = pl.repeat(None, frame.height, dtype=pl.Binary, eager=True)
    for index, hashes in _keyed_parts(frame, salts, label, campaigns).values():
        out = out.scatter(index, hashes)
    return out
