"""The demo: everything the platform does, end to end, on a synthetic world.

world -> bank and vendor keyrings -> vendor pack (normalise, keyed hash or OPRF seal, seal the
batch) -> bank ingest (verify, open, contract, load into the encrypted store) -> match (salted
join, or OPRF request -> vendor answer -> open matched rows) -> features -> train (acquisition,
rescue, uplift) -> score -> target lists per branch -> HTML reports -> two campaigns through
every stage (declare, plan, deliver, the world's responses, readout against control: see
`labs.demo_campaigns`) -> two journey strategies over the journey world's 100 days, read out
beside the truth (`labs.demo_journeys`) -> demo-summary.json.

`run_demo` is what `fusion demo` runs and what the benchmarks call for a served run folder. It is
the only caller of the pipeline that reads the world's ground truth: the true uplift it passes to
training scores the uplift models against what the world really did.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from contracts.schemas import MatchMode
from fusion.features import FeatureSet
from fusion.ingest import IngestOutcome
from fusion.lists import TargetLists
from fusion.models.acquisition import AcquisitionConfig
from fusion.models.campaign_outcomes import learn_from_campaign
from fusion.models.design import TEST, design_matrix, split_customers
from fusion.models.scenarios import BUILT_IN
from fusion.models.targeting import uplift_correlation
from fusion.pipeline.bank import Bank, LedgerCount, ingest_batches, ledger_counts, open_bank
from fusion.pipeline.feature_tables import BuiltFeatures, build_snapshot_features
from fusion.pipeline.matching import MatchOutcome, match_oprf_locally, match_report, match_salted
from fusion.pipeline.modelling import (
    model_report,
    score_and_list,
    train_models,
    train_scenario_models,
)
from fusion.progress import Progress, report_to
from fusion.runfolder import RunFolder
from fusion.training import ScenarioRun, TrainingRun
from labs.demo_campaigns import DemoCampaigns, run_campaigns
from labs.demo_journeys import DemoJourneys, run_journeys
from labs.world import WorldConfig, WorldFiles, WorldSummary, generate_world
from matcher.atomic import write_atomic
from matcher.keyring import init_local_pair
from matcher.pack import PackResult, pack_users

__all__ = [
    "SCENARIOS",
    "SUMMARY_FILE",
    "VENDOR_ID",
    "BankSide",
    "DemoSummary",
    "learned_uplift",
    "run_demo",
    "true_uplift",
]

SUMMARY_FILE = "demo-summary.json"
VENDOR_ID = "vendor-a"
SCENARIOS = ("mb-activation", "credit-card", "aum-growth")  # beside mobile-banking


@dataclass(frozen=True)
class BankSide:
    """What the bank's store gave in one session: batches, match, features, ledger, report."""

    batches: list[IngestOutcome]
    match: MatchOutcome
    features: BuiltFeatures
    match_report: Path
    ledger: dict[str, LedgerCount]


@dataclass(frozen=True)
class DemoSummary:
    """Everything a demo run made and measured; `to_dict` is its demo-summary.json."""

    folder: RunFolder
    snapshot_date: date
    world: WorldSummary
    pack: PackResult
    bank: BankSide
    training: TrainingRun
    lists: TargetLists
    model_report: Path
    campaigns: DemoCampaigns | None = None
    scenarios: tuple[ScenarioRun, ...] = ()
    learning: dict[str, Any] | None = None
    journeys: DemoJourneys | None = None

    @property
    def summary_file(self) -> Path:
        """Return the path of the run's demo-summary.json."""
        return self.folder.root / SUMMARY_FILE

    def to_dict(self) -> dict[str, object]:
        """Return the summary as demo-summary.json holds it."""
        summary: dict[str, object] = {"world": self.world.to_dict()}
        if self.bank.match.oprf is not None:
            summary["oprf"] = self.bank.match.oprf.to_dict()
        summary["report"] = str(self.bank.match_report)
        summary["model_report"] = str(self.model_report)
        summary["models"] = self.training.summary()
        summary["lists"] = {name: frame.height for name, frame in self.lists.lists.items()}
        summary["batches"] = [outcome.to_dict() for outcome in self.bank.batches]
        summary["match"] = self.bank.match.to_dict()
        summary["ledger"] = {status: n.to_dict() for status, n in self.bank.ledger.items()}
        if self.campaigns is not None:
            summary["campaigns"] = self.campaigns.to_dict()
        summary["scenarios"] = [run.summary() for run in self.scenarios]
        if self.learning is not None:
            summary["learning"] = self.learning
        if self.journeys is not None:
            summary["journeys"] = self.journeys.to_dict()
        return summary


def _now() -> datetime:
    return datetime.now(UTC)


@contextmanager
def _step(progress: Progress, stage: str) -> Iterator[None]:
    """Report `stage` as started, then as done when the block ends."""
    progress(stage, 0.0)
    yield
    progress(stage, 1.0)


def _within(progress: Progress, step: str) -> Progress:
    """Return a callback reporting a sub-job's stages under the demo step `step`."""
    return lambda stage, fraction: progress(f"{step}: {stage}", fraction)


def run_demo(
    out: Path,
    *,
    customers: int = 100_000,
    seed: int = 7,
    mode: MatchMode = MatchMode.SALTED,
    progress: Progress | None = None,
    clock: Callable[[], datetime] = _now,
    campaigns: bool = True,
    scenarios: bool = True,
) -> DemoSummary:
    """Return the summary of a whole demo run written under `out` (emptied first).

    Args:
        out: the run folder; whatever it held is removed.
        customers: bank customers of the synthetic world (the vendor has about three times as
            many users).
        seed: the world's seed: same seed, same world, same figures.
        mode: how the vendor's rows are keyed and matched (salted keyed hash, or OPRF).
        progress: called with (stage, fraction done) as the steps run.
        clock: the time of the bank's jobs (ingest, match, registry).
        campaigns: run the two demo campaigns through every stage after the lists (their
            clock is simulated, window after window from the snapshot date), then learn an
            uplift model from the coupon campaign's outcomes (`learned_uplift`), then run the
            two journey strategies over the journey world's 100 days (`labs.demo_journeys`).
        scenarios: train the in-bank and fused models of `SCENARIOS` too (model report).
    """
    report = report_to(progress)
    if out.exists():
        shutil.rmtree(out)
    folder = RunFolder(out).ensure()
    config = WorldConfig(customers=customers, seed=seed)
    world = generate_world(config, folder.world, progress=_within(report, "world"))
    bank_keyring, vendor = init_local_pair(
        folder.bank_keys, folder.vendor_keys, vendor_id=VENDOR_ID
    )
    with _step(report, f"vendor: pack ({mode})"):
        # The vendor's data is as of the bank's snapshot date (its batch's created_at).
        packed = pack_users(
            WorldFiles(folder.world).vendor_users,
            folder.inbox.inbox / f"{VENDOR_ID}-0001.sealed",
            keyring=vendor,
            now=datetime.combine(config.snapshot_date, time(6), tzinfo=UTC),
            mode=mode,
        )
    with open_bank(folder, keyring=bank_keyring) as bank:
        bank_side = _bank_side(bank, packed, config.snapshot_date, report, clock)
    campaign = pl.read_parquet(WorldFiles(folder.world).campaign)
    features = bank_side.features.features
    training = train_models(
        folder,
        features,
        campaign,
        now=clock(),
        true_uplift=true_uplift(WorldFiles(folder.world), features),
        progress=_within(report, "train"),
    )
    outcomes = pl.read_parquet(WorldFiles(folder.world).outcomes)
    scenario_runs = tuple(
        train_scenario_models(
            folder,
            features,
            BUILT_IN[name],
            outcomes=outcomes,
            now=clock(),
            progress=_within(report, f"train {name}"),
        )
        for name in (SCENARIOS if scenarios else ())
    )
    lists = score_and_list(folder, features, progress=_within(report, "score"))
    with _step(report, "model report"):
        page = model_report(folder, training, features, campaign, lists, scenario_runs)
    ran, learning, journeys = None, None, None
    if campaigns:
        with open_bank(folder, keyring=bank_keyring) as bank:
            ran = run_campaigns(
                bank,
                WorldFiles(folder.world),
                start=config.snapshot_date + timedelta(days=1),
                seed=seed,
                progress=report,
            )
            with _step(report, "learn from food-coupon-sms"):
                learning = learned_uplift(bank, features, training, WorldFiles(folder.world))
            journeys = run_journeys(bank, WorldFiles(folder.world), seed=seed, progress=report)
    summary = DemoSummary(
        folder, config.snapshot_date, world, packed, bank_side, training, lists, page, ran,
        scenario_runs, learning, journeys,
    )  # fmt: skip
    write_atomic(summary.summary_file, json.dumps(summary.to_dict(), indent=2, default=str))
    return summary


def _bank_side(
    bank: Bank,
    packed: PackResult,
    snapshot_date: date,
    progress: Progress,
    clock: Callable[[], datetime],
) -> BankSide:
    """Return what the bank does with the vendor's batch: ingest, match, features, report."""
    with _step(progress, "bank: ingest"):  # the batch brings its taxonomy into the store
        batches = ingest_batches(bank, clock=clock)
    extract = pl.read_parquet(WorldFiles(bank.folder.world).customers)
    if packed.mode == MatchMode.SALTED:
        epoch_id = bank.keyring.current_salt().epoch_id
        with _step(progress, "bank: match"):
            matched = match_salted(bank, extract, snapshot_date=snapshot_date, now=clock())
    else:
        epoch_id = packed.salt_epoch
        matched = match_oprf_locally(
            bank, extract, snapshot_date=snapshot_date, now=clock(), epoch=epoch_id,
            progress=progress,
        )  # fmt: skip
    with _step(progress, "bank: features"):
        features = build_snapshot_features(bank, snapshot_date=snapshot_date, epoch=epoch_id)
    with _step(progress, "bank: match report"):
        page = match_report(bank, snapshot_date=snapshot_date, salt_epoch=epoch_id)
    return BankSide(batches, matched, features, page, ledger_counts(bank.store))


def true_uplift(world: WorldFiles, features: FeatureSet) -> np.ndarray[Any, Any] | None:
    """Return the world's true uplift per feature row, or None when the world has no truth."""
    if not world.propensity.exists():
        return None
    joined = features.table.select("customer_id").join(
        pl.read_parquet(world.propensity, columns=["customer_id", "uplift"]),
        on="customer_id",
        how="left",
        maintain_order="left",
    )
    return joined["uplift"].to_numpy()


def learned_uplift(
    bank: Bank, features: FeatureSet, training: TrainingRun, world: WorldFiles
) -> dict[str, Any]:
    """Return the coupon model learnt from food-coupon-sms against the past A/B file's, on truth.

    Both models score the held-out customers (the test split, which neither trained on) not on
    mobile banking; each is judged by the correlation of its prediction with the world's true
    uplift, and by the true incremental responses of its top 30%.
    """
    truth = true_uplift(world, features)
    learned = learn_from_campaign(bank.store, features, "food-coupon-sms", true_uplift=truth)
    split = AcquisitionConfig()
    part = split_customers(
        features.table["customer_id"].to_numpy(), seed=split.seed, valid=split.valid_share,
        test=split.test_share,
    )  # fmt: skip
    known = np.isfinite(np.asarray(truth, dtype=np.float64)) if truth is not None else None
    if known is None:
        return {"campaign": "food-coupon-sms", "rows": learned.metadata["rows"]}
    rows = np.flatnonzero((part == TEST) & known)
    true = np.asarray(truth)[rows]
    found: dict[str, Any] = {"campaign": "food-coupon-sms", "rows": learned.metadata["rows"]}
    for label, result in (("past_ab", training.uplift), ("learnt", learned)):
        predicted = result.model.predict(design_matrix(features, result.spec, rows))
        top = np.argsort(-predicted, kind="stable")[: round(0.3 * len(rows))]
        found[label] = {
            "learner": result.best,
            # A learner that stopped at its first round ranks nobody: no correlation.
            "correlation_with_true_uplift": (
                uplift_correlation(predicted, true) if np.ptp(predicted) > 0 else None
            ),
            "true_incremental_top_30": float(true[top].sum()),
        }
    return found
