"""One measured run of the bank's bucketed jobs on scale inputs (`labs.scale.inputs`).

`run_scale` runs the bank's stages on an inputs folder with one engine and times each:
"bank-keys" (`key_customers` on the extract: keyed hashing, then the shared-phone rule per
bucket), "vendor-partition" (`partition_by_key` of the vendor's keyed file with its lists; in this
process on every engine, it only moves bytes), "psi-join" (`join_keys`, carrying the lists into
the matches), "features" (`build_feature_buckets`: the point-in-time feature build from the
inputs' encrypted store, the snapshot's manifest task then one task per customer bucket, each
opening the store read-only) and "score" (`score_features` with the registered model on those
feature buckets, one task per bucket, as `fusion score --cluster` scores a cluster build).

The store holds the match the generator made (`labs.scale.store`), not the one the PSI join
stage writes: loading the vendor's batch and the matches into DuckDB is ingest's and the
match's work, outside this curve, so the store is built once with the inputs, and the run
records how many matched customers the build found for the bench to hold against the join's
count. Each feature task's DuckDB is held to `_TASK_MEMORY`. `measure_scale` runs it in a fresh
subprocess and samples the resident memory of that process and all its children (the
LocalCluster's nannies and workers) at a fixed interval, so a peak is one run's own.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import psutil  # installed with dask.distributed, which samples workers' memory with it
from rich.console import Console

from contracts.errors import FusionError
from fusion.jobs import (
    ClusterEngine,
    build_feature_buckets,
    join_keys,
    key_customers,
    parse_cluster,
    partition_by_key,
    score_features,
)
from fusion.registry import Registry
from fusion.store import StoreConfig
from labs.scale.inputs import MODEL, ScaleInputs
from labs.scale.store import SNAPSHOT
from matcher.keyring import Keyring

__all__ = ["STAGES", "ScaleRun", "measure_scale", "run_scale"]

STAGES = ("bank-keys", "vendor-partition", "psi-join", "features", "score")
_VENDOR_COLUMNS = ("app_ids", "tag_ids")
_SCORED = ("customer_id", "decile")  # the score columns whose bytes the digest covers
# DuckDB's memory in each feature task's read-only open of the store: its default, 80% of the
# machine's per open, would let two workers' buffer pools exceed the run's 8 GB budget, and the
# snapshot manifest's pick over 6.4M matches (10M customers) does not fit in 1 GB.
_TASK_MEMORY = "2GB"


@dataclass(frozen=True, kw_only=True)
class ScaleRun:
    """One run of the bank's stages on one inputs folder with one engine, and what it measured.

    `seconds`, `cpu_seconds`, `rows` and `windows` (wall-clock start and end, for matching memory
    samples) are per stage of `STAGES`; CPU time, unlike wall time, hardly moves when other work
    shares the machine; `peak_rss` and `stage_peak_rss` (bytes, the resident memory of the
    run's whole process tree) are filled in by `measure_scale`, 0 / empty otherwise.
    """

    customers: int
    vendor_users: int
    engine: str
    workers: int
    startup_s: float
    load: float  # the machine's 1-minute load average as the run began
    seconds: dict[str, float]
    cpu_seconds: dict[str, float]  # CPU time of the whole process tree (driver and workers)
    rows: dict[str, int]
    windows: dict[str, tuple[float, float]]
    keyed: int
    invalid: int
    duplicated: int
    matches: int
    matches_digest: str
    featured: int  # customers the feature build wrote
    featured_matched: int  # of them, with vendor data at the snapshot
    scored: int
    scores_digest: str
    peak_rss: int = 0
    stage_peak_rss: dict[str, int] = field(default_factory=dict)

    @property
    def total_s(self) -> float:
        """Return the seconds of all stages (the engine's start not counted)."""
        return sum(self.seconds[stage] for stage in STAGES)

    def rows_per_s(self, stage: str) -> float:
        """Return the rows a stage took in per second."""
        seconds = self.seconds[stage]
        return self.rows[stage] / seconds if seconds > 0 else float("inf")

    def to_dict(self) -> dict[str, Any]:
        """Return the run as JSON-ready values."""
        return asdict(self)

    @classmethod
    def from_dict(cls, document: dict[str, Any]) -> ScaleRun:
        """Return the run that to_dict() gave `document`."""
        values = dict(document)
        values["windows"] = {k: (float(a), float(b)) for k, (a, b) in values["windows"].items()}
        return cls(**values)


def _digest(files: tuple[str, ...], columns: tuple[str, ...]) -> str:
    """Return the SHA-256 of `columns` of `files`, row by row in file order (one file at a time)."""
    digest = hashlib.sha256()
    for file in files:
        frame = pl.read_parquet(file, columns=list(columns))
        for column in columns:
            digest.update(np.ascontiguousarray(frame[column].to_numpy()).tobytes())
    return digest.hexdigest()


class _Clock:
    """Per stage: wall seconds, CPU seconds of the whole process tree and the wall-clock window."""

    def __init__(self) -> None:
        self.me = psutil.Process()
        self.seconds: dict[str, float] = {}
        self.cpu_seconds: dict[str, float] = {}
        self.windows: dict[str, tuple[float, float]] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time the block as stage `name` (a block that raises records nothing)."""
        wall, cpu, began = time.time(), _tree_cpu(self.me), time.perf_counter()
        yield
        self.seconds[name] = time.perf_counter() - began
        self.cpu_seconds[name] = _tree_cpu(self.me) - cpu
        self.windows[name] = (wall, time.time())


def run_scale(
    inputs: ScaleInputs,
    out: Path,
    *,
    cluster: str | None = None,
    console: Console | None = None,
) -> ScaleRun:
    """Return the timings and results of the bank's stages (`STAGES`) on `inputs`, on one engine.

    Each stage is timed alone (see the module's docstring for what each runs). After the
    timings, the matches and scores are read back file by file for digests that must not depend
    on the engine.

    Args:
        inputs: the generated inputs (`scale_inputs`).
        out: the run's folder; its job folders are left there for the caller to remove.
        cluster: an engine spec as `parse_cluster` takes it (None: in-process).
        console: where the stages draw their progress bars; None draws none.
    """
    keyring = Keyring.open(inputs.keyring)
    epoch = keyring.current_salt()
    clock = _Clock()
    load = os.getloadavg()[0]
    begin = time.perf_counter()
    with parse_cluster(cluster, console=console) as engine:
        if isinstance(engine, ClusterEngine):
            # Workers import the jobs' modules (polars, xgboost, scipy: slow to import) before any
            # stage clock starts, as a long-lived cluster's workers have; the start-up is reported.
            engine.client.run(_ready)
        startup_s, workers = time.perf_counter() - begin, engine.workers
        with clock.stage("bank-keys"):
            keyed = key_customers(engine, inputs.bank, epoch, out / "keys")
        with clock.stage("vendor-partition"):
            vendor = partition_by_key(inputs.vendor, out / "vendor", columns=_VENDOR_COLUMNS)
        with clock.stage("psi-join"):
            matches = join_keys(engine, keyed, vendor, out / "matches", columns=_VENDOR_COLUMNS)
        with clock.stage("features"):
            built = build_feature_buckets(
                engine,
                StoreConfig(inputs.store, memory_limit=_TASK_MEMORY),
                keyring.store_key(),
                snapshot_date=SNAPSHOT,
                salt_epoch=epoch.epoch_id,
                out=out / "features",
            )
        with clock.stage("score"):
            scores = score_features(engine, built, Registry(inputs.registry), MODEL, out / "scores")
    return ScaleRun(
        customers=keyed.customers,
        vendor_users=vendor.rows,
        engine=cluster or "in-process",
        workers=workers,
        startup_s=startup_s,
        load=load,
        seconds=clock.seconds,
        cpu_seconds=clock.cpu_seconds,
        rows={
            "bank-keys": keyed.customers,
            "vendor-partition": vendor.rows,
            "psi-join": keyed.keyed + vendor.rows,
            "features": built.rows,
            "score": scores.rows,
        },
        windows=clock.windows,
        keyed=keyed.keyed,
        invalid=keyed.invalid,
        duplicated=keyed.duplicated,
        matches=matches.rows,
        matches_digest=_digest(matches.files, ("customer_id",)),
        featured=built.rows,
        featured_matched=built.matched,
        scored=scores.rows,
        scores_digest=_digest(scores.files, _SCORED),
    )


def _tree_cpu(root: psutil.Process) -> float:
    """Return the CPU seconds (user + system) of `root` and its living descendants so far."""
    total = 0.0
    for process in [root, *root.children(recursive=True)]:
        try:
            times = process.cpu_times()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        total += times.user + times.system
    return total


def _ready() -> int:
    """Return this worker's process id; unpickling it imported this module and the engine's."""
    return os.getpid()


def _tree_rss(root: psutil.Process) -> int:
    """Return the resident bytes of `root` and all its descendants (0 once it has gone)."""
    try:
        processes = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for process in processes:
        try:
            total += process.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue  # a worker that ended between the listing and the read
    return total


def _kill_tree(root: psutil.Process) -> None:
    """Kill `root` (a run this module started) and every process it started."""
    try:
        processes = [*root.children(recursive=True), root]
    except psutil.NoSuchProcess:
        return
    for process in processes:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            continue
    psutil.wait_procs(processes, timeout=10)


# The run's own process: everything it needs arrives as arguments, the result leaves as JSON.
_LAUNCH = (
    "import json, sys; from pathlib import Path; from rich.console import Console; "
    "from labs.scale import ScaleInputs, run_scale; "
    "inputs, out, cluster, bars, result = sys.argv[1:]; "
    "run = run_scale(ScaleInputs.open(Path(inputs)), Path(out), cluster=cluster or None, "
    "console=Console() if bars == 'bars' else None); "
    "Path(result).write_text(json.dumps(run.to_dict()))"
)


def measure_scale(
    inputs: ScaleInputs,
    out: Path,
    *,
    cluster: str | None = None,
    interval: float = 0.2,
    progress: bool = True,
) -> ScaleRun:
    """Return `run_scale` on `inputs`, run in a fresh process, with its peak resident memory.

    The run's process and all its children (a LocalCluster's nannies and workers) are sampled
    every `interval` seconds; the peak is the largest sum over one sample, and each stage's peak
    the largest within its window. RSS counts pages shared between processes in each of them,
    so the sum is an upper bound of what the run holds. The run's stderr (Dask's logs) goes to
    `<out>/run.log`; its progress bars go to this process's stdout unless `progress` is False.
    """
    out.mkdir(parents=True, exist_ok=True)
    result, log = out / "run.json", out / "run.log"
    result.unlink(missing_ok=True)
    arguments = [str(inputs.root), str(out / "jobs"), cluster or "", "bars" if progress else "-"]
    samples: list[tuple[float, int]] = []
    with log.open("wb") as sink:
        child = subprocess.Popen(  # noqa: S603 - our own interpreter, our own arguments
            [sys.executable, "-c", _LAUNCH, *arguments, str(result)],
            stdout=None if progress else subprocess.DEVNULL,
            stderr=sink,
        )
    root = psutil.Process(child.pid)
    try:
        while child.poll() is None:
            samples.append((time.time(), _tree_rss(root)))
            time.sleep(interval)
    finally:
        if child.poll() is None:  # interrupted: leave no run, nanny or worker behind
            _kill_tree(root)
            child.wait()
    if child.returncode != 0 or not result.exists():
        tail = log.read_text(encoding="utf-8", errors="replace")[-3000:]
        raise FusionError(
            f"the scale run of {inputs.summary.customers:,} customers on "
            f"{cluster or 'in-process'} exited with {child.returncode}; its log ends:\n{tail}"
        )
    run = ScaleRun.from_dict(json.loads(result.read_text(encoding="utf-8")))
    stage_peaks = {
        stage: max(
            (rss for at, rss in samples if begin - interval <= at <= end + interval), default=0
        )
        for stage, (begin, end) in run.windows.items()
    }
    return replace(
        run, peak_rss=max((rss for _, rss in samples), default=0), stage_peak_rss=stage_peaks
    )
