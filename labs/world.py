"""The synthetic world: a bank extract, a data vendor's users and the ground truth that ties them.

Everything is a pure function of `WorldConfig`: the same seed gives byte-identical Parquet files.
Files under `out/`:

    bank/customers.parquet     the bank's extract: ~70 features, dirty phones, ID numbers, label
    bank/campaign.parquet      a past A/B campaign on unregistered customers (treatment, responded)
    vendor/users.parquet       the vendor's users: phone, app usage lists, interest tag lists
    truth/personas.parquet     latent personas of every person (bank customer and/or vendor row)
    truth/propensity.parquet   true P(open mobile banking), true response under control/treatment
    truth/intersection.parquet bank customers the vendor holds whose phone is valid and unique
    world.json                 config, summary and the sha256 of every Parquet file

The truth model. Every person has a latent persona (gamer, investor, senior...) and maybe a second
one. Personas drive app and tag usage at the vendor and shift some bank features mildly (investors
hold more assets, seniors are older), so they are visible in vendor data and barely in bank data.
A second latent trait, "fintech" (heavy use of payment, wealth and other banks' apps), shows only
in vendor data. For customers not yet on mobile banking,

    P(opened_mb) = sigmoid(b0 + bank terms + persona terms + fintech term)

where the bank terms are the real case's top variables (young age, U-key, wealth management,
tenure, time deposits, online banking) and the persona terms are large enough that a model with
vendor features beats an in-bank one, most of all where the in-bank model sees nothing. The past
campaign (a food-delivery coupon) has a true uplift, in probability points, that is strong for
food-delivery users and shoppers, small for most and slightly negative for seniors, on top of a
response without the offer that follows loyalty to the bank (assets, tenure, a relationship
manager, payroll): the "sure things" answer anyway, so chasing response is not chasing uplift.

Generation is vectorised throughout; the vendor lists (about 20 apps and 47 tags a user) are built
from flat arrays and offsets in chunks that a writer thread turns into Parquet row groups while the
next chunk is generated, so the two cores overlap compute and compression.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import math
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from contracts.errors import ConfigError, WorldError
from contracts.taxonomy import CATEGORIES, CURRENT_VERSION, Taxonomy, load_taxonomy
from matcher.identity import id_check_characters

__all__ = [
    "FEATURE_COLUMNS",
    "PERSONAS",
    "WorldConfig",
    "WorldFiles",
    "WorldSummary",
    "generate_world",
    "load_world",
]

Progress = Callable[[str, float], None]
F64 = np.ndarray[Any, np.dtype[np.float64]]
Array = np.ndarray[Any, Any]

# --------------------------------------------------------------------------------------------
# Personas: the latent truth. Rows of every table below follow this order.
# --------------------------------------------------------------------------------------------
PERSONAS: tuple[str, ...] = (
    "gamer", "food_delivery", "traveller", "investor", "parent",
    "commuter", "shopper", "senior", "student", "professional",
)  # fmt: skip
_P = {name: i for i, name in enumerate(PERSONAS)}
_N_PERSONAS = len(PERSONAS)

# Share of each main persona in the population (bank and vendor draw from the same people).
_MIX = np.array([0.10, 0.12, 0.08, 0.08, 0.13, 0.12, 0.13, 0.10, 0.06, 0.08])
_SECOND_PERSONA_SHARE = 0.35  # people with a second persona
_SECOND_WEIGHT = 0.35  # how much the second persona counts in behaviour and in the label

# Age by persona: mean, sd, min, max.
_AGE = np.array(
    [
        (27, 6, 18, 50), (31, 7, 18, 60), (39, 10, 22, 75), (46, 10, 25, 80), (36, 6, 24, 55),
        (34, 8, 20, 60), (33, 9, 18, 65), (66, 7, 55, 90), (21, 2, 18, 28), (38, 8, 23, 62),
    ],
    dtype=np.float64,
)  # fmt: skip
_FEMALE = np.array([0.30, 0.50, 0.50, 0.45, 0.60, 0.50, 0.70, 0.52, 0.50, 0.45])
# Mild shifts of the latent wealth and digital-affinity scores (in standard deviations).
_WEALTH_SHIFT = np.array([-0.3, -0.2, 0.4, 0.8, 0.0, 0.0, 0.0, 0.3, -0.8, 0.3])
_DIGITAL_SHIFT = np.array([0.5, 0.4, 0.2, 0.2, 0.0, 0.3, 0.4, -0.8, 0.5, 0.3])
# Preference for big cities (multiplies branch weights of tier 1, 2, 3, 4).
_TIER_PREF = np.array(
    [
        (1.0, 1.0, 1.0, 1.0), (1.2, 1.1, 1.0, 0.8), (1.4, 1.2, 0.9, 0.7), (1.5, 1.2, 0.9, 0.6),
        (0.9, 1.0, 1.1, 1.1), (1.7, 1.3, 0.8, 0.5), (1.1, 1.1, 1.0, 0.9), (0.8, 0.9, 1.1, 1.3),
        (1.0, 1.1, 1.0, 0.9), (1.6, 1.3, 0.8, 0.5),
    ]
)  # fmt: skip
# Presence at the vendor (log-weight): seniors use fewer apps, young personas more.
_PRESENCE = np.array([0.3, 0.2, 0.1, 0.0, 0.0, 0.1, 0.2, -0.9, 0.3, 0.1])

# Label: persona terms of the logit of opening mobile banking within the window.
_LABEL_PERSONA = np.array([-1.6, 1.2, 1.8, 3.0, -1.8, 3.0, 3.0, -2.0, 0.0, 0.6])
# Campaign (food-delivery coupon): persona terms of the response logit without and with the offer.
# The response without the offer follows the customer's loyalty to the bank (its "sure things"
# answer anyway); the offer adds an uplift in probability points that only the persona drives, so a
# response model and an uplift model rank customers differently, as in real campaigns.
_RESPONSE_PERSONA = np.array([0.0, 0.2, 0.0, 0.3, 0.0, 0.1, 0.2, -0.3, 0.1, 0.2])
_RESPONSE_BANK = 1.2  # weight of the (standardised) loyalty score in the control response logit
_UPLIFT_PERSONA = np.array([0.02, 0.10, 0.01, 0.0, 0.01, 0.01, 0.07, -0.015, 0.04, 0.0])

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
# A second latent trait seen only at the vendor: heavy use of payment, wealth and other banks'
# apps. Half of the variants of every pair are "fintech" variants with these categories boosted.
_FINTECH_SHARE = 0.3
_FINTECH_BOOST = {"finance": 3.0, "banking": 5.0}
_FINTECH_LABEL = 2.0  # logit of opening mobile banking
# Scale of the bank terms in the label logit: puts an in-bank model's held-out AUC near the real
# case's 0.8 (0.79 on the 100k demo world; 0.76 at scale 1.0, 0.81 at 1.4, 0.85 at 1.8).
_BANK_LABEL_WEIGHT = 1.2

# --------------------------------------------------------------------------------------------
# Bank reference data
# --------------------------------------------------------------------------------------------
# 40 branches: (GB/T 2260 district code, city tier). Sizes are Zipf-like over a fixed order.
_BRANCHES = (
    ("110101", 1), ("110105", 1), ("310101", 1), ("310115", 1), ("440305", 1), ("440106", 1),
    ("330106", 2), ("320102", 2), ("510107", 2), ("420106", 2), ("610113", 2), ("500103", 2),
    ("120101", 2), ("370202", 2), ("350203", 2), ("430104", 2), ("410105", 2), ("210102", 2),
    ("320583", 3), ("330203", 3), ("440604", 3), ("441900", 3), ("370102", 3), ("340104", 3),
    ("360102", 3), ("450103", 3), ("530102", 3), ("520102", 3), ("130102", 3), ("140105", 3),
    ("341202", 4), ("411302", 4), ("431102", 4), ("511302", 4), ("622901", 4), ("360702", 4),
    ("450802", 4), ("371302", 4), ("130602", 4), ("410702", 4),
)  # fmt: skip
_LOCAL_SHARE = 0.85  # customers whose ID was issued where their branch is
_EDUCATION = ("below_high_school", "high_school", "college", "bachelor", "master_plus")
_JOBS = (
    "civil_servant", "teacher", "professional", "white_collar", "worker",
    "self_employed", "farmer", "student", "retired", "other",
)  # fmt: skip
# P(job | persona), rows follow PERSONAS, columns follow _JOBS.
_JOB_MIX = np.array(
    [
        (0.03, 0.02, 0.08, 0.30, 0.25, 0.12, 0.03, 0.05, 0.00, 0.12),
        (0.04, 0.03, 0.10, 0.35, 0.20, 0.12, 0.02, 0.04, 0.00, 0.10),
        (0.08, 0.06, 0.20, 0.30, 0.06, 0.18, 0.01, 0.01, 0.04, 0.06),
        (0.10, 0.05, 0.22, 0.22, 0.04, 0.25, 0.01, 0.00, 0.06, 0.05),
        (0.08, 0.08, 0.12, 0.30, 0.16, 0.14, 0.04, 0.00, 0.00, 0.08),
        (0.08, 0.06, 0.18, 0.42, 0.12, 0.06, 0.01, 0.01, 0.00, 0.06),
        (0.05, 0.05, 0.12, 0.38, 0.15, 0.12, 0.02, 0.03, 0.00, 0.08),
        (0.05, 0.04, 0.04, 0.05, 0.08, 0.06, 0.08, 0.00, 0.55, 0.05),
        (0.00, 0.00, 0.01, 0.03, 0.03, 0.01, 0.00, 0.88, 0.00, 0.04),
        (0.12, 0.06, 0.38, 0.30, 0.02, 0.06, 0.00, 0.00, 0.00, 0.06),
    ]
)  # fmt: skip
_INVALID_PHONE_SHARE = 0.01
_SHARED_PHONE_PAIRS = 0.0025  # pairs, so ~0.5% of customers share a phone
_BAD_ID_SHARE = 0.005
_LOWER_X_SHARE = 0.3  # of ID numbers ending in X, the share written with a lowercase x
_MB_REGISTERED_RATE = 0.40
_LABEL_RATE = 0.07  # among customers not yet registered
_CAMPAIGN_SHARE = 0.40  # of unregistered customers
_CONTROL_RESPONSE_RATE = 0.05
_CAMPAIGN_ID = "2026Q2-food-coupon"
_CHANNELS = ("counter", "atm", "online", "mobile", "pos", "quickpay")

# The vendor writes a few numbers with the country code; the bank's extract is far dirtier.
_VENDOR_PLUS86_SHARE = 0.06
# Dirty phone styles of the bank extract and their shares (valid numbers only).
_PHONE_STYLES = np.array([0.40, 0.12, 0.08, 0.06, 0.14, 0.08, 0.06, 0.06])

_CHUNK_USERS = 65_536  # vendor users per generated chunk / Parquet row group
_PARQUET_OPTIONS: dict[str, Any] = {
    "compression": "zstd",
    "compression_level": 1,  # level 3 buys ~1% on bit-packed ids and costs 15% more time
    "write_statistics": False,
    "use_dictionary": True,
}
_STREAMS = (
    "people",
    "bank",
    "phones",
    "ids",
    "outcomes",
    "presence",
    "vendor",
    "profiles",
    "lists",
)


# --------------------------------------------------------------------------------------------
# Public types
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class WorldConfig:
    """How big the world is and the seed it grows from; everything else is fixed by the code."""

    customers: int = 100_000
    seed: int = 7
    vendor_ratio: float = 3.0  # vendor users per bank customer
    coverage: float = 0.65  # share of bank customers with a valid phone who are at the vendor
    snapshot_date: datetime.date = datetime.date(2026, 9, 30)
    taxonomy_version: str = CURRENT_VERSION

    def to_dict(self) -> dict[str, Any]:
        """Return the config as JSON-ready values (the date as ISO text)."""
        values = asdict(self)
        values["snapshot_date"] = self.snapshot_date.isoformat()
        return values


@dataclass(frozen=True, kw_only=True)
class WorldSummary:
    """Measured facts of a generated world, with the sha256 of every file it wrote."""

    bank_customers: int
    vendor_users: int
    true_coverage: float  # bank customers in truth/intersection over all bank customers
    label_rate: float  # opened mobile banking in the window, among customers not registered
    registered_rate: float  # already on mobile banking at the snapshot
    campaign_size: int
    campaign_treated_share: float
    campaign_response_treatment: float
    campaign_response_control: float
    persona_mix: dict[str, float]  # main persona -> share of vendor users
    invalid_phones: int
    duplicated_phones: int  # customers whose (valid) phone another customer also gives
    bad_id_checksums: int
    digests: dict[str, str] = field(default_factory=dict)  # relative path -> sha256 hex
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """Return the summary as plain JSON-ready values."""
        return asdict(self)


@dataclass(frozen=True)
class WorldFiles:
    """Paths of a world's files under its root folder."""

    root: Path

    CUSTOMERS = "bank/customers.parquet"
    CAMPAIGN = "bank/campaign.parquet"
    VENDOR_USERS = "vendor/users.parquet"
    PERSONAS = "truth/personas.parquet"
    PROPENSITY = "truth/propensity.parquet"
    INTERSECTION = "truth/intersection.parquet"
    MANIFEST = "world.json"
    PARQUET = (CUSTOMERS, CAMPAIGN, VENDOR_USERS, PERSONAS, PROPENSITY, INTERSECTION)

    @property
    def customers(self) -> Path:
        return self.root / self.CUSTOMERS

    @property
    def campaign(self) -> Path:
        return self.root / self.CAMPAIGN

    @property
    def vendor_users(self) -> Path:
        return self.root / self.VENDOR_USERS

    @property
    def personas(self) -> Path:
        return self.root / self.PERSONAS

    @property
    def propensity(self) -> Path:
        return self.root / self.PROPENSITY

    @property
    def intersection(self) -> Path:
        return self.root / self.INTERSECTION

    @property
    def manifest(self) -> Path:
        return self.root / self.MANIFEST

    def summary(self) -> dict[str, Any]:
        """Return the summary stored in world.json."""
        document: dict[str, Any] = json.loads(self.manifest.read_text())
        return dict(document["summary"])


def load_world(out: Path) -> WorldFiles:
    """Return the files of the world generated under `out`, checking that all of them exist."""
    files = WorldFiles(Path(out))
    missing = [
        p for p in (*WorldFiles.PARQUET, WorldFiles.MANIFEST) if not (files.root / p).exists()
    ]
    if missing:
        raise WorldError(
            f"no complete synthetic world under {files.root}: missing {', '.join(missing)}; "
            f"generate one with `fusion world --out {files.root}`"
        )
    return files


# --------------------------------------------------------------------------------------------
# Generation
# --------------------------------------------------------------------------------------------
def generate_world(
    config: WorldConfig, out: Path, *, progress: Progress | None = None
) -> WorldSummary:
    """Return the summary of the world written under `out` (same config -> same file bytes)."""
    start = time.perf_counter()
    taxonomy = _validated_taxonomy(config)
    report: Progress = progress or (lambda stage, fraction: None)
    files = WorldFiles(Path(out))
    for folder in ("bank", "vendor", "truth"):
        (files.root / folder).mkdir(parents=True, exist_ok=True)
    seeds = dict(
        zip(_STREAMS, np.random.SeedSequence(config.seed).spawn(len(_STREAMS)), strict=True)
    )
    rng = {name: np.random.Generator(np.random.PCG64(seed)) for name, seed in seeds.items()}
    n_vendor = round(config.vendor_ratio * config.customers)

    # Two writer threads compress and write while the main thread generates: one for the big
    # vendor file (row group by row group, in order), one for every other file.
    digests: dict[str, Future[str]] = {}
    with (
        ThreadPoolExecutor(max_workers=1, thread_name_prefix="world-files") as writer,
        ThreadPoolExecutor(max_workers=1, thread_name_prefix="world-vendor") as vendor_writer,
    ):
        report("bank customers", 0.0)
        # The rankings need no bank data: the idle writer builds them while the bank is drawn.
        profiles = writer.submit(_profiles, taxonomy, rng["profiles"])
        people = _people(config.customers, rng["people"])
        bank = _bank_features(people, rng["bank"])
        phones = _bank_phones(config.customers, n_vendor, rng["phones"])
        phone_column = _dirty_phones(phones, rng["phones"])
        ids = _id_numbers(bank, config.snapshot_date, rng["ids"])
        report("bank customers", 0.5)
        outcomes = _outcomes(people, bank, rng["outcomes"])
        customers = _customer_frame(bank, phone_column, ids, outcomes)
        digests[files.CUSTOMERS] = writer.submit(_write, customers.to_arrow(), files.customers)
        campaign = _campaign_frame(ids, outcomes)
        digests[files.CAMPAIGN] = writer.submit(_write, campaign.to_arrow(), files.campaign)
        del customers, campaign
        report("bank customers", 1.0)

        report("vendor users", 0.0)
        vendor = _vendor_population(config, people, bank, phones, rng["presence"], rng["vendor"])
        for name, frame in _truth_frames(people, ids, vendor, outcomes).items():
            digests[name] = writer.submit(_write, frame.to_arrow(), files.root / name)
        _write_vendor_users(
            vendor, profiles.result(), seeds["lists"], files.vendor_users, vendor_writer, report
        )
        digests[files.VENDOR_USERS] = vendor_writer.submit(_sha256, files.vendor_users)
        report("vendor users", 1.0)
        report("files", 0.0)
        digest = {name: digests[name].result() for name in WorldFiles.PARQUET}
        report("files", 1.0)

    n_unregistered = int((~outcomes.registered).sum())
    in_campaign = outcomes.campaign >= 0
    treated = outcomes.campaign == 1
    summary = WorldSummary(
        bank_customers=config.customers,
        vendor_users=vendor.n,
        true_coverage=float(vendor.matched.sum() / config.customers),
        label_rate=float(outcomes.opened[~outcomes.registered].sum() / max(n_unregistered, 1)),
        registered_rate=float(outcomes.registered.mean()),
        campaign_size=int(in_campaign.sum()),
        campaign_treated_share=float(treated.sum() / max(int(in_campaign.sum()), 1)),
        campaign_response_treatment=_rate(outcomes.responded, treated),
        campaign_response_control=_rate(outcomes.responded, outcomes.campaign == 0),
        persona_mix={
            p: float(s)
            for p, s in zip(
                PERSONAS, np.bincount(vendor.persona, minlength=_N_PERSONAS) / vendor.n, strict=True
            )
        },
        invalid_phones=int((phones.kind >= _INVALID).sum()),
        duplicated_phones=int(phones.shared.sum()),
        bad_id_checksums=int(ids.bad.sum()),
        digests=digest,
        seconds=round(time.perf_counter() - start, 3),
    )
    files.manifest.write_text(
        json.dumps({"config": config.to_dict(), "summary": summary.to_dict()}, indent=2) + "\n"
    )
    return summary


def _validated_taxonomy(config: WorldConfig) -> Taxonomy:
    """Return the config's taxonomy after checking every parameter; WorldError names the bad one."""
    problems = []
    if not isinstance(config.customers, int) or not 100 <= config.customers <= 50_000_000:
        problems.append(
            f"customers must be an integer in 100..50,000,000, got {config.customers!r}"
        )
    if not isinstance(config.seed, int) or config.seed < 0:
        problems.append(f"seed must be a non-negative integer, got {config.seed!r}")
    if not 0.0 <= config.coverage <= 1.0:
        problems.append(f"coverage must be a share in 0..1, got {config.coverage!r}")
    if not 1.0 <= config.vendor_ratio <= 20.0:
        problems.append(
            f"vendor_ratio must be within 1..20 (the vendor holds at least the covered "
            f"customers), got {config.vendor_ratio!r}"
        )
    if not isinstance(config.snapshot_date, datetime.date):
        problems.append(f"snapshot_date must be a datetime.date, got {config.snapshot_date!r}")
    if problems:
        raise WorldError("cannot generate the world: " + "; ".join(problems))
    try:
        return load_taxonomy(config.taxonomy_version)
    except ConfigError as error:
        raise WorldError(f"cannot generate the world: {error}") from error


def _rate(flags: Array, mask: Array) -> float:
    """Return the share of `flags` among rows in `mask` (0.0 when the mask is empty)."""
    n = int(mask.sum())
    return float(flags[mask].sum() / n) if n else 0.0


def _sigmoid(x: F64) -> F64:
    return 1.0 / (1.0 + np.exp(-x))


def _intercept(logits: F64, target: float) -> float:
    """Return b such that mean(sigmoid(b + logits)) equals `target` (Newton's method)."""
    b = math.log(target / (1.0 - target)) - float(np.median(logits))
    for _ in range(30):
        p = _sigmoid(b + logits)
        gap = float(p.mean()) - target
        if abs(gap) < 1e-9:
            break
        b -= gap / max(float((p * (1.0 - p)).mean()), 1e-12)
    return b


def _bernoulli(rng: np.random.Generator, p: F64 | float, n: int) -> Array:
    return rng.random(n) < p


def _draw_rows(rng: np.random.Generator, weights: Array, rows: Array) -> Array:
    """Return one column index per row, drawn from the weights of table row `rows[i]`."""
    cdf = np.cumsum(weights / weights.sum(axis=1, keepdims=True), axis=1)
    cdf[:, -1] = 1.0  # rounding must not leave a gap above the last column
    # Offset row r's CDF by r so one searchsorted over the flattened table serves every row.
    flat = (cdf + np.arange(len(cdf))[:, None]).ravel()
    hits = np.searchsorted(flat, rows + rng.random(len(rows)), side="right")
    return np.minimum(hits - rows * weights.shape[1], weights.shape[1] - 1)


# --------------------------------------------------------------------------------------------
# Bank side
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _People:
    """Latent facts of the bank's customers: personas and the wealth / digital scores."""

    n: int
    persona: Array  # int8 main persona
    second: Array  # int8 second persona, equal to `persona` when there is none
    second_weight: F64  # 0 or _SECOND_WEIGHT
    fintech: Array  # bool: the vendor-only trait
    wealth: F64
    digital: F64

    def mixed(self, table: Array) -> F64:
        """Return a per-persona table mixed over main and second persona for every person."""
        return _mix(table, self.persona, self.second, self.second_weight)


def _mix(table: Array, persona: Array, second: Array, weight: F64) -> F64:
    """Return table[persona] blended with table[second] by the second persona's weight."""
    return (1.0 - weight) * table[persona] + weight * table[second]


def _personas(n: int, rng: np.random.Generator) -> tuple[Array, Array, F64]:
    """Return main persona, second persona (= main when none) and the second's weight."""
    persona = rng.choice(_N_PERSONAS, size=n, p=_MIX).astype(np.int8)
    has_second = rng.random(n) < _SECOND_PERSONA_SHARE
    # A second persona different from the main one: shift by 1..9 around the circle.
    second = ((persona + rng.integers(1, _N_PERSONAS, n)) % _N_PERSONAS).astype(np.int8)
    second = np.where(has_second, second, persona).astype(np.int8)
    return persona, second, np.where(has_second, _SECOND_WEIGHT, 0.0)


def _people(n: int, rng: np.random.Generator) -> _People:
    """Return the latent persona and scores of `n` bank customers."""
    persona, second, weight = _personas(n, rng)
    digital = rng.standard_normal(n)  # shifted by persona, age and city in _bank_features
    return _People(
        n=n,
        persona=persona,
        second=second,
        second_weight=weight,
        fintech=_fintech(digital, rng),
        wealth=rng.standard_normal(n),
        digital=digital,
    )


def _fintech(digital: F64, rng: np.random.Generator) -> Array:
    """Return the fintech trait: independent of the bank's view but for a mild digital tilt."""
    logit = math.log(_FINTECH_SHARE / (1 - _FINTECH_SHARE)) + 0.3 * digital
    return rng.random(len(digital)) < _sigmoid(logit)


def _bank_features(people: _People, rng: np.random.Generator) -> dict[str, Any]:
    """Return the bank's feature columns for every customer.

    Values are numpy arrays (NaN = null) or polars Series for text; keys starting with `_` are
    latent helpers that never reach the extract.
    """
    n, p = people.n, people.persona
    col: dict[str, Any] = {}
    age_params = _AGE[p]
    age = np.clip(
        np.rint(rng.normal(age_params[:, 0], age_params[:, 1])), age_params[:, 2], age_params[:, 3]
    )
    col["age"] = age.astype(np.int16)
    female = rng.random(n) < _FEMALE[p]
    col["_male"] = ~female
    col["gender"] = pl.Series(["M", "F"]).gather(female.astype(np.int64))
    sizes = 1.0 / np.arange(1, len(_BRANCHES) + 1) ** 0.8
    # Branch sizes are Zipf-like, but the big branches are not all in tier 1.
    sizes = sizes[rng.permutation(len(_BRANCHES))]
    tiers = np.array([t for _, t in _BRANCHES])
    branch = _draw_rows(rng, sizes[None, :] * _TIER_PREF[:, tiers - 1], p.astype(np.int64))
    col["_branch"] = branch
    # The district that issued the ID: the branch's own for most, anywhere for migrants.
    local = rng.random(n) < _LOCAL_SHARE
    col["_region"] = np.where(local, branch, rng.integers(0, len(_BRANCHES), n))
    col["is_local_resident"] = col["_region"] == branch
    tier = tiers[branch]
    col["city_tier"] = tier.astype(np.int8)

    a40 = np.clip(age, 18, 65) - 40.0
    wealth = (
        people.wealth
        + 0.025 * a40
        + people.mixed(_WEALTH_SHIFT)
        + np.select([tier == 1, tier == 2, tier == 4], [0.25, 0.1, -0.15], 0.0)
    )
    digital = (
        people.digital - 0.035 * (age - 40.0) + people.mixed(_DIGITAL_SHIFT) + 0.15 * (tier <= 2)
    )
    col["_wealth"], col["_digital"] = wealth, digital
    is_p = {name: p == i for name, i in _P.items()}

    edu_score = 0.5 * wealth + 0.3 * digital - 0.01 * (age - 40) + rng.standard_normal(n)
    education = np.digitize(edu_score, [-1.0, -0.2, 0.5, 1.6])
    education = np.where(is_p["student"], np.maximum(education, 2), education)
    col["education"] = pl.Series(_EDUCATION).gather(education)
    job = _draw_rows(rng, _JOB_MIX, p.astype(np.int64))
    retired = (age >= 62) & (rng.random(n) < 0.8)
    job = np.where(retired, _JOBS.index("retired"), job)
    job = np.where((job == _JOBS.index("student")) & (age > 26), _JOBS.index("white_collar"), job)
    col["job"] = pl.Series(_JOBS).gather(job)
    employed = ~np.isin(job, [_JOBS.index("student"), _JOBS.index("retired"), _JOBS.index("other")])

    u = rng.random(n)
    p_married = np.where(is_p["parent"], 0.92, 0.88 * _sigmoid((age - 28.0) / 3.0))
    married = u < p_married
    widowed = married & (age > 65) & (rng.random(n) < 0.15)
    divorced = married & ~widowed & (age > 30) & (rng.random(n) < 0.07)
    marital = np.select([widowed, divorced, married], [3, 2, 1], 0)
    col["marital"] = pl.Series(("single", "married", "divorced", "widowed")).gather(marital)
    p_children = np.where(married, 0.75 * _sigmoid((age - 30.0) / 4.0), 0.05)
    has_children = is_p["parent"] | (rng.random(n) < p_children)
    col["has_children"] = has_children
    kids = np.where(has_children, 1 + rng.poisson(0.3, n), 0)
    col["household_size"] = np.minimum(1 + married + kids + rng.poisson(0.3, n), 8).astype(np.int8)
    income = np.exp(10.8 + 0.45 * wealth + 0.15 * education + rng.normal(0, 0.5, n))
    income = np.where(job == _JOBS.index("student"), income * 0.05, income)
    income = np.where(job == _JOBS.index("retired"), income * 0.45, income)
    col["annual_income"] = np.round(income, -2)

    # Relationship with the bank.
    max_tenure = np.clip((age - 18.0) * 12.0, 1.0, 360.0)
    col["tenure_months"] = (1 + np.floor(max_tenure * rng.beta(1.3, 2.2, n))).astype(np.int16)
    payroll = _bernoulli(rng, _sigmoid(-0.8 + 1.2 * employed + 0.2 * wealth), n)
    col["payroll"] = payroll
    dormant = rng.random(n) < _sigmoid(-1.8 - 0.6 * wealth)
    base = np.where(
        dormant,
        rng.uniform(0.0, 500.0, n),
        np.exp(9.3 + 1.2 * wealth + 0.012 * a40 + rng.normal(0.0, 0.7, n)),
    )
    senior, investor = is_p["senior"], is_p["investor"]
    holdings = {
        "time_deposit": (_sigmoid(-0.4 + 0.5 * wealth + 0.025 * a40 + 0.5 * senior), 1.5),
        "wealth_mgmt": (
            _sigmoid(-1.9 + 0.9 * wealth + 1.2 * investor + 0.3 * is_p["professional"]),
            1.3,
        ),
        "funds": (_sigmoid(-2.4 + 0.7 * wealth + 0.4 * digital + 1.4 * investor), 0.8),
        "insurance": (_sigmoid(-2.6 + 0.5 * wealth + 0.6 * is_p["parent"] + 0.01 * a40), 0.6),
        "bonds": (_sigmoid(-3.6 + 0.6 * wealth + 0.9 * senior), 0.8),
        "precious_metals": (_sigmoid(-4.2 + 0.6 * wealth), 0.3),
    }
    demand_share = rng.gamma(1.2, 1.0, n)
    shares = {}
    for name, (prob, scale) in holdings.items():
        held = (rng.random(n) < prob) & ~dormant
        shares[name] = np.where(held, scale * rng.gamma(1.6, 1.0, n), 0.0)
    total = demand_share + sum(shares.values())
    col["aum_current"] = np.round(base, 2)
    col["aum_month_avg"] = np.round(base * rng.lognormal(0.0, 0.08, n), 2)
    col["aum_year_avg"] = np.round(base * rng.lognormal(-0.05, 0.3, n), 2)
    col["aum_max_12m"] = np.round(
        np.maximum(col["aum_month_avg"], col["aum_year_avg"]) * (1.0 + rng.exponential(0.2, n)), 2
    )
    col["demand_deposit"] = np.round(base * demand_share / total, 2)
    for name in holdings:
        col[name] = np.round(base * shares[name] / total, 2)
    col["time_deposit_count"] = np.where(
        col["time_deposit"] > 0, 1 + rng.poisson(0.7 + 0.3 * np.clip(wealth, 0, 3)), 0
    ).astype(np.int16)
    col["wealth_ratio"] = np.round(col["wealth_mgmt"] / np.maximum(base, 1.0), 4)
    level = 1 + np.digitize(col["aum_month_avg"], [50_000, 500_000, 1_000_000, 6_000_000])
    col["customer_level"] = level.astype(np.int8)
    col["has_relationship_manager"] = rng.random(n) < np.select(
        [level >= 3, level == 2], [0.8, 0.15], 0.01
    )
    self_employed = job == _JOBS.index("self_employed")
    ukey = _bernoulli(
        rng, _sigmoid(-1.4 + 0.6 * digital + 0.4 * wealth + 0.7 * self_employed + 0.3 * payroll), n
    )
    col["ukey_holder"] = ukey
    online = _bernoulli(rng, _sigmoid(-0.4 + 0.9 * digital + 0.3 * wealth + 0.3 * ukey), n)
    col["online_banking"] = online
    cc = _bernoulli(
        rng,
        _sigmoid(
            -0.9
            + 0.4 * wealth
            + 0.5 * digital
            + 0.6 * is_p["shopper"]
            + 0.5 * is_p["traveller"]
            - 0.8 * is_p["student"]
            - 0.6 * senior
        ),
        n,
    )
    col["credit_card"] = cc
    limit = np.where(cc, np.round(np.exp(9.8 + 0.45 * wealth + rng.normal(0, 0.4, n)), -3), 0.0)
    col["credit_card_limit"] = limit
    col["credit_card_balance"] = np.round(limit * rng.beta(1.2, 3.0, n) * (rng.random(n) < 0.7), 2)
    mortgage = _bernoulli(rng, _sigmoid(-1.6 + 0.3 * wealth - 0.004 * (age - 38.0) ** 2), n)
    col["mortgage_balance"] = np.where(
        mortgage, np.round(np.exp(13.2 + 0.3 * wealth + rng.normal(0, 0.5, n)), 2), 0.0
    )
    consumer = _bernoulli(
        rng, _sigmoid(-2.6 + 0.3 * digital - 0.2 * wealth + 0.4 * is_p["shopper"]), n
    )
    col["consumer_loan_balance"] = np.where(
        consumer, np.round(np.exp(10.3 + rng.normal(0, 0.8, n)), 2), 0.0
    )
    business = _bernoulli(rng, 0.02 + 0.06 * self_employed, n)
    business_balance = np.where(
        business, np.round(np.exp(12.0 + 0.4 * wealth + rng.normal(0, 0.6, n)), 2), 0.0
    )
    col["loan_balance"] = np.round(
        col["mortgage_balance"] + col["consumer_loan_balance"] + business_balance, 2
    )
    col["n_loans"] = (mortgage.astype(np.int8) + consumer + business).astype(np.int8)
    col["n_debit_cards"] = (1 + rng.poisson(0.35, n)).astype(np.int8)
    wechat = _bernoulli(rng, _sigmoid(0.9 * digital), n)
    col["wechat_bound"] = wechat
    col["sms_alerts"] = _bernoulli(rng, _sigmoid(0.8 + 0.02 * (age - 40.0) - 0.3 * digital), n)
    col["months_since_contact"] = np.minimum(
        rng.poisson(np.where(col["has_relationship_manager"], 2.0, 14.0)), 60
    ).astype(np.int16)
    col["complaints_12m"] = rng.poisson(0.03 + 0.02 * level).astype(np.int8)
    col["social_security_card"] = _bernoulli(
        rng, _sigmoid(-0.8 + 1.2 * payroll + 0.3 * (age > 50)), n
    )
    held_products = sum((col[h] > 0).astype(np.int8) for h in holdings)
    col["n_products"] = (1 + cc + held_products + mortgage + consumer + business).astype(np.int8)
    return col


def _channels(
    people: _People, col: dict[str, Any], registered: Array, rng: np.random.Generator
) -> None:
    """Add 3-month channel transaction columns to `col` (mobile needs the registration flag)."""
    n, p = people.n, people.persona
    wealth, digital = col["_wealth"], col["_digital"]
    age = col["age"].astype(np.float64)
    shopper = (p == _P["shopper"]).astype(np.float64)
    food = (p == _P["food_delivery"]).astype(np.float64)
    activity = 0.3 * wealth + 0.3 * col["payroll"] + rng.normal(0.0, 0.7, n)
    activity = np.where(col["aum_current"] < 500, -2.0, activity)
    rates = {
        "counter": np.exp(-0.6 + 0.025 * (age - 40) - 0.4 * digital + 0.3 * activity),
        "atm": np.exp(0.5 - 0.008 * (age - 40) + 0.4 * activity - 0.2 * digital),
        "online": np.where(
            col["online_banking"], np.exp(0.8 + 0.4 * digital + 0.4 * activity), 0.0
        ),
        "mobile": np.where(registered, np.exp(2.3 + 0.4 * digital + 0.4 * activity), 0.0),
        "pos": np.exp(0.6 + 0.5 * activity + 0.8 * col["credit_card"] + 0.4 * shopper),
        "quickpay": np.exp(
            1.2
            + 0.7 * digital
            + 0.4 * activity
            + 0.4 * col["wechat_bound"]
            + 0.5 * (shopper + food)
        ),
    }
    tickets = {
        "counter": 8.0,
        "atm": 6.6,
        "online": 7.5,
        "mobile": 6.5,
        "pos": 5.4,
        "quickpay": 4.2,
    }
    # A customer without online or mobile banking never used that channel.
    has_channel = {"online": col["online_banking"], "mobile": registered}
    count_total = np.zeros(n, dtype=np.int64)
    amount_total = np.zeros(n)
    for channel in _CHANNELS:
        count = rng.poisson(np.minimum(rates[channel], 500.0))
        ticket = np.exp(tickets[channel] + 0.4 * wealth + rng.normal(0.0, 0.4, n))
        amount = np.round(count * ticket, 2)
        # Days since the last transaction: within the quarter when there was one, else
        # older (90..364) or never (null) in the last year.
        recent = np.minimum(np.floor(rng.exponential(90.0 / (count + 1.0))), 89.0)
        older = np.where(rng.random(n) < 0.5, 90.0 + np.floor(rng.random(n) * 275.0), np.nan)
        older = np.where(has_channel.get(channel, True), older, np.nan)
        col[f"{channel}_txn_count_3m"] = count.astype(np.int32)
        col[f"{channel}_txn_amount_3m"] = amount
        col[f"{channel}_days_since_last"] = np.where(count > 0, recent, older)
        count_total += count
        amount_total += amount
    col["txn_count_3m"] = count_total.astype(np.int32)
    col["txn_amount_3m"] = np.round(amount_total, 2)
    col["max_single_txn_amount_3m"] = np.round(amount_total * rng.beta(2.0, 5.0, n), 2)
    col["salary_amount_3m"] = np.where(
        col["payroll"], np.round(col["annual_income"] / 4.0 * rng.lognormal(0.0, 0.1, n), 2), 0.0
    )
    transfers_in = rng.poisson(np.exp(0.3 + 0.3 * activity + 0.2 * digital))
    transfers_out = rng.poisson(np.exp(0.6 + 0.4 * activity + 0.3 * digital))
    col["transfer_in_count_3m"] = transfers_in.astype(np.int32)
    col["transfer_out_count_3m"] = transfers_out.astype(np.int32)
    col["inflow_amount_3m"] = np.round(
        col["salary_amount_3m"] + transfers_in * np.exp(8.0 + 0.5 * wealth + rng.normal(0, 0.5, n)),
        2,
    )
    col["outflow_amount_3m"] = np.round(
        amount_total + transfers_out * np.exp(7.8 + 0.5 * wealth + rng.normal(0, 0.5, n)), 2
    )
    col["utility_payment_count_3m"] = rng.poisson(
        np.exp(0.2 + 0.3 * col["has_children"] + 0.2 * np.clip(wealth, -2, 2))
    ).astype(np.int32)
    col["active_months_12m"] = rng.binomial(12, _sigmoid(1.5 + activity)).astype(np.int8)


@dataclass(frozen=True)
class _Outcomes:
    """Registration, the label and the campaign, with the true probabilities behind them."""

    registered: Array  # bool
    p_open: F64
    opened: Array  # bool (meaningful where not registered)
    campaign: Array  # int8: -1 not in the campaign, 0 control, 1 treatment
    p_control: F64
    p_treatment: F64
    responded: Array  # bool (meaningful where in the campaign)


def _outcomes(people: _People, col: dict[str, Any], rng: np.random.Generator) -> _Outcomes:
    """Return registration, label and campaign outcomes; adds the channel columns to `col`."""
    n = people.n
    age = col["age"].astype(np.float64)
    digital = col["_digital"]
    registered_logit = (
        1.1 * digital + 0.4 * col["online_banking"] + 0.3 * col["wechat_bound"]
        + 0.3 * col["payroll"] - 0.2 * (col["city_tier"] == 4)
    )  # fmt: skip
    registered = rng.random(n) < _sigmoid(
        _intercept(registered_logit, _MB_REGISTERED_RATE) + registered_logit
    )
    _channels(people, col, registered, rng)

    # The real case's top variables: young, U-key, wealth management, tenure, time deposits,
    # online banking. Persona and fintech terms come on top: a bank-only model sees them only
    # through the mild persona shifts of age and assets, a fused one through the vendor's lists.
    bank_logit = (
        0.35 * np.clip((40.0 - age) / 10.0, -2.5, 2.0)
        + 0.8 * col["ukey_holder"]
        + 0.6 * (col["wealth_mgmt"] > 0)
        + 0.25 * np.log1p(col["wealth_mgmt"] / 10_000.0)
        + 0.45 * (col["time_deposit"] > 0)
        + 0.7 * col["online_banking"]
        - 0.35 * np.log1p(col["tenure_months"] / 12.0)
        + 0.2 * np.log1p(col["quickpay_txn_count_3m"])
        + 0.3 * col["wechat_bound"]
    )
    logit = (
        _BANK_LABEL_WEIGHT * bank_logit
        + people.mixed(_LABEL_PERSONA)
        + _FINTECH_LABEL * people.fintech
    )
    unregistered = ~registered
    p_open = _sigmoid(_intercept(logit[unregistered], _LABEL_RATE) + logit)
    opened = (rng.random(n) < p_open) & unregistered

    # The campaign: a random share of the unregistered, treatment assigned by a fair coin.
    eligible = unregistered & (rng.random(n) < _CAMPAIGN_SHARE)
    treatment = rng.random(n) < 0.5
    campaign = np.where(eligible, treatment.astype(np.int8), -1).astype(np.int8)
    # Loyal, wealthy, well-looked-after customers answer any offer of the bank's: the "sure
    # things". Their loyalty runs against the coupon's young target, so a response model that
    # chases them buys few extra conversions.
    loyalty = (
        np.log1p(col["aum_month_avg"] / 10_000.0)
        + 0.6 * np.log1p(col["tenure_months"] / 12.0)
        + 0.8 * col["has_relationship_manager"]
        + 0.5 * col["payroll"]
    )
    loyalty = (loyalty - loyalty.mean()) / max(float(loyalty.std()), 1e-9)
    base = _RESPONSE_BANK * loyalty + people.mixed(_RESPONSE_PERSONA)
    base = base + _intercept(base[unregistered], _CONTROL_RESPONSE_RATE)
    p_control = _sigmoid(base)
    p_treatment = np.clip(p_control + people.mixed(_UPLIFT_PERSONA), 0.0, 1.0)
    # One uniform per customer for both arms: the potential outcomes are coupled, so uplift is
    # never negative for a person whose true uplift is positive.
    u = rng.random(n)
    responded = eligible & (u < np.where(campaign == 1, p_treatment, p_control))
    return _Outcomes(registered, p_open, opened, campaign, p_control, p_treatment, responded)


# Phone kinds: 0..7 valid styles, then the invalid kinds.
_INVALID = len(_PHONE_STYLES)
_BAD_LENGTH, _BAD_PREFIX, _LETTERS, _EMPTY, _NULL = range(_INVALID, _INVALID + 5)
_INVALID_MIX = np.array([0.30, 0.25, 0.15, 0.15, 0.15])
_MOBILE_SPACE = 7 * 10**9  # 1[3-9] followed by 9 digits


@dataclass(frozen=True)
class _BankPhones:
    """Phone numbers of bank customers and of the vendor-only users, all distinct."""

    true: Array  # int64 11-digit number each customer owns
    given: Array  # int64 number in the bank extract (a shared number for the copies)
    kind: Array  # int8: valid style 0..7 or an invalid kind
    shared: Array  # bool: another customer gives the same valid number
    copy: Array  # bool: gives someone else's number (so is never the vendor person of it)
    fresh: Array  # int64 numbers no bank customer owns, for vendor-only users


def _distinct_mobiles(n: int, rng: np.random.Generator) -> Array:
    """Return `n` distinct valid mobile numbers (int64) in random order."""
    values = np.empty(0, dtype=np.int64)
    while len(values) < n:  # one round almost always; a second one if collisions ate the margin
        extra = rng.integers(0, _MOBILE_SPACE, n + n // 500 + 100, dtype=np.int64)
        merged = np.sort(np.concatenate([values, extra]))
        values = merged[np.concatenate([[True], merged[1:] != merged[:-1]])]
    return 13 * 10**9 + rng.permutation(values)[:n]


def _bank_phones(n: int, n_fresh: int, rng: np.random.Generator) -> _BankPhones:
    """Return who owns which number, what the extract says, and numbers for vendor-only users."""
    # One draw for everybody, so vendor-only numbers can never be a bank customer's.
    everybody = _distinct_mobiles(n + n_fresh, rng)
    mobiles, fresh = everybody[:n], everybody[n:]
    kind = rng.choice(len(_PHONE_STYLES), size=n, p=_PHONE_STYLES).astype(np.int8)
    order = rng.permutation(n)
    n_pairs = round(n * _SHARED_PHONE_PAIRS)
    n_invalid = round(n * _INVALID_PHONE_SHARE)
    copies, owners = order[:n_pairs], order[n_pairs : 2 * n_pairs]
    invalid = order[2 * n_pairs : 2 * n_pairs + n_invalid]
    kind[invalid] = _INVALID + rng.choice(len(_INVALID_MIX), size=n_invalid, p=_INVALID_MIX)
    given = mobiles.copy()
    given[copies] = mobiles[owners]
    shared = np.zeros(n, dtype=bool)
    shared[copies] = shared[owners] = True
    copy = np.zeros(n, dtype=bool)
    copy[copies] = True
    return _BankPhones(mobiles, given, kind, shared, copy, fresh)


def _dirty_phones(phones: _BankPhones, rng: np.random.Generator) -> pl.Series:
    """Return the phone column as a bank extract writes it: many styles, a few unusable."""
    digits = pl.Series("d", phones.given).cast(pl.String)
    frame = pl.DataFrame({"d": digits, "k": phones.kind, "r": rng.integers(0, 10, len(digits))})
    d, k = pl.col("d"), pl.col("k")
    a, b, c = d.str.slice(0, 3), d.str.slice(3, 4), d.str.slice(7, 4)
    full_width = d.str.replace_many(
        [str(i) for i in range(10)], [chr(0xFF10 + i) for i in range(10)]
    )
    styles = [
        d,
        pl.concat_str([pl.lit("+86 "), a, pl.lit(" "), b, pl.lit(" "), c]),
        pl.concat_str([pl.lit("0086-"), d]),
        pl.concat_str([pl.lit("(86)"), d]),
        pl.concat_str([a, pl.lit("-"), b, pl.lit("-"), c]),
        pl.concat_str([a, pl.lit(" "), b, pl.lit(" "), c]),
        full_width,
        pl.concat_str([pl.lit("+86"), d]),
    ]
    invalid = {
        # One digit missing or one too many (a typo at the counter).
        _BAD_LENGTH: pl.when(pl.col("r") < 5)
        .then(d.str.slice(0, 10))
        .otherwise(pl.concat_str([d, pl.col("r").cast(pl.String)])),
        # A landline-like or mistyped second digit: 10x, 11x, 12x are no mobile prefixes.
        _BAD_PREFIX: pl.concat_str(
            [pl.lit("1"), (pl.col("r") % 3).cast(pl.String), d.str.slice(2)]
        ),
        _LETTERS: pl.concat_str([d.str.slice(0, 5), pl.lit("O"), d.str.slice(6)]),
        _EMPTY: pl.lit(""),
        _NULL: pl.lit(None, dtype=pl.String),
    }
    # Each row takes the style of its kind; a null style (kind _NULL) leaves the row null.
    chosen = [pl.when(k == code).then(style) for code, style in enumerate(styles)]
    chosen += [pl.when(k == code).then(style) for code, style in invalid.items()]
    return frame.select(pl.coalesce(chosen).alias("phone"))["phone"]


@dataclass(frozen=True)
class _Ids:
    """Customer ids and resident ID numbers as the extract writes them."""

    customer_id: Array  # int64, increasing with gaps, as a core banking system hands them out
    numbers: pl.Series  # String
    bad: Array  # bool: the check character is wrong on purpose


def _id_numbers(col: dict[str, Any], snapshot: datetime.date, rng: np.random.Generator) -> _Ids:
    """Return 18-character ID numbers whose birth date gives the age and whose parity the gender.

    Layout (GB 11643-1999): 6-digit district, birth date YYYYMMDD, 3-digit sequence whose last
    digit is odd for men, and the MOD 11-2 check character.
    """
    n = len(col["age"])
    customer_id = 1_000_000_000 + np.cumsum(rng.integers(1, 20, n))
    region = col["_region"]
    # Born within the year before the age-th birthday preceding the snapshot, so age is exact.
    day = 28 if (snapshot.month, snapshot.day) == (2, 29) else snapshot.day
    frame = pl.DataFrame(
        {
            "region": pl.Series([code for code, _ in _BRANCHES]).gather(region),
            "year": snapshot.year - col["age"].astype(np.int32),
            "back": rng.integers(0, 364, n),
            "seq": rng.integers(0, 500, n) * 2 + col["_male"],
        }
    )
    birth = pl.date(pl.col("year"), snapshot.month, day) - pl.duration(days=pl.col("back"))
    first17 = frame.select(
        pl.concat_str(
            pl.col("region"),
            birth.dt.strftime("%Y%m%d"),
            pl.col("seq").cast(pl.String).str.zfill(3),
        ).alias("id_number")
    )["id_number"]
    check = id_check_characters(first17)
    bad = rng.random(n) < _BAD_ID_SHARE
    alphabet = "0123456789X"
    index = check.replace_strict(list(alphabet), list(range(11)), return_dtype=pl.Int64).to_numpy()
    # A wrong check character: any of the ten others.
    index = np.where(bad, (index + rng.integers(1, 11, n)) % 11, index)
    lower = (index == 10) & (rng.random(n) < _LOWER_X_SHARE)
    final = pl.Series([*alphabet, "x"]).gather(np.where(lower, 11, index))
    numbers = (first17 + final).alias("id_number")
    return _Ids(customer_id=customer_id, numbers=numbers, bad=bad)


# Output columns of the bank extract after the identifiers, grouped as in the data mart.
_DEMOGRAPHICS = (
    "age", "gender", "marital", "education", "job", "city_tier", "household_size",
    "has_children", "is_local_resident", "annual_income",
)  # fmt: skip
_RELATIONSHIP = (
    "tenure_months", "customer_level", "n_products", "ukey_holder", "online_banking", "payroll",
    "credit_card", "credit_card_limit", "n_debit_cards", "wechat_bound", "sms_alerts",
    "has_relationship_manager", "months_since_contact", "complaints_12m", "social_security_card",
)  # fmt: skip
_ASSETS = (
    "aum_current", "aum_month_avg", "aum_year_avg", "aum_max_12m", "demand_deposit",
    "time_deposit", "time_deposit_count", "wealth_mgmt", "wealth_ratio", "funds", "insurance",
    "bonds", "precious_metals", "loan_balance", "mortgage_balance", "consumer_loan_balance",
    "credit_card_balance", "n_loans",
)  # fmt: skip
_TRANSACTIONS = (
    *(f"{c}_{m}" for c in _CHANNELS for m in ("txn_count_3m", "txn_amount_3m", "days_since_last")),
    "txn_count_3m", "txn_amount_3m", "max_single_txn_amount_3m", "salary_amount_3m",
    "inflow_amount_3m", "outflow_amount_3m", "transfer_in_count_3m", "transfer_out_count_3m",
    "utility_payment_count_3m", "active_months_12m",
)  # fmt: skip
FEATURE_COLUMNS = (*_DEMOGRAPHICS, *_RELATIONSHIP, *_ASSETS, *_TRANSACTIONS)


def _column(name: str, values: Any) -> pl.Series:
    """Return one extract column; NaN in a days-since column means 'no transaction' (null)."""
    if isinstance(values, pl.Series):
        return values.alias(name)
    if name.endswith("days_since_last"):
        return pl.Series(name, values).fill_nan(None).cast(pl.Int16)
    return pl.Series(name, values)


def _customer_frame(
    col: dict[str, Any], phone: pl.Series, ids: _Ids, outcomes: _Outcomes
) -> pl.DataFrame:
    """Return the bank extract: identifiers, ~70 features, the registration flag and the label."""
    registered = outcomes.registered
    return pl.DataFrame(
        [
            pl.Series("customer_id", ids.customer_id, dtype=pl.Int64),
            pl.Series([f"B{i + 1:03d}" for i in range(len(_BRANCHES))])
            .gather(col["_branch"])
            .alias("branch_id"),
            phone.alias("phone"),
            ids.numbers,
            *(_column(name, col[name]) for name in FEATURE_COLUMNS),
            pl.Series("mb_registered", registered),
            pl.Series("opened_mb", outcomes.opened).scatter(np.flatnonzero(registered), None),
        ]
    )


def _campaign_frame(ids: _Ids, outcomes: _Outcomes) -> pl.DataFrame:
    """Return the past campaign: who was offered (treatment) or held out, and who responded."""
    rows = np.flatnonzero(outcomes.campaign >= 0)
    return pl.DataFrame(
        {
            "campaign_id": pl.Series([_CAMPAIGN_ID]).gather(np.zeros(len(rows), dtype=np.int64)),
            "customer_id": ids.customer_id[rows],
            "treatment": outcomes.campaign[rows] == 1,
            "responded": outcomes.responded[rows],
        },
        schema={
            "campaign_id": pl.String,
            "customer_id": pl.Int64,
            "treatment": pl.Boolean,
            "responded": pl.Boolean,
        },
    )


# --------------------------------------------------------------------------------------------
# Vendor side
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Vendor:
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
    matched: Array  # bool per bank customer: in truth/intersection


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


def _vendor_population(
    config: WorldConfig,
    people: _People,
    col: dict[str, Any],
    phones: _BankPhones,
    presence_rng: np.random.Generator,
    rng: np.random.Generator,
) -> _Vendor:
    """Return the vendor's users: the covered bank customers plus fresh people, shuffled."""
    n = people.n
    n_vendor = round(config.vendor_ratio * n)
    valid = phones.kind < _INVALID
    # A customer giving someone else's number is never the vendor's person for that number.
    candidates = valid & ~phones.copy
    k = min(round(config.coverage * int(valid.sum())), int(candidates.sum()))
    # Gumbel top-k: a weighted sample without replacement of exactly k people, so coverage is
    # exact while seniors are rarer at the vendor than gamers.
    score = people.mixed(_PRESENCE) + presence_rng.gumbel(size=n)
    score = np.where(candidates, score, -np.inf)
    present = np.sort(np.argpartition(-score, k - 1)[:k]) if k else np.empty(0, dtype=np.int64)

    m = n_vendor - k
    persona_only, second_only, weight_only = _personas(m, rng)
    age_only = np.clip(rng.normal(_AGE[persona_only, 0], _AGE[persona_only, 1]), 18, 90)
    raw_digital = rng.standard_normal(m)
    fintech_only = _fintech(raw_digital, rng)
    shift = _mix(_DIGITAL_SHIFT, persona_only, second_only, weight_only)
    digital_only = raw_digital - 0.035 * (age_only - 40.0) + shift
    order = rng.permutation(n_vendor)  # vendor row r holds person order[r]
    persona = np.concatenate([people.persona[present], persona_only])[order]
    second = np.concatenate([people.second[present], second_only])[order]
    weight = np.concatenate([people.second_weight[present], weight_only])[order]
    digital = np.concatenate([col["_digital"][present], digital_only])[order]
    fintech = np.concatenate([people.fintech[present], fintech_only])[order]
    customer = np.concatenate([present, np.full(m, -1, dtype=np.int64)])[order]
    phone = np.concatenate([phones.true[present], phones.fresh[:m]])[order]

    mixed_median = _mix(_APPS_MEDIAN, persona, second, weight)
    n_apps = np.clip(
        np.rint(mixed_median * np.exp(0.3 * digital + 0.35 * rng.standard_normal(n_vendor))), 2, 150
    )
    n_tags = np.clip(
        np.rint(n_apps * _TAGS_PER_APP * np.exp(0.35 * rng.standard_normal(n_vendor))), 3, 400
    )
    half = _PROFILE_VARIANTS // 2
    variant = fintech * half + rng.integers(0, half, n_vendor)
    profile = (
        (persona.astype(np.int64) * _N_PERSONAS + second) * _PROFILE_VARIANTS + variant
    ).astype(np.int32)
    vendor_row = np.full(n, -1, dtype=np.int64)
    rows_of_present = np.empty(n_vendor, dtype=np.int64)
    rows_of_present[order] = np.arange(n_vendor)
    vendor_row[present] = rows_of_present[:k]
    matched = np.zeros(n, dtype=bool)
    matched[present] = True
    matched &= ~phones.shared
    return _Vendor(
        n=n_vendor,
        persona=persona,
        second=second,
        fintech=fintech,
        customer=customer,
        phone=phone,
        plus86=rng.random(n_vendor) < _VENDOR_PLUS86_SHARE,
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
class _Profiles:
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
    main = np.repeat(np.arange(_N_PERSONAS), _N_PERSONAS)
    second = np.tile(np.arange(_N_PERSONAS), _N_PERSONAS)
    weight = np.where(main == second, 0.0, _SECOND_WEIGHT)[:, None]
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


def _profiles(taxonomy: Taxonomy, rng: np.random.Generator) -> _Profiles:
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
    return _Profiles(app_rank, tag_rank, apps.height, tags.height, sessions)


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


def _vendor_chunk(
    vendor: _Vendor, profiles: _Profiles, users: slice, rng: np.random.Generator
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

    phone = pl.Series(vendor.phone[users]).cast(pl.String)
    phone = pl.select(
        pl.when(pl.Series(vendor.plus86[users])).then(pl.lit("+86") + phone).otherwise(phone)
    ).to_series()
    return pa.table(
        [
            phone.to_arrow().cast(pa.large_string()),
            _lists(app_off, app_ids),
            _lists(app_off, days),
            _lists(app_off, sessions),
            _lists(tag_off, tag_ids),
            _lists(tag_off, weights),
        ],
        schema=_VENDOR_SCHEMA,
    )


def _write_vendor_users(
    vendor: _Vendor,
    profiles: _Profiles,
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
    parquet = pq.ParquetWriter(path, _VENDOR_SCHEMA, **_PARQUET_OPTIONS)
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


# --------------------------------------------------------------------------------------------
# Ground truth and files
# --------------------------------------------------------------------------------------------
def _truth_frames(
    people: _People, ids: _Ids, vendor: _Vendor, outcomes: _Outcomes
) -> dict[str, pl.DataFrame]:
    """Return the ground-truth frames by relative path."""
    names = pl.Series(PERSONAS)
    only = np.flatnonzero(vendor.customer < 0)
    vendor_persona, vendor_second = vendor.persona[only], vendor.second[only]
    customer_id = pl.Series("customer_id", ids.customer_id, dtype=pl.Int64)
    bank_vendor_row = pl.Series("vendor_row", vendor.vendor_row).replace(-1, None)
    personas = pl.concat(
        [
            pl.DataFrame(
                [
                    customer_id,
                    bank_vendor_row,
                    names.gather(people.persona).alias("persona"),
                    names.gather(people.second)
                    .alias("second_persona")
                    .scatter(np.flatnonzero(people.second == people.persona), None),
                    pl.Series("fintech", people.fintech),
                ]
            ),
            pl.DataFrame(
                [
                    pl.repeat(None, len(only), dtype=pl.Int64, eager=True).alias("customer_id"),
                    pl.Series("vendor_row", only, dtype=pl.Int64),
                    names.gather(vendor_persona).alias("persona"),
                    names.gather(vendor_second)
                    .alias("second_persona")
                    .scatter(np.flatnonzero(vendor_second == vendor_persona), None),
                    pl.Series("fintech", vendor.fintech[only]),
                ]
            ),
        ]
    )
    null = np.flatnonzero(outcomes.registered)
    propensity = pl.DataFrame(
        [
            customer_id,
            pl.Series("mb_registered", outcomes.registered),
            pl.Series("p_open", outcomes.p_open).scatter(null, None),
            pl.Series("p_response_control", outcomes.p_control).scatter(null, None),
            pl.Series("p_response_treatment", outcomes.p_treatment).scatter(null, None),
            pl.Series("uplift", outcomes.p_treatment - outcomes.p_control).scatter(null, None),
        ]
    )
    matched = np.flatnonzero(vendor.matched)
    intersection = pl.DataFrame(
        {"customer_id": ids.customer_id[matched], "vendor_row": vendor.vendor_row[matched]},
        schema={"customer_id": pl.Int64, "vendor_row": pl.Int64},
    )
    return {
        WorldFiles.PERSONAS: personas,
        WorldFiles.PROPENSITY: propensity,
        WorldFiles.INTERSECTION: intersection,
    }


def _write(table: pa.Table, path: Path) -> str:
    """Return the sha256 of the Parquet file written from `table` with the fixed options."""
    pq.write_table(table, path, **_PARQUET_OPTIONS)
    return _sha256(path)


def _sha256(path: Path) -> str:
    """Return the hex sha256 of a file, read in 8 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(8 << 20):
            digest.update(block)
    return digest.hexdigest()
