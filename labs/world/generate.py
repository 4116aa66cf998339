"""Generation of a whole world: draw the bank, then the vendor, write every file and the manifest.

Each part of the world draws from its own random stream spawned from the seed, so the same config
gives the same bytes. Two writer threads compress and write while the main thread generates: one
for the big vendor file (row group by row group, in order), one for every other file.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from fusion.progress import Progress, report_to
from labs.world.bank import Ids, bank_features, customer_frame, id_numbers
from labs.world.campaign import Outcomes, campaign_frame, draw_outcomes
from labs.world.config import WorldConfig, WorldSummary, validated_taxonomy
from labs.world.files import WorldFiles, file_sha256, write_parquet
from labs.world.identifiers import (
    Devices,
    bank_devices,
    changed_numbers,
    identifier_streams,
    with_vendor_identifiers,
)
from labs.world.personas import N_PERSONAS, PERSONAS, People, draw_people
from labs.world.phones import INVALID, BankPhones, bank_phones, dirty_phones, distinct_mobiles
from labs.world.scenarios import draw_scenarios, scenario_frames
from labs.world.truth import Identifiers, truth_frames
from labs.world.vendor import Vendor, build_profiles, vendor_population, write_vendor_users

__all__ = ["generate_world"]

Array = np.ndarray[Any, Any]

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
    "scenarios",  # last: the streams before it draw what they drew without it
)


@dataclass(frozen=True)
class _Bank:
    """Everything drawn for the bank's customers, latent and written."""

    people: People
    col: dict[str, Any]  # feature columns by name (see labs.world.bank)
    phones: BankPhones
    phone_column: pl.Series
    ids: Ids
    outcomes: Outcomes
    devices: Devices  # the device ids the bank's app knows


def generate_world(
    config: WorldConfig, out: Path, *, progress: Progress | None = None
) -> WorldSummary:
    """Return the summary of the world written under `out` (same config -> same file bytes)."""
    start = time.perf_counter()
    taxonomy = validated_taxonomy(config)
    report = report_to(progress)
    files = WorldFiles(Path(out))
    for folder in ("bank", "vendor", "truth"):
        (files.root / folder).mkdir(parents=True, exist_ok=True)
    seeds = dict(
        zip(_STREAMS, np.random.SeedSequence(config.seed).spawn(len(_STREAMS)), strict=True)
    )
    rng = {name: np.random.Generator(np.random.PCG64(seed)) for name, seed in seeds.items()}
    rng["id_bank"], rng["id_vendor"] = identifier_streams(config.seed)  # streams apart
    n_vendor = round(config.vendor_ratio * config.customers)

    with (
        ThreadPoolExecutor(max_workers=1, thread_name_prefix="world-files") as writer,
        ThreadPoolExecutor(max_workers=1, thread_name_prefix="world-vendor") as vendor_writer,
    ):
        report("bank customers", 0.0)
        # The rankings need no bank data: the idle writer builds them while the bank is drawn.
        profiles = writer.submit(build_profiles, taxonomy, rng["profiles"])
        bank = _draw_bank(config, n_vendor, rng, report)
        digests = _write_bank(bank, files, writer)
        drawn = draw_scenarios(bank.people, bank.col, bank.outcomes.registered, rng["scenarios"])
        for name, frame in zip(
            (files.OUTCOMES, files.SCENARIOS), scenario_frames(bank.ids, drawn), strict=True
        ):
            digests[name] = writer.submit(write_parquet, frame.to_arrow(), files.root / name)
        report("bank customers", 1.0)

        report("vendor users", 0.0)
        vendor = vendor_population(
            config, bank.people, bank.col, bank.phones, rng["presence"], rng["vendor"]
        )
        vendor = with_vendor_identifiers(
            vendor, bank.ids, bank.devices, config.snapshot_date, rng["id_vendor"]
        )
        truth = truth_frames(
            bank.people, bank.ids, vendor, bank.outcomes, Identifiers(bank.phones, bank.devices)
        )
        for name, frame in truth.items():
            digests[name] = writer.submit(write_parquet, frame.to_arrow(), files.root / name)
        write_vendor_users(
            vendor, profiles.result(), seeds["lists"], files.vendor_users, vendor_writer, report
        )
        digests[files.VENDOR_USERS] = vendor_writer.submit(file_sha256, files.vendor_users)
        report("vendor users", 1.0)
        report("files", 0.0)
        digest = {name: digests[name].result() for name in WorldFiles.PARQUET}
        report("files", 1.0)

    matches = truth[WorldFiles.INTERSECTION]
    summary = _summary(config, bank, vendor, matches, digest, time.perf_counter() - start)
    files.manifest.write_text(
        json.dumps({"config": config.to_dict(), "summary": summary.to_dict()}, indent=2) + "\n"
    )
    return summary


def _draw_bank(
    config: WorldConfig,
    n_vendor: int,
    rng: dict[str, np.random.Generator],
    report: Progress,
) -> _Bank:
    """Return the bank's customers: personas, features, phones, ID numbers and outcomes."""
    n = config.customers
    people = draw_people(n, rng["people"])
    col = bank_features(people, rng["bank"])
    # One draw for everybody, so vendor-only numbers can never be a bank customer's.
    everybody = distinct_mobiles(n + n_vendor, rng["phones"])
    phones = bank_phones(everybody[:n], rng["phones"], fresh=everybody[n:])
    phones = changed_numbers(phones, n_vendor - n, rng["id_bank"])
    phone_column = dirty_phones(phones, rng["phones"])
    ids = id_numbers(col, config.snapshot_date, rng["ids"])
    report("bank customers", 0.5)
    outcomes = draw_outcomes(people, col, rng["outcomes"])
    devices = bank_devices(outcomes.registered, rng["id_bank"])
    return _Bank(people, col, phones, phone_column, ids, outcomes, devices)


def _write_bank(
    bank: _Bank, files: WorldFiles, writer: ThreadPoolExecutor
) -> dict[str, Future[str]]:
    """Return the digests to come of the bank extract and the campaign, handed to `writer`."""
    outcomes = bank.outcomes
    customers = customer_frame(
        bank.col,
        bank.phone_column,
        bank.ids,
        registered=outcomes.registered,
        opened=outcomes.opened,
        device=bank.devices.column(),
    )
    campaign = campaign_frame(bank.ids, outcomes)
    return {
        files.CUSTOMERS: writer.submit(write_parquet, customers.to_arrow(), files.customers),
        files.CAMPAIGN: writer.submit(write_parquet, campaign.to_arrow(), files.campaign),
    }


def _rate(flags: Array, mask: Array) -> float:
    """Return the share of `flags` among rows in `mask` (0.0 when the mask is empty)."""
    n = int(mask.sum())
    return float(flags[mask].sum() / n) if n else 0.0


def _summary(
    config: WorldConfig,
    bank: _Bank,
    vendor: Vendor,
    matches: pl.DataFrame,
    digests: dict[str, str],
    seconds: float,
) -> WorldSummary:
    """Return what the generated world measures, with the digests of its files."""
    outcomes = bank.outcomes
    n_unregistered = int((~outcomes.registered).sum())
    in_campaign = outcomes.campaign >= 0
    treated = outcomes.campaign == 1
    mix = np.bincount(vendor.persona, minlength=N_PERSONAS) / vendor.n
    return WorldSummary(
        bank_customers=config.customers,
        vendor_users=vendor.n,
        true_coverage=matches.height / config.customers,
        matched_by={k: int(n) for k, n in matches["id_type"].value_counts().iter_rows()},
        changed_numbers=int(((bank.phones.given != bank.phones.true) & ~bank.phones.copy).sum()),
        label_rate=float(outcomes.opened[~outcomes.registered].sum() / max(n_unregistered, 1)),
        registered_rate=float(outcomes.registered.mean()),
        campaign_size=int(in_campaign.sum()),
        campaign_treated_share=float(treated.sum() / max(int(in_campaign.sum()), 1)),
        campaign_response_treatment=_rate(outcomes.responded, treated),
        campaign_response_control=_rate(outcomes.responded, outcomes.campaign == 0),
        persona_mix={p: float(s) for p, s in zip(PERSONAS, mix, strict=True)},
        invalid_phones=int((bank.phones.kind >= INVALID).sum()),
        duplicated_phones=int(bank.phones.shared.sum()),
        bad_id_checksums=int(bank.ids.bad.sum()),
        digests=digests,
        seconds=round(seconds, 3),
    )
