"""The vendor's side of the world: its users, their phones and their app and tag lists.

The vendor holds the covered bank customers and as many fresh people again as its size asks,
in a random order. A user's apps and tags come from rankings of the whole taxonomy made per
profile (main persona, second persona and a random variant, half of them "fintech" variants):
a narrow core from the top of the ranking and a wide Zipf-like tail (`Windows`). The lists are
built from flat arrays and offsets in chunks that a writer thread turns into Parquet row groups
while the next chunk is generated, so compute and compression overlap.
"""

from __future__ import annotations

import math
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from contracts.taxonomy import CATEGORIES, Taxonomy
from fusion.progress import Progress
from labs.world.config import WorldConfig
from labs.world.files import PARQUET_OPTIONS
from labs.world.personas import (
    AGE,
    DIGITAL_SHIFT,
    N_PERSONAS,
    PERSONAS,
    SECOND_WEIGHT,
    People,
    draw_personas,
    fintech_trait,
    mix,
)
from labs.world.phones import VENDOR_PLUS86_SHARE, BankPhones, vendor_phones

__all__ = ["Profiles", "Vendor", "build_profiles", "vendor_population", "write_vendor_users"]

F64 = np.ndarray[Any, np.dtype[np.float64]]
Array = np.ndarray[Any, Any]

# Apps a user is active on in the last 30 days (median by persona) and tags per app.
_APPS_MEDIAN = np.array([21, 16, 15, 13.5, 14, 16, 17.5, 7, 19, 16], dtype=np.float64)
_TAGS_PER_APP = 2.2

# Category affinity: a base everybody shares, multiplied by persona boosts.
_CATEGORY_BASE = {
    "games": 1.2, "tools": 2.5, "ecommerce": 2.0, "education": 0.5, "social": 4.0,
    "short_video": 2.5, "finance": 0.8, "local_life": 1.0, "health": 0.5, "news": 1.2,
    "office": 0.6, "photo": 1.0, "travel": 0.5, "maps_mobility": 1.5, "reading": 0.6,
    "music": 1.0, "live_streaming": 0.5, "mother_baby": 0.2, "auto": 0.3, "sport": 0.4,
    "beauty": 0.5, "jobs": 0.3, "property": 0.2, "food_delivery": 0.8, "lottery": 0.15,
    "banking": 0.8,
}  # fmt: skip
_CATEGORY_BOOST: dict[str, dict[str, float]] = {
    "gamer": {"games": 10, "live_streaming": 4, "music": 1.5, "short_video": 1.5, "social": 1.2},
    "food_delivery": {"food_delivery": 10, "local_life": 3, "short_video": 1.3, "ecommerce": 1.2},
    "traveller": {"travel": 12, "maps_mobility": 3, "photo": 2, "local_life": 1.5},
    "investor": {"finance": 12, "news": 3, "banking": 4, "property": 2, "auto": 1.5},
    "parent": {"mother_baby": 12, "education": 4, "health": 2, "ecommerce": 1.5},
    "commuter": {"maps_mobility": 9, "music": 2, "reading": 3, "news": 1.5, "office": 1.5},
    "shopper": {"ecommerce": 7, "beauty": 6, "live_streaming": 2, "photo": 1.5},
    "senior": {"news": 4, "health": 6, "short_video": 2, "lottery": 3, "games": 0.3,
               "ecommerce": 0.5, "office": 0.2, "jobs": 0.2},
    "student": {"education": 8, "games": 2, "music": 2, "reading": 2, "jobs": 2.5,
                "short_video": 1.5},
    "professional": {"office": 9, "jobs": 2, "news": 1.5, "finance": 1.5, "auto": 3,
                     "sport": 2},
}  # fmt: skip
# Tag facets (the last part of a tag name) a persona leans to.
_FACET_BOOST: dict[str, dict[str, float]] = {
    "gamer": {"night owl": 4, "heavy user": 3, "male skew": 2},
    "food_delivery": {"coupon user": 4, "night owl": 2, "price sensitive": 2},
    "traveller": {"holiday": 4, "premium": 2, "seasonal": 2},
    "investor": {"premium": 3, "high spender": 3, "vip member": 2},
    "parent": {"family": 5, "weekend user": 2},
    "commuter": {"commuter": 5, "morning user": 3},
    "shopper": {"coupon user": 3, "installment user": 3, "female skew": 2, "high spender": 2},
    "senior": {"senior": 6, "morning user": 2, "low spender": 2},
    "student": {"student": 6, "budget": 3, "night owl": 2},
    "professional": {"young professional": 5, "multi device": 2, "tier 1 city": 2},
}
# Sessions per active day by category (chat and feeds are opened all day, travel apps rarely).
_SESSIONS_PER_DAY = {
    "social": 14.0, "short_video": 8.0, "games": 5.0, "live_streaming": 4.0, "news": 3.0,
    "music": 3.0, "reading": 3.0, "ecommerce": 2.5, "maps_mobility": 2.0, "office": 4.0,
}  # fmt: skip
_APP_ZIPF = 1.5  # exponent of app popularity by rank within a category
_CORE_SHARE = 0.5  # of a user's apps and tags taken from the top of their profile's ranking
_PROFILE_VARIANTS = 16  # random rankings per persona pair: users of a pair do not all look alike
# The fintech trait (`labs.world.personas`): half of the variants of every pair are "fintech"
# variants, with these categories boosted.
_FINTECH_BOOST = {"finance": 3.0, "banking": 5.0}
_CHUNK_USERS = 65_536  # vendor users per generated chunk / Parquet row group
# Presence at the vendor (log-weight): seniors use fewer apps, young personas more.
_PRESENCE = np.array([0.3, 0.2, 0.1, 0.0, 0.0, 0.1, 0.2, -0.9, 0.3, 0.1])


@dataclass(frozen=True)
class Vendor:
    """The vendor's users in file order, and how bank customers map onto them."""

    n: int
    persona: Array  # int8 main persona per vendor row
    second: Array  # int8 second persona, equal to `persona` when there is none
    fintech: Array  # bool
    customer: Array  # int64 bank row of the person, -1 for vendor-only users
    phone: Array  # int64 11-digit number
    plus86: Array  # bool: the vendor wrote it with +86
    profile: Array  # int32 row of the profile ranking tables
    apps: _Windows
    tags: _Windows
    engagement: Array  # float32: scales active days
    vendor_row: Array  # int64 per bank customer: the row holding the person, -1 if absent
    matched: Array  # bool per bank customer: at the vendor under the phone the bank gives
    # The ID number and device id columns per row (`labs.world.identifiers`), when drawn.
    id_number: pl.Series | None = None
    device_id: pl.Series | None = None


@dataclass(frozen=True)
class _Windows:
    """Per user: how many items to take from which windows of the profile's ranking.

    Two windows sit back to back on the ranking: a narrow core at the top (0..core width) and a
    wide tail after it. A user takes `count` distinct items from each at positions
    (start + j * stride) mod width, j < count. Widths are powers of two >= count and strides are
    odd, so positions are distinct by construction (no per-user dedup, no sort). The core keeps
    the top of the ranking common to most users of a profile; the tail, with widths spread over
    powers of two, gives the long Zipf-like rest.
    Arrays are (users, 2): column 0 is the core, column 1 the tail.
    """

    count: Array  # int64
    base: Array  # uint32: the window's first ranking position
    width: Array  # uint32 power of two
    start: Array  # uint32
    stride: Array  # uint32, odd


def _pow2(x: F64) -> F64:
    """Return the smallest power of two >= x (and >= 1)."""
    return 2.0 ** np.ceil(np.log2(np.maximum(x, 1.0)))


def _windows(count: Array, limit: int, rng: np.random.Generator) -> _Windows:
    """Return core and tail windows for users taking `count` items from a ranking of `limit`."""
    n = len(count)
    core = np.ceil(count * _CORE_SHARE)
    core_width = _pow2(core * np.exp(rng.uniform(0.0, math.log(1.4), n)))
    tail_width = _pow2((count - core) * np.exp(rng.uniform(math.log(1.5), math.log(8.0), n)))
    tail_width = np.minimum(tail_width, 2.0 ** np.floor(np.log2(limit - core_width)))
    width = np.stack([core_width, tail_width], axis=1)
    counts = np.minimum(np.stack([core, count - core], axis=1), width)
    return _Windows(
        count=counts.astype(np.int64),
        base=np.stack([np.zeros(n), core_width], axis=1).astype(np.uint32),
        width=width.astype(np.uint32),
        start=rng.integers(0, 2**20, (n, 2), dtype=np.uint32),
        stride=(2 * rng.integers(0, 2**19, (n, 2), dtype=np.uint32) + 1).astype(np.uint32),
    )


def _covered(
    coverage: float, people: People, phones: BankPhones, rng: np.random.Generator
) -> Array:
    """Return the sorted bank rows of the customers the vendor holds: `coverage` of valid phones."""
    valid = phones.valid
    # A customer giving someone else's number is never the vendor's person for that number.
    candidates = valid & ~phones.copy
    k = min(round(coverage * int(valid.sum())), int(candidates.sum()))
    # Gumbel top-k: a weighted sample without replacement of exactly k people, so coverage is
    # exact while seniors are rarer at the vendor than gamers.
    score = people.mixed(_PRESENCE) + rng.gumbel(size=people.n)
    score = np.where(candidates, score, -np.inf)
    return np.sort(np.argpartition(-score, k - 1)[:k]) if k else np.empty(0, dtype=np.int64)


def vendor_population(
    config: WorldConfig,
    people: People,
    col: dict[str, Any],
    phones: BankPhones,
    presence_rng: np.random.Generator,
    rng: np.random.Generator,
) -> Vendor:
    """Return the vendor's users: the covered bank customers plus fresh people, shuffled."""
    n = people.n
    n_vendor = round(config.vendor_ratio * n)
    present = _covered(config.coverage, people, phones, presence_rng)
    k = len(present)
    m = n_vendor - k
    persona_only, second_only, weight_only = draw_personas(m, rng)
    age_only = np.clip(rng.normal(AGE[persona_only, 0], AGE[persona_only, 1]), 18, 90)
    raw_digital = rng.standard_normal(m)
    fintech_only = fintech_trait(raw_digital, rng)
    shift = mix(DIGITAL_SHIFT, persona_only, second_only, weight_only)
    digital_only = raw_digital - 0.035 * (age_only - 40.0) + shift
    order = rng.permutation(n_vendor)  # vendor row r holds person order[r]
    persona = np.concatenate([people.persona[present], persona_only])[order]
    second = np.concatenate([people.second[present], second_only])[order]
    weight = np.concatenate([people.second_weight[present], weight_only])[order]
    digital = np.concatenate([col["_digital"][present], digital_only])[order]
    fintech = np.concatenate([people.fintech[present], fintech_only])[order]
    customer = np.concatenate([present, np.full(m, -1, dtype=np.int64)])[order]
    phone = np.concatenate([phones.true[present], phones.fresh[:m]])[order]

    mixed_median = mix(_APPS_MEDIAN, persona, second, weight)
    n_apps = np.clip(
        np.rint(mixed_median * np.exp(0.3 * digital + 0.35 * rng.standard_normal(n_vendor))), 2, 150
    )
    n_tags = np.clip(
        np.rint(n_apps * _TAGS_PER_APP * np.exp(0.35 * rng.standard_normal(n_vendor))), 3, 400
    )
    half = _PROFILE_VARIANTS // 2
    variant = fintech * half + rng.integers(0, half, n_vendor)
    profile = (
        (persona.astype(np.int64) * N_PERSONAS + second) * _PROFILE_VARIANTS + variant
    ).astype(np.int32)
    vendor_row = np.full(n, -1, dtype=np.int64)
    rows_of_present = np.empty(n_vendor, dtype=np.int64)
    rows_of_present[order] = np.arange(n_vendor)
    vendor_row[present] = rows_of_present[:k]
    matched = np.zeros(n, dtype=bool)
    matched[present] = True
    matched &= ~phones.shared
    return Vendor(
        n=n_vendor,
        persona=persona,
        second=second,
        fintech=fintech,
        customer=customer,
        phone=phone,
        plus86=rng.random(n_vendor) < VENDOR_PLUS86_SHARE,
        profile=profile,
        apps=_windows(n_apps.astype(np.int64), 1300, rng),
        tags=_windows(n_tags.astype(np.int64), 10_400, rng),
        engagement=np.clip(
            np.exp(0.25 * digital + 0.3 * rng.standard_normal(n_vendor)), 0.3, 2.0
        ).astype(np.float32),
        vendor_row=vendor_row,
        matched=matched,
    )


@dataclass(frozen=True)
class Profiles:
    """Rankings of all apps and all tags for every (persona, second persona, variant) profile."""

    apps: Array  # int32 (profiles * n_apps): app ids, most affine first
    tags: Array  # int32 (profiles * n_tags)
    n_apps: int
    n_tags: int
    sessions_per_day: Array  # float32 by app id


def _affinity(
    names: tuple[str, ...], base: dict[str, float], boosts: dict[str, dict[str, float]]
) -> F64:
    """Return a (persona pair, item) table: the main persona's weights mixed with the second's."""
    table = np.array([[base.get(x, 1.0) * boosts[p].get(x, 1.0) for x in names] for p in PERSONAS])
    table /= table.sum(axis=1, keepdims=True)
    main = np.repeat(np.arange(N_PERSONAS), N_PERSONAS)
    second = np.tile(np.arange(N_PERSONAS), N_PERSONAS)
    weight = np.where(main == second, 0.0, SECOND_WEIGHT)[:, None]
    return (1.0 - weight) * table[main] + weight * table[second]


def _ranked(weights: F64, ids: Array, rng: np.random.Generator) -> Array:
    """Return, per pair and variant, item ids in a weighted random order (Efraimidis-Spirakis).

    Sorting Exp(1) / w ascending is sampling every item without replacement with probability
    proportional to w (Efraimidis & Spirakis 2006, "Weighted random sampling with a reservoir").
    """
    pairs, variants, n_items = weights.shape
    keys = rng.standard_exponential((pairs, variants, n_items), dtype=np.float32)
    keys /= weights.astype(np.float32)
    # Non-negative float32 keys order like their bit patterns; the item index in the low half
    # makes every key unique, so any sort algorithm gives the same order (float32 ties happen
    # a few times per row and an unstable argsort could break them differently elsewhere).
    packed = keys.view(np.uint32).astype(np.uint64) << np.uint64(32)
    packed |= np.arange(n_items, dtype=np.uint64)
    packed.sort(axis=2)
    order = (packed & np.uint64(0xFFFFFFFF)).astype(np.int64)
    return ids[order].astype(np.int32).ravel()


def build_profiles(taxonomy: Taxonomy, rng: np.random.Generator) -> Profiles:
    """Return the app and tag rankings of every profile."""
    codes = tuple(c.code for c in CATEGORIES)
    fintech = np.array([_FINTECH_BOOST.get(code, 1.0) for code in codes])
    variant_boost = np.where(
        np.arange(_PROFILE_VARIANTS)[:, None] >= _PROFILE_VARIANTS // 2, fintech, 1.0
    )
    # (pairs, variants, 26): the fintech variants lean to payment, wealth and banking apps.
    category = _affinity(codes, _CATEGORY_BASE, _CATEGORY_BOOST)[:, None, :] * variant_boost
    apps = taxonomy.apps.sort("app_id")
    app_cat = apps["category_id"].to_numpy().astype(np.int64) - 1
    # Zipf by popularity rank, normalised within the category so big categories get no bonus.
    zipf = 1.0 / apps["popularity_rank"].to_numpy() ** _APP_ZIPF
    zipf /= np.bincount(app_cat, weights=zipf)[app_cat]
    app_rank = _ranked(category[:, :, app_cat] * zipf, apps["app_id"].to_numpy(), rng)

    tags = taxonomy.tags.sort("tag_id")
    tag_cat = tags["category_id"].to_numpy().astype(np.int64) - 1
    facets = tags["name"].str.split(" > ").list.get(2)
    facet_names = tuple(facets.unique(maintain_order=True).to_list())
    facet = facets.replace_strict(list(facet_names), list(range(len(facet_names)))).to_numpy()
    # Topics are listed most popular first in the taxonomy; facet popularity is drawn.
    first_tag = pl.col("tag_id").min().over("category_id", "topic")
    topic_rank = tags.select(first_tag.rank("dense").over("category_id"))["tag_id"].to_numpy()
    popularity = topic_rank**-0.7 * (1 + rng.permutation(len(facet_names)))[facet] ** -0.6
    popularity /= np.bincount(tag_cat, weights=popularity)[tag_cat]
    facet_affinity = _affinity(facet_names, {}, _FACET_BOOST)  # (pairs, facets)
    facet_affinity /= facet_affinity.mean(axis=1, keepdims=True)
    tag_weights = category[:, :, tag_cat] * (popularity * facet_affinity[:, facet])[:, None, :]
    tag_rank = _ranked(tag_weights, tags["tag_id"].to_numpy(), rng)

    rates = np.array([_SESSIONS_PER_DAY.get(code, 1.5) for code in codes], dtype=np.float32)
    sessions = np.zeros(int(apps["app_id"].max()) + 1, dtype=np.float32)  # type: ignore[arg-type]
    sessions[apps["app_id"].to_numpy()] = rates[app_cat]
    return Profiles(app_rank, tag_rank, apps.height, tags.height, sessions)


def _draw(
    windows: _Windows, users: slice, table: Array, width: int, profile: Array
) -> tuple[Array, Array, Array]:
    """Return list offsets, item ids and each item's relative depth in its windows (0 = top)."""
    count = windows.count[users]
    offsets = np.zeros(len(count) + 1, dtype=np.int64)
    np.cumsum(count.sum(axis=1), out=offsets[1:])
    # Work per segment (a user's core, then their tail) in user order: lists come out in order.
    per_segment = count.ravel()
    starts = np.cumsum(per_segment) - per_segment

    def each(values: Array) -> Array:
        return np.repeat(values.ravel(), per_segment)

    j = np.arange(offsets[-1], dtype=np.uint32) - each(starts.astype(np.uint32))
    # uint32 products wrap, which keeps the low bits (all the mask needs) exact.
    local = (each(windows.start[users]) + j * each(windows.stride[users])) & each(
        windows.width[users] - np.uint32(1)
    )
    base = windows.base[users]
    rows = profile[users].astype(np.int64)[:, None] * width + base
    items = table[each(rows) + local]
    span = 1.0 / (windows.width[users].sum(axis=1, dtype=np.float32))
    depth = (each(base.astype(np.float32)) + local) * each(np.repeat(span, 2))
    return offsets, items, depth.astype(np.float32)


def _lists(offsets: Array, values: Array) -> pa.LargeListArray:
    return pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(values))


_VENDOR_SCHEMA = pa.schema(
    [
        ("phone", pa.large_string()),
        ("app_ids", pa.large_list(pa.int32())),
        ("app_days", pa.large_list(pa.int16())),
        ("app_sessions", pa.large_list(pa.int32())),
        ("tag_ids", pa.large_list(pa.int32())),
        ("tag_weights", pa.large_list(pa.float32())),
    ]
)
_IDENTIFIER_FIELDS = [("id_number", pa.large_string()), ("device_id", pa.large_string())]


def _schema(vendor: Vendor) -> pa.Schema:
    """Return the users file's schema: the second identifiers last, when the world has them."""
    if vendor.id_number is None or vendor.device_id is None:
        return _VENDOR_SCHEMA
    return pa.schema([*_VENDOR_SCHEMA, *_IDENTIFIER_FIELDS])


def _vendor_chunk(
    vendor: Vendor, profiles: Profiles, users: slice, rng: np.random.Generator
) -> pa.Table:
    """Return one chunk of the vendor file: phones and the app and tag lists of `users`."""
    app_off, app_ids, app_depth = _draw(
        vendor.apps, users, profiles.apps, profiles.n_apps, vendor.profile
    )
    engagement = np.repeat(vendor.engagement[users], np.diff(app_off))
    # Apps near the top of the ranking are used on more days; engaged users use everything more.
    activity = np.minimum(
        (1.0 - app_depth) ** 1.5 * engagement * rng.random(len(app_ids), dtype=np.float32) ** 0.5,
        1.0,
    )
    days = (1.0 + np.floor(29.0 * activity)).astype(np.int16)
    noise = np.float32(0.4) + np.float32(1.2) * rng.random(len(app_ids), dtype=np.float32)
    sessions = np.rint(days * profiles.sessions_per_day[app_ids] * noise).astype(np.int32)

    tag_off, tag_ids, tag_depth = _draw(
        vendor.tags, users, profiles.tags, profiles.n_tags, vendor.profile
    )
    # Weights in (0, 1] at 0.001 steps, as the vendor publishes them; higher near the top.
    strength = (1.0 - tag_depth) ** 1.2 * (
        np.float32(0.3) + np.float32(0.7) * rng.random(len(tag_ids), dtype=np.float32)
    )
    weights = (np.maximum(np.ceil(strength * 1000.0), 1.0) / np.float32(1000.0)).astype(np.float32)

    phone = vendor_phones(vendor.phone[users], vendor.plus86[users])
    identifiers = [
        column[users].to_arrow().cast(pa.large_string())
        for column in (vendor.id_number, vendor.device_id)
        if column is not None
    ]
    return pa.table(
        [
            phone.to_arrow().cast(pa.large_string()),
            _lists(app_off, app_ids),
            _lists(app_off, days),
            _lists(app_off, sessions),
            _lists(tag_off, tag_ids),
            _lists(tag_off, weights),
            *identifiers,
        ],
        schema=_schema(vendor),
    )


def write_vendor_users(
    vendor: Vendor,
    profiles: Profiles,
    seeds: np.random.SeedSequence,
    path: Path,
    writer: ThreadPoolExecutor,
    report: Progress,
) -> None:
    """Write the vendor file, one row group per chunk of users.

    The writer thread compresses chunk i while this thread generates chunk i+1; at most two
    chunks wait, which bounds memory whatever the world's size.
    """
    chunks = [slice(s, min(s + _CHUNK_USERS, vendor.n)) for s in range(0, vendor.n, _CHUNK_USERS)]
    parquet = pq.ParquetWriter(path, _schema(vendor), **PARQUET_OPTIONS)
    waiting: deque[Future[None]] = deque()
    try:
        for i, (users, seed) in enumerate(zip(chunks, seeds.spawn(len(chunks)), strict=True)):
            table = _vendor_chunk(
                vendor, profiles, users, np.random.Generator(np.random.PCG64(seed))
            )
            waiting.append(writer.submit(parquet.write_table, table, row_group_size=_CHUNK_USERS))
            while len(waiting) > 2:
                waiting.popleft().result()
            report("vendor users", (i + 1) / (len(chunks) + 1))
        while waiting:
            waiting.popleft().result()
    finally:
        wait(waiting)  # on an error, let queued writes finish before the file is closed
        parquet.close()
