"""Bucketed jobs, run in this process or on a Dask cluster: keying, PSI joins, batch scoring.

Keys are 32-byte keyed hashes, so their first bits spread rows evenly: a job cuts its rows into
buckets by the key's first byte(s) (`bucket_of`, 256 buckets by default) or, before there is a
key, into row chunks, and runs one pure task per bucket or chunk. A task reads Parquet files and
writes Parquet files under the job's folder (any fsspec location: a local path in tests, shared
storage or an object store inside the bank on a cluster), so a worker holds one bucket at a time
and a 10M-customer run never holds a whole table in memory.

    engine = parse_cluster(None)              in this process (polars and DuckDB use every core)
    engine = parse_cluster("local:4")         a LocalCluster of 4 worker processes, TLS on
    engine = parse_cluster("tls://h:8786")    the bank's scheduler, certificates from Dask's config

The jobs: `key_customers` (a customer extract to match keys, with the rules of
`matcher.psi.customer_keys`), `join_keys` (the salted PSI join of bank and vendor key
partitions), `build_feature_buckets` (the point-in-time feature build, one task per bucket of
customers, each reading its bucket from the encrypted store), `score_features` (a feature table
scored in row chunks, or feature buckets scored bucket by bucket, by a registered model), and
the OPRF match's per-item steps in row chunks: `oprf_blind` and `oprf_finalize` (the bank's,
blinds drawn from one seed by fixed blocks of rows, `block_seed`, so `replay_blinds` gives the
same in one process) and `oprf_evaluate` (the vendor's).
Each gives the same rows on every engine, in the same order (bucket, then input order); equal to
the single-process functions they are built from, which the tests check.

Secrets never travel inside a task. A task's function and arguments sit in the scheduler's task
graph, which the dashboard and any connected client can read; a salt there would be a salt
published. `Engine.shared(secret)` ships the secret once per worker inside a Dask worker plugin
(over the cluster's TLS comms; the scheduler keeps it to hand to workers that join or restart)
and gives back a `SecretRef`: a random id a task may carry and resolve on its worker.

Failure: a task that raises is retried (`retries`, 2 by default); a task whose worker dies is
rescheduled by Dask on another worker (the nanny restarts the dead one, and the plugins reinstall
its secrets). Tasks are pure and write each file under a temporary name then rename it, so a
retried bucket rewrites the same rows and the job's result does not change.

Layout of a job's folder (intermediate files go when the job ends, on success or failure):

    <out>/keys/bucket=00007.parquet       key_customers: customer_id, key, key_status per bucket
    <out>/unkeyed/part-00000.parquet      key_customers: customers whose phone did not normalise
    <out>/bucket=00007.parquet            join_keys: customer_id, key and the vendor columns asked
    <out>/bucket=00007/                   build_feature_buckets: one bucket's FeatureSet folder
                                          (features.parquet, tags.npz, manifest.json)
    <out>/part-00000.parquet              score_features: the score frame of one row chunk
    <out>/bucket=00007.parquet            score_features of feature buckets: one bucket's scores
    <out>/part-00000.parquet              oprf_blind / oprf_evaluate / oprf_finalize: a chunk's
                                          blinded elements / evaluated elements / labels
    <out>/_work/                          row chunks and per-chunk bucket parts, while running
"""

from __future__ import annotations

import hashlib
import hmac
import importlib.metadata
import json
import os
import re
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field, replace
from datetime import date
from pathlib import Path
from types import TracebackType
from typing import Any, Generic, Self, TypeVar, cast

import fsspec
import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import scipy.sparse as sp
from distributed import Client, LocalCluster, as_completed
from distributed.diagnostics.plugin import WorkerPlugin
from distributed.security import Security
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)

from contracts.errors import ConfigError, IdentifierError, OprfError
from fusion.features import (
    CustomerBucket,
    FeatureManifest,
    FeatureSet,
    build_features,
    snapshot_manifest,
)
from fusion.models.classifier import ScoreModel
from fusion.models.distributed import cluster_workers
from fusion.registry import Registry
from fusion.scoring import REASON_DECILES, SCORE_SCHEMA, score_rows
from fusion.store import Store, StoreConfig
from matcher.identity import normalize_phones
from matcher.keyed_hash import KEY_BYTES, SaltEpoch, keyed_hash
from matcher.oprf import OprfServerKey, blind_evaluate, blind_with, draw_blinds, finalize
from matcher.oprf_match import BankRequest, derive_row_keys, seeded_rng

__all__ = [
    "BLIND_BLOCK_ROWS",
    "DEFAULT_BUCKETS",
    "FEATURE_BUCKETS",
    "OPRF_CHUNK_ROWS",
    "ClusterEngine",
    "Engine",
    "FeatureBuckets",
    "InProcessEngine",
    "KeyedCustomers",
    "Partitions",
    "Parts",
    "SecretRef",
    "TlsFiles",
    "block_seed",
    "bucket_of",
    "build_feature_buckets",
    "join_keys",
    "key_customers",
    "oprf_blind",
    "oprf_evaluate",
    "oprf_finalize",
    "oprf_row_keys",
    "parse_cluster",
    "partition_by_key",
    "progress_bar",
    "replay_blinds",
    "score_features",
]

DEFAULT_BUCKETS = 256  # the key's first byte
DEFAULT_RETRIES = 2
DEFAULT_CHUNK_ROWS = 1_000_000  # rows a keying task hashes (about 0.25 s on two cores)
SCORE_CHUNK_ROWS = 100_000  # rows a scoring task scores (SHAP reasons make a row ~0.1 ms)
# Customer buckets of a feature build. Each task scans the store's vendor tables once, so fewer,
# larger buckets than the key buckets: at the whole build's ~3 GB per 1M customers (measured,
# fusion.features), 10M customers in 32 buckets is ~1 GB a task.
FEATURE_BUCKETS = 32
_MAX_BUCKETS = 1 << 16  # bucket_of reads the key's first two bytes
_LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")
_STAGE = re.compile(r"^[a-z][a-z0-9-]{0,39}$")
_KEY_STATUS = pl.String

T = TypeVar("T")
R = TypeVar("R")
S = TypeVar("S")

Location = str | os.PathLike[str]

# -- secrets ------------------------------------------------------------------------------------

# This process's shared secrets by id: on a worker, what the plugins installed; in-process, what
# InProcessEngine.shared put here. Only SecretRef.resolve reads it.
_SECRETS: dict[str, object] = {}


@dataclass(frozen=True, slots=True)
class SecretRef(Generic[S]):
    """Names a secret that `Engine.shared` put on every worker; carries a random id, nothing else.

    A task holds the ref as an argument (task arguments are visible on the dashboard) and calls
    `resolve()` on its worker to get the secret itself.
    """

    secret_id: str

    def resolve(self) -> S:
        """Return the secret on this worker; raise if it was not shared here."""
        try:
            value = _SECRETS[self.secret_id]
        except KeyError:
            raise ConfigError(
                f"secret {self.secret_id} is not on this worker: it was never shared or its "
                "`engine.shared(...)` block has ended; submit the job inside that block",
                setting="secret",
            ) from None
        return cast(S, value)


class _SecretPlugin(WorkerPlugin):
    """Installs one secret in a worker's registry when the worker starts; removes it at the end.

    Dask pickles the plugin (the secret inside) and sends it over the cluster's comms, which are
    TLS; the scheduler keeps the pickle so a worker that joins or restarts gets it too. Its repr,
    the only form Dask logs, names the id and hides the value.
    """

    idempotent = False

    def __init__(self, secret_id: str, value: object) -> None:
        self.secret_id = secret_id
        self._value = value

    def setup(self, worker: Any) -> None:
        _SECRETS[self.secret_id] = self._value

    def teardown(self, worker: Any) -> None:
        _SECRETS.pop(self.secret_id, None)

    def __repr__(self) -> str:
        return f"_SecretPlugin(secret_id={self.secret_id!r}, value=<hidden>)"


def _new_secret_id() -> str:
    return f"bankfusion-secret-{uuid.uuid4().hex}"


# -- engines ------------------------------------------------------------------------------------


@contextmanager
def progress_bar(console: Console | None, stage: str, total: int) -> Iterator[Callable[[], None]]:
    """Yield a callable that advances the stage's progress bar by one step (no bar: no console)."""
    if console is None:
        yield lambda: None
        return
    columns = (
        TextColumn("{task.description:<14}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console) as bar:
        task = bar.add_task(stage, total=total)
        yield lambda: bar.advance(task)


def _check_stage(stage: str) -> str:
    if not _STAGE.match(stage):
        raise ConfigError(
            f"a stage name is 1-40 lower-case letters, digits and dashes starting with a letter "
            f"(it prefixes task keys); got {stage!r}",
            setting="stage",
        )
    return stage


class Engine(ABC):
    """Runs a job's per-bucket tasks and holds the job's secrets for them.

    `map_buckets(fn, tasks, stage=...)` returns `fn(task)` for every task, in task order; `fn`
    must be a module-level function (a cluster imports it by name) and pure: a task may run
    twice. `shared(secret)` makes a secret available to tasks through a `SecretRef`.
    """

    def __init__(self, *, console: Console | None = None) -> None:
        self.console = console

    @abstractmethod
    def map_buckets(self, fn: Callable[[T], R], tasks: Sequence[T], *, stage: str) -> list[R]:
        """Return fn(task) for each task, in task order, with a progress bar named `stage`."""

    @abstractmethod
    def shared(self, value: S) -> AbstractContextManager[SecretRef[S]]:
        """Put `value` on every worker for the block; yield the ref tasks resolve it by."""

    @property
    @abstractmethod
    def workers(self) -> int:
        """Return how many workers run tasks at once (1 in-process)."""

    @abstractmethod
    def close(self) -> None:
        """Release what the engine started."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class InProcessEngine(Engine):
    """Runs tasks one after another in this process; each task's polars work uses every core."""

    def map_buckets(self, fn: Callable[[T], R], tasks: Sequence[T], *, stage: str) -> list[R]:
        """Return fn(task) for each task, in task order; the first error stops the stage."""
        _check_stage(stage)
        results = []
        with progress_bar(self.console, stage, len(tasks)) as advance:
            for task in tasks:
                results.append(fn(task))
                advance()
        return results

    @contextmanager
    def shared(self, value: S) -> Iterator[SecretRef[S]]:
        """Keep `value` in this process's registry for the block; yield its ref."""
        ref: SecretRef[S] = SecretRef(_new_secret_id())
        _SECRETS[ref.secret_id] = value
        try:
            yield ref
        finally:
            _SECRETS.pop(ref.secret_id, None)

    @property
    def workers(self) -> int:
        return 1

    def close(self) -> None:
        """Nothing to release: the engine started nothing."""

    def __repr__(self) -> str:
        return "InProcessEngine()"


@dataclass(frozen=True, kw_only=True)
class TlsFiles:
    """PEM files for a client of the bank's cluster: its CA, this client's certificate and key."""

    ca_file: Path
    cert_file: Path
    key_file: Path

    def security(self) -> Security:
        """Return Dask's security settings for a client with these files, encryption required."""
        for what, path in (("ca_file", self.ca_file), ("cert_file", self.cert_file),
                           ("key_file", self.key_file)):  # fmt: skip
            if not Path(path).is_file():
                raise ConfigError(
                    f"TLS {what} {str(path)!r} is not a readable file; give the PEM files the "
                    "cluster's CA issued for this client (docs/cluster.md)",
                    setting=what,
                )
        return Security(
            require_encryption=True,
            tls_ca_file=str(self.ca_file),
            tls_client_cert=str(self.cert_file),
            tls_client_key=str(self.key_file),
        )


class ClusterEngine(Engine):
    """Runs tasks on a Dask cluster, retrying failed ones; reached over TLS unless on loopback.

    Build one with `start_local` (a LocalCluster of worker processes on this machine) or
    `connect` (the bank's scheduler), or wrap a `distributed.Client` (`close` closes it).
    """

    def __init__(
        self,
        client: Client,
        *,
        cluster: LocalCluster | None = None,
        retries: int = DEFAULT_RETRIES,
        console: Console | None = None,
    ) -> None:
        super().__init__(console=console)
        if retries < 0:
            raise ConfigError(f"retries must be >= 0, got {retries}", setting="retries")
        self.client = client
        self.cluster = cluster
        self.retries = retries

    @classmethod
    def start_local(
        cls,
        workers: int,
        *,
        retries: int = DEFAULT_RETRIES,
        console: Console | None = None,
        memory_limit: str | int = "auto",
    ) -> ClusterEngine:
        """Return an engine on a new LocalCluster: `workers` processes of one thread, TLS on.

        The certificates are made in memory for this cluster (`Security.temporary`), so only
        this client and these workers can join it; each worker's polars pool gets an equal share
        of the cores, and each worker's memory limit an equal share of the machine's ("auto").
        """
        if workers < 1:
            raise ConfigError(
                f"a local cluster needs >= 1 worker, got {workers}", setting="cluster"
            )
        security = Security.temporary()
        threads = max(1, (os.cpu_count() or 1) // workers)
        cluster = LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            # The scheduler serves /health and /metrics even without a dashboard, by default on
            # 8787 (a warning, an error under -W error, when another cluster holds it): a free
            # port on 127.0.0.1 instead.
            scheduler_kwargs={"dashboard": False, "dashboard_address": "127.0.0.1:0"},
            security=security,
            memory_limit=memory_limit,
            env={"POLARS_MAX_THREADS": str(threads)},
        )
        try:
            client = Client(cluster, security=security)
        except BaseException:
            cluster.close()
            raise
        try:
            # The nannies may still be starting their workers (seconds on a loaded machine): a
            # job (or xgboost.dask, which needs them all to place its rows) waits for every one.
            client.wait_for_workers(workers, timeout=120)
        except BaseException:
            client.close()
            cluster.close()
            raise
        return cls(client, cluster=cluster, retries=retries, console=console)

    @classmethod
    def connect(
        cls,
        address: str,
        *,
        security: Security | None = None,
        retries: int = DEFAULT_RETRIES,
        console: Console | None = None,
        timeout: float = 30.0,
    ) -> ClusterEngine:
        """Return an engine on the scheduler at `address`, once a worker is there to run tasks.

        Checks that the workers run this version of bankfusion: a task names its function by
        module, so a worker with other code would run other code.
        """
        try:
            client = Client(address, security=security, timeout=timeout)
        except (OSError, TimeoutError) as error:
            raise ConfigError(
                f"no Dask scheduler answered at {address} within {timeout:.0f} s ({error}); check "
                "the address, that the scheduler runs, and that its CA signed this client's "
                "certificate (docs/cluster.md)",
                setting="cluster",
            ) from None
        try:
            client.wait_for_workers(1, timeout=timeout)
            _check_workers(client)
        except BaseException as error:
            client.close()
            if isinstance(error, TimeoutError):
                raise ConfigError(
                    f"the scheduler at {address} has no worker after {timeout:.0f} s; start "
                    "workers with `dask worker` (docs/cluster.md)",
                    setting="cluster",
                ) from None
            raise
        return cls(client, retries=retries, console=console)

    @property
    def workers(self) -> int:
        return max(1, len(cluster_workers(self.client)))

    def map_buckets(self, fn: Callable[[T], R], tasks: Sequence[T], *, stage: str) -> list[R]:
        """Return fn(task) for each task, in task order, run on the cluster's workers.

        A raising task is retried `retries` times; a task whose worker dies is rescheduled by
        Dask (up to `distributed.scheduler.allowed-failures` times). When a task fails for good,
        the stage's other tasks are cancelled and its error is raised here.
        """
        _check_stage(stage)
        token = uuid.uuid4().hex[:12]
        futures = [
            self.client.submit(
                fn, task, key=f"{stage}-{i:05d}-{token}", retries=self.retries, pure=False
            )
            for i, task in enumerate(tasks)
        ]
        position = {future.key: i for i, future in enumerate(futures)}
        results: list[R | None] = [None] * len(futures)
        try:
            with progress_bar(self.console, stage, len(futures)) as advance:
                for future in as_completed(futures):
                    results[position[future.key]] = future.result()
                    advance()
        except BaseException:
            self.client.cancel(futures)
            raise
        return cast(list[R], results)

    @contextmanager
    def shared(self, value: S) -> Iterator[SecretRef[S]]:
        """Install `value` on every worker (and any that joins) for the block; yield its ref."""
        ref: SecretRef[S] = SecretRef(_new_secret_id())
        self.client.register_plugin(_SecretPlugin(ref.secret_id, value), name=ref.secret_id)
        try:
            yield ref
        finally:
            self.client.unregister_worker_plugin(ref.secret_id)

    def close(self) -> None:
        """Close the client, then the LocalCluster if this engine started it."""
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()

    def __repr__(self) -> str:
        return f"ClusterEngine({self.client.scheduler.address if self.client.scheduler else ''})"


def _installed_version() -> str:
    try:
        return importlib.metadata.version("bankfusion")
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _check_workers(client: Client) -> None:
    """Raise unless every worker imports this module at this process's bankfusion version."""
    ours = _installed_version()
    try:
        theirs = client.run(_installed_version)
    except ImportError as error:
        raise ConfigError(
            f"the cluster's workers cannot import bankfusion ({error}); install bankfusion "
            f"{ours} in the workers' environment",
            setting="cluster",
        ) from None
    differ = [v for v in theirs.values() if v != ours]
    if differ:
        raise ConfigError(
            f"{len(differ)} worker(s) run bankfusion {', '.join(sorted(set(differ)))}, this "
            f"client {ours}; install the same version everywhere",
            setting="cluster",
        )


def parse_cluster(
    spec: str | None,
    *,
    tls: TlsFiles | None = None,
    retries: int = DEFAULT_RETRIES,
    console: Console | None = None,
    timeout: float = 30.0,
) -> Engine:
    """Return the engine a `--cluster` value asks for.

    Args:
        spec: None, "" or "local": in this process. "local:N": a LocalCluster of N worker
            processes on this machine, TLS with in-memory certificates. "tls://HOST:PORT": the
            scheduler there. "tcp://127.0.0.1:PORT" (or localhost): a scheduler on this machine
            without TLS; plain tcp to any other host is refused, secrets would cross in clear.
        tls: the client's PEM files for a tls:// scheduler; None takes them from Dask's config
            (`distributed.comm.tls.ca-file`, `.client.cert`, `.client.key`).
        retries: how many times a raising task is run again.
        console: where progress bars go; None draws none.
        timeout: seconds to wait for the scheduler and for its first worker.
    """
    text = (spec or "").strip()
    if text in ("", "local"):
        return InProcessEngine(console=console)
    if text.startswith("local:"):
        count = text.removeprefix("local:")
        if not count.isdigit() or int(count) < 1:
            raise ConfigError(
                f"--cluster local:N takes a worker count N >= 1, got {text!r}", setting="cluster"
            )
        return ClusterEngine.start_local(int(count), retries=retries, console=console)
    scheme, separator, rest = text.partition("://")
    host, _, port = rest.rpartition(":")
    if not separator or scheme not in ("tls", "tcp") or not host or not port.isdigit():
        raise ConfigError(
            f"--cluster takes local, local:N, tls://HOST:PORT or tcp://127.0.0.1:PORT; got "
            f"{text!r}",
            setting="cluster",
        )
    if scheme == "tcp":
        if host not in _LOCAL_HOSTS:
            raise ConfigError(
                f"refusing plain tcp to {host}: salts and keys would cross the network "
                f"unencrypted; run the scheduler with TLS and use tls://{host}:{port} "
                "(docs/cluster.md)",
                setting="cluster",
            )
        return ClusterEngine.connect(text, retries=retries, console=console, timeout=timeout)
    return ClusterEngine.connect(
        text, security=_client_security(tls), retries=retries, console=console, timeout=timeout
    )


def _client_security(tls: TlsFiles | None) -> Security:
    """Return the client's TLS settings: the files given, else Dask's config; refuse neither."""
    if tls is not None:
        return tls.security()
    security = Security(require_encryption=True)
    # Security sets its fields from Dask's config at run time; mypy cannot see them.
    if not getattr(security, "tls_ca_file", None) or not getattr(security, "tls_client_cert", None):
        raise ConfigError(
            "a tls:// cluster needs the cluster CA and this client's certificate and key: set "
            "distributed.comm.tls.ca-file, distributed.comm.tls.client.cert and "
            "distributed.comm.tls.client.key in Dask's config (or DASK_DISTRIBUTED__COMM__TLS__* "
            "variables), or pass the PEM files (docs/cluster.md)",
            setting="cluster",
        )
    return security


# -- files --------------------------------------------------------------------------------------


def _join(base: Location, *names: str) -> str:
    return "/".join([os.fspath(base).rstrip("/"), *names])


def _fs(location: str) -> tuple[fsspec.AbstractFileSystem, str]:
    fs, path = fsspec.core.url_to_fs(location)
    return fs, path


def _write_parquet(frame: pl.DataFrame, location: str) -> None:
    """Write `frame` to `location` under a temporary name, then rename: readers see all or none."""
    fs, path = _fs(location)
    parent = path.rsplit("/", 1)[0]
    fs.makedirs(parent, exist_ok=True)
    tmp = f"{parent}/.{path.rsplit('/', 1)[1]}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        with fs.open(tmp, "wb") as handle:
            frame.write_parquet(handle, compression="zstd")
        fs.mv(tmp, path)
    finally:
        if fs.exists(tmp):
            fs.rm(tmp)


def _read_parquet(locations: Sequence[str], columns: Sequence[str] | None = None) -> pl.DataFrame:
    frames = []
    for location in locations:
        fs, path = _fs(location)
        with fs.open(path, "rb") as handle:
            frames.append(pl.read_parquet(handle, columns=None if columns is None else [*columns]))
    return pl.concat(frames, how="vertical") if len(frames) > 1 else frames[0]


def _remove(location: str) -> None:
    fs, path = _fs(location)
    if fs.exists(path):
        fs.rm(path, recursive=True)


def _chunks(
    source: pl.DataFrame | Location, columns: Sequence[str], chunk_rows: int
) -> Iterator[pl.DataFrame]:
    """Yield `columns` of `source` in chunks of at most `chunk_rows` rows (at least one chunk).

    A Parquet source is streamed row group by row group, never read whole: one pyarrow reader
    over the whole file keeps the raw bytes of every row group it has read until it ends
    (pyarrow 26: RSS grew by the file's size on disk, 1.6 GB for a 30M-row vendor file), so each
    row group gets a reader of its own, and chunks are cut across row groups as one reader would.
    """
    if chunk_rows < 1:
        raise ConfigError(f"chunk_rows must be >= 1, got {chunk_rows}", setting="chunk_rows")
    if isinstance(source, pl.DataFrame):
        _require_columns(source.columns, columns, "the frame")
        frame = source.select(columns)
        yield from frame.iter_slices(chunk_rows) if frame.height else [frame]
        return
    fs, path = _fs(os.fspath(source))
    with fs.open(path, "rb") as handle:
        reader = pq.ParquetFile(handle)
        _require_columns(reader.schema_arrow.names, columns, os.fspath(source))
        held: list[pa.RecordBatch] = []
        rows, yielded = 0, False
        for group in range(reader.num_row_groups):
            for batch in reader.iter_batches(
                batch_size=chunk_rows, row_groups=[group], columns=[*columns]
            ):
                while batch.num_rows:
                    take = min(chunk_rows - rows, batch.num_rows)
                    held.append(batch.slice(0, take))
                    rows += take
                    batch = batch.slice(take)
                    if rows == chunk_rows:
                        yield cast(pl.DataFrame, pl.from_arrow(pa.Table.from_batches(held)))
                        held, rows, yielded = [], 0, True
        if rows:
            yield cast(pl.DataFrame, pl.from_arrow(pa.Table.from_batches(held)))
        elif not yielded:
            yield cast(pl.DataFrame, pl.from_arrow(reader.schema_arrow.empty_table())).select(
                columns
            )


def _require_columns(present: Sequence[str], wanted: Sequence[str], what: str) -> None:
    missing = [c for c in wanted if c not in present]
    if missing:
        raise ConfigError(
            f"{what} lacks column(s) {', '.join(missing)}; it has {', '.join(present)}",
            setting="columns",
        )


def _check_buckets(buckets: int) -> int:
    if not 1 <= buckets <= _MAX_BUCKETS or buckets & (buckets - 1):
        raise ConfigError(
            f"buckets must be a power of two from 1 to {_MAX_BUCKETS} (the key's first bits); "
            f"got {buckets}",
            setting="buckets",
        )
    return buckets


def bucket_of(key: str | pl.Expr, buckets: int = DEFAULT_BUCKETS) -> pl.Expr:
    """Return each key's bucket: its first log2(`buckets`) bits as an integer (UInt32).

    With 256 buckets that is the key's first byte. Keys are keyed hashes, so buckets are even;
    a null key has a null bucket.
    """
    _check_buckets(buckets)
    column = pl.col(key) if isinstance(key, str) else key
    first = column.bin.slice(0, 2).bin.reinterpret(dtype=pl.UInt16, endianness="big")
    return (first.cast(pl.UInt32) // (_MAX_BUCKETS // buckets)).alias("bucket")


def _bucket_file(base: str, bucket: int) -> str:
    return _join(base, f"bucket={bucket:05d}.parquet")


def _part_file(base: str, bucket: int, chunk: int) -> str:
    return _join(base, f"bucket={bucket:05d}", f"part-{chunk:05d}.parquet")


def _write_buckets(frame: pl.DataFrame, key: str, base: str, buckets: int, chunk: int) -> list[int]:
    """Write the rows of each bucket of `frame` (non-null keys) to its part file; return buckets."""
    keyed = frame.with_columns(bucket_of(key, buckets).alias("__bucket"))
    written = []
    parts = keyed.partition_by("__bucket", as_dict=True, include_key=False, maintain_order=True)
    for (bucket,), part in sorted(parts.items(), key=lambda item: cast(int, item[0][0])):
        _write_parquet(part, _part_file(base, cast(int, bucket), chunk))
        written.append(cast(int, bucket))
    return written


@dataclass(frozen=True)
class Partitions:
    """Parquet part files by key bucket: `files[b]` holds bucket b's parts in input order.

    Every part has the key and `columns` (the key among them).
    """

    buckets: int
    files: tuple[tuple[str, ...], ...]
    rows: int
    columns: tuple[str, ...]

    def read(self, columns: Sequence[str] | None = None) -> pl.DataFrame:
        """Return every bucket's rows in bucket order (a whole table: for small results)."""
        locations = [f for parts in self.files for f in parts]
        if not locations:
            raise ConfigError("the partitions hold no rows", setting="partitions")
        return _read_parquet(locations, columns)


@dataclass(frozen=True)
class Parts:
    """Parquet files a job wrote, in bucket or chunk order, and the schema they share."""

    files: tuple[str, ...]
    rows: int
    schema: pl.Schema = field(default_factory=pl.Schema)

    def read(self, columns: Sequence[str] | None = None) -> pl.DataFrame:
        """Return the rows of every file in order (a whole table: for small results)."""
        if not self.files:
            empty = pl.DataFrame(schema=self.schema)
            return empty if columns is None else empty.select(columns)
        return _read_parquet(self.files, columns)


def partition_by_key(
    source: pl.DataFrame | Location,
    out: Location,
    *,
    key: str = "key",
    columns: Sequence[str] = (),
    buckets: int = DEFAULT_BUCKETS,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> Partitions:
    """Return `source`'s rows written as Parquet parts per key bucket under `out`.

    Streams the source in chunks of `chunk_rows` rows and writes, per chunk, one part per bucket
    it has (`<out>/bucket=00007/part-00003.parquet`), so memory is bounded by a chunk. Rows
    without a key cannot match and are left out. Runs in this process: it only moves bytes.

    Args:
        source: a frame, or a Parquet file (any fsspec location) with `key` and `columns`.
        out: the folder of the parts.
        key: the 32-byte key column (Binary).
        columns: the other columns to keep beside the key.
        buckets: a power of two up to 65536; both sides of a join need the same.
        chunk_rows: rows read at a time.
    """
    _check_buckets(buckets)
    wanted = [key, *(c for c in columns if c != key)]
    per_bucket: list[list[str]] = [[] for _ in range(buckets)]
    rows = 0
    for chunk, frame in enumerate(_chunks(source, wanted, chunk_rows)):
        if frame[key].dtype != pl.Binary:
            raise IdentifierError(
                f"column {key!r} must hold 32-byte keys (Binary), got {frame[key].dtype}",
                column=key,
            )
        frame = frame.filter(pl.col(key).is_not_null())
        short = int((frame[key].bin.size() != KEY_BYTES).sum())
        if short:
            raise IdentifierError(
                f"{short} value(s) of {key!r} in chunk {chunk} are not {KEY_BYTES} bytes; "
                "partition keyed hashes (matcher.keyed_hash), not raw identifiers",
                column=key,
            )
        for bucket in _write_buckets(frame, key, os.fspath(out), buckets, chunk):
            per_bucket[bucket].append(_part_file(os.fspath(out), bucket, chunk))
        rows += frame.height
    return Partitions(buckets, tuple(tuple(f) for f in per_bucket), rows, tuple(wanted))


# -- job: customers' match keys ----------------------------------------------------------------


@dataclass(frozen=True)
class KeyedCustomers:
    """Customers' match keys as `matcher.psi.customer_keys` gives them, written by bucket.

    `keys` holds, per bucket, customer_id, key (null when duplicated) and key_status ("ok" or
    "duplicated"); `unkeyed` the customers whose phone did not normalise (key_status "invalid").
    """

    keys: Partitions
    unkeyed: tuple[str, ...]
    customers: int
    invalid: int
    duplicated: int
    reasons: dict[str, int]

    @property
    def keyed(self) -> int:
        return self.customers - self.invalid - self.duplicated

    def read(self) -> pl.DataFrame:
        """Return customer_id, key, key_status of every customer (a whole table: small runs)."""
        files = [f for parts in self.keys.files for f in parts] + list(self.unkeyed)
        return _read_parquet(files)


@dataclass(frozen=True)
class _HashTask:
    chunk: str
    index: int
    salt: SecretRef[SaltEpoch]
    buckets: int
    hashed: str  # folder of the per-chunk bucket parts
    unkeyed: str  # this chunk's invalid rows


@dataclass(frozen=True)
class _Hashed:
    buckets: tuple[int, ...]
    rows: int
    invalid: int
    reasons: dict[str, int]


def _hash_chunk(task: _HashTask) -> _Hashed:
    """Key one chunk of the extract; write its keyed rows by bucket and its invalid rows apart.

    Duplicates are not decided here: a phone shared across chunks has one key, so its rows meet
    in one bucket, where `_settle_bucket` sees them all.
    """
    frame = _read_parquet([task.chunk])
    normalised = normalize_phones(frame["phone"])
    keys = keyed_hash(normalised.values, task.salt.resolve(), domain="mobile")
    hashed = pl.DataFrame([frame["customer_id"], keys.alias("key")])
    invalid = hashed.filter(pl.col("key").is_null()).with_columns(
        key_status=pl.lit("invalid", _KEY_STATUS)
    )
    _write_parquet(invalid, task.unkeyed)
    keyed = hashed.filter(pl.col("key").is_not_null())
    written = _write_buckets(keyed, "key", task.hashed, task.buckets, task.index)
    return _Hashed(tuple(written), frame.height, invalid.height, normalised.reason_counts())


@dataclass(frozen=True)
class _SettleTask:
    parts: tuple[str, ...]
    out: str


def _settle_bucket(task: _SettleTask) -> tuple[int, int]:
    """Apply the shared-phone rule to one bucket; return (rows, duplicated)."""
    frame = _read_parquet(task.parts)
    shared = pl.col("key").is_duplicated()
    settled = frame.select(
        "customer_id",
        pl.when(shared).then(None).otherwise(pl.col("key")).alias("key"),
        pl.when(shared)
        .then(pl.lit("duplicated"))
        .otherwise(pl.lit("ok"))
        .cast(_KEY_STATUS)
        .alias("key_status"),
    )
    _write_parquet(settled, task.out)
    return settled.height, int((settled["key_status"] == "duplicated").sum())


def key_customers(
    engine: Engine,
    extract: pl.DataFrame | Location,
    epoch: SaltEpoch,
    out: Location,
    *,
    buckets: int = DEFAULT_BUCKETS,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> KeyedCustomers:
    """Return every customer's match key under `epoch`, written by bucket under `out`.

    The same keys, statuses and counts as `matcher.psi.customer_keys` on the whole extract, in
    two stages: "keyed-hash" normalises and hashes each row chunk and writes its rows by key
    bucket; "duplicates" then marks, per bucket, keys held by two or more customers (a shared
    phone has one key, so all its holders land in one bucket, whichever chunks they came from).
    The salt reaches the workers through `engine.shared`, never inside a task.

    Args:
        engine: where the tasks run.
        extract: the bank's extract (a frame or a Parquet file) with customer_id and phone.
        epoch: the salt epoch agreed with the vendor.
        out: the job's folder (any fsspec location the workers can reach).
        buckets: key buckets, a power of two; the vendor's partitions need the same.
        chunk_rows: rows a keying task takes.
    """
    _check_buckets(buckets)
    base, work = os.fspath(out), _join(out, "_work")
    try:
        chunks = []
        for index, frame in enumerate(_chunks(extract, ("customer_id", "phone"), chunk_rows)):
            chunks.append(_join(work, "chunks", f"chunk-{index:05d}.parquet"))
            _write_parquet(frame, chunks[-1])
        unkeyed = tuple(_join(base, "unkeyed", f"part-{i:05d}.parquet") for i in range(len(chunks)))
        with engine.shared(epoch) as salt:
            hashed = engine.map_buckets(
                _hash_chunk,
                [
                    _HashTask(chunk, i, salt, buckets, _join(work, "hashed"), unkeyed[i])
                    for i, chunk in enumerate(chunks)
                ],
                stage="keyed-hash",
            )
        _remove(_join(work, "chunks"))  # the chunks hold phones: gone as soon as they are keyed
        parts: list[list[str]] = [[] for _ in range(buckets)]
        for index, done in enumerate(hashed):
            for bucket in done.buckets:
                parts[bucket].append(_part_file(_join(work, "hashed"), bucket, index))
        filled = [b for b in range(buckets) if parts[b]]
        settled = engine.map_buckets(
            _settle_bucket,
            [_SettleTask(tuple(parts[b]), _bucket_file(_join(base, "keys"), b)) for b in filled],
            stage="duplicates",
        )
    finally:
        _remove(work)
    files: list[tuple[str, ...]] = [() for _ in range(buckets)]
    for bucket in filled:
        files[bucket] = (_bucket_file(_join(base, "keys"), bucket),)
    reasons: dict[str, int] = {}
    for done in hashed:
        for reason, count in done.reasons.items():
            reasons[reason] = reasons.get(reason, 0) + count
    return KeyedCustomers(
        keys=Partitions(
            buckets,
            tuple(files),
            sum(rows for rows, _ in settled),
            ("customer_id", "key", "key_status"),
        ),
        unkeyed=unkeyed,
        customers=sum(done.rows for done in hashed),
        invalid=sum(done.invalid for done in hashed),
        duplicated=sum(dup for _, dup in settled),
        reasons=reasons,
    )


# -- job: the salted PSI join -------------------------------------------------------------------


@dataclass(frozen=True)
class _JoinTask:
    bank: tuple[str, ...]
    vendor: tuple[str, ...]
    columns: tuple[str, ...]
    out: str


def _join_bucket(task: _JoinTask) -> int:
    """Join one bucket's keyed customers with the vendor's keys; return the matches written."""
    bank = _read_parquet(task.bank, ("customer_id", "key")).filter(pl.col("key").is_not_null())
    vendor = _read_parquet(task.vendor, ("key", *task.columns))
    matched = bank.join(vendor, on="key", how="inner", maintain_order="left")
    _write_parquet(matched.select("customer_id", "key", *task.columns), task.out)
    return matched.height


def join_keys(
    engine: Engine,
    customers: KeyedCustomers,
    vendor: Partitions,
    out: Location,
    *,
    columns: Sequence[str] = (),
) -> Parts:
    """Return the customers whose key the vendor holds: customer_id, key and vendor `columns`.

    One "psi-join" task per bucket both sides have: only customers with status "ok" carry a key,
    so invalid and shared phones never match. A key the vendor holds twice (two batches) gives
    two rows; picking one is the caller's rule (`fusion.match` keeps the newest batch).

    Args:
        engine: where the tasks run.
        customers: `key_customers`'s result.
        vendor: the vendor's keys by bucket (`partition_by_key`, same bucket count), with
            `columns`.
        out: the folder of the matches, one Parquet file per bucket.
        columns: vendor columns to carry into the matches (e.g. batch_id).
    """
    if vendor.buckets != customers.keys.buckets:
        raise ConfigError(
            f"the vendor's keys are in {vendor.buckets} buckets and the customers' in "
            f"{customers.keys.buckets}; partition both sides with the same bucket count",
            setting="buckets",
        )
    extra = tuple(c for c in columns if c not in ("customer_id", "key"))
    _require_columns(vendor.columns, extra, "the vendor's partitions")
    both = [b for b in range(vendor.buckets) if customers.keys.files[b] and vendor.files[b]]
    tasks = [
        _JoinTask(customers.keys.files[b], vendor.files[b], extra, _bucket_file(os.fspath(out), b))
        for b in both
    ]
    counts = engine.map_buckets(_join_bucket, tasks, stage="psi-join")
    files = tuple(t.out for t, n in zip(tasks, counts, strict=True))
    schema = pl.Schema({"customer_id": pl.Int64, "key": pl.Binary})
    return Parts(files, sum(counts), schema)


# -- job: the feature build by customer bucket ---------------------------------------------------


@dataclass(frozen=True)
class FeatureBuckets:
    """FeatureSet folders, one per customer bucket, and the manifest of them all.

    `folders[i]` holds bucket i (`FeatureSet.read` opens it): customers with
    hash(customer_id) % len(folders) == i, ordered by customer_id, with the columns and codes of
    `manifest`. `manifest` is the whole build's: rows, matched, in_matches, batches and the tag
    matrix's shape and nnz are summed over the buckets.
    """

    folders: tuple[str, ...]
    manifest: FeatureManifest

    @property
    def rows(self) -> int:
        """Return the customers of all buckets."""
        return self.manifest.rows

    @property
    def matched(self) -> int:
        """Return the customers with vendor data at the snapshot, over all buckets."""
        return self.manifest.matched

    @property
    def in_matches(self) -> int:
        """Return the customers in `matches` for the snapshot and epoch, over all buckets."""
        return self.manifest.in_matches

    @property
    def batches(self) -> dict[str, int]:
        """Return batch_id -> customers whose vendor data came from it, over all buckets."""
        return self.manifest.batches

    def read(self, bucket: int) -> FeatureSet:
        """Return bucket `bucket`'s feature set (one bucket: the whole table is never read)."""
        return FeatureSet.read(Path(self.folders[bucket]))

    def assemble(self) -> FeatureSet:
        """Return the whole feature set, equal to `build_features` on the whole snapshot.

        Reads every bucket into this process (rows ordered by customer_id, as the whole build
        orders them): for what needs every row at once, such as in-process training.
        """
        parts = [self.read(i) for i in range(len(self.folders))]
        table = pl.concat([p.table for p in parts], how="vertical")
        order = np.argsort(table["customer_id"].to_numpy(), kind="stable")
        tags = sp.vstack([p.tags for p in parts], format="csr")[order]
        tags.sort_indices()
        return FeatureSet(table[order], tags, parts[0].tag_ids, self.manifest)


@dataclass(frozen=True, kw_only=True)
class _FeatureTask:
    store: StoreConfig
    key: SecretRef[str]  # the store key stays on the workers
    snapshot_date: date
    salt_epoch: str
    taxonomy_version: str | None
    top_apps: int
    like: FeatureManifest | None  # None: the snapshot's own manifest task
    bucket: CustomerBucket | None
    out: str


def _open_read_only(task: _FeatureTask) -> Store:
    return Store.open(task.store, key=task.key.resolve(), read_only=True)


def _snapshot_manifest(task: _FeatureTask) -> FeatureManifest:
    """Return the snapshot's manifest, computed in the store (aggregates only)."""
    with _open_read_only(task) as store:
        return snapshot_manifest(
            store,
            snapshot_date=task.snapshot_date,
            salt_epoch=task.salt_epoch,
            taxonomy_version=task.taxonomy_version,
            top_apps=task.top_apps,
        )


def _build_bucket(task: _FeatureTask) -> FeatureManifest:
    """Build one customer bucket's feature set, write its folder; return its manifest."""
    with _open_read_only(task) as store:
        features = build_features(
            store,
            snapshot_date=task.snapshot_date,
            salt_epoch=task.salt_epoch,
            taxonomy_version=task.taxonomy_version,
            top_apps=task.top_apps,
            like=task.like,
            customers=task.bucket,
        )
    features.write(Path(task.out))
    return features.manifest


def _combined(manifests: Sequence[FeatureManifest]) -> FeatureManifest:
    """Return the first bucket's manifest with every count summed over `manifests`."""
    batches: dict[str, int] = {}
    for manifest in manifests:
        for batch_id, count in manifest.batches.items():
            batches[batch_id] = batches.get(batch_id, 0) + count
    first = manifests[0]
    rows = sum(m.rows for m in manifests)
    return replace(
        first,
        rows=rows,
        matched=sum(m.matched for m in manifests),
        in_matches=sum(m.in_matches for m in manifests),
        batches=dict(sorted(batches.items())),
        tags={
            **first.tags,
            "shape": [rows, first.tags["shape"][1]],
            "nnz": sum(int(m.tags["nnz"]) for m in manifests),
        },
    )


def build_feature_buckets(
    engine: Engine,
    store_path: Location | StoreConfig,
    store_key: str,
    *,
    snapshot_date: date,
    salt_epoch: str,
    out: Location,
    buckets: int = FEATURE_BUCKETS,
    like: FeatureManifest | None = None,
    taxonomy_version: str | None = None,
    top_apps: int = 64,
) -> FeatureBuckets:
    """Return `build_features` of the snapshot cut into customer buckets, one folder per bucket.

    One "features" task per bucket opens the encrypted store read-only itself and builds only
    its customers (`CustomerBucket`: the hash is computed in DuckDB, so a worker holds one
    bucket, never the whole table). The text codes, top apps and taxonomy version are decided
    for the whole snapshot first, by one "feature-manifest" task of aggregate queries
    (`snapshot_manifest`), or taken from `like`; so the buckets' tables, concatenated and sorted
    by customer_id, are the whole build's table, and their tag rows the whole CSR's rows.

    DuckDB lets several processes open a file read-only at once only while no process holds
    it for writing: run the job when ingest and matching are not writing. If a writer holds
    the file, each task's open fails with StoreLockedError (retried, then raised here). Leave
    StoreConfig.temp_directory unset: each read-only open then spills into a directory of its
    own. The store key travels once per worker through `engine.shared`, never in a task.

    Args:
        engine: where the tasks run.
        store_path: the bank's store, a path the workers can open (a shared mount on a
            cluster), or its StoreConfig (e.g. memory_limit per task).
        store_key: the store's encryption key (Keyring.store_key()).
        snapshot_date: as `build_features`.
        salt_epoch: as `build_features`.
        out: the folder of the bucket folders (`<out>/bucket=00007/`), a path the workers
            can write.
        buckets: how many customer buckets (tasks); any count from 1.
        like: a training manifest whose codes, top apps and taxonomy a scoring table reuses;
            by default the snapshot's own.
        taxonomy_version: as `build_features`.
        top_apps: as `build_features` (unused with `like`).
    """
    if type(buckets) is not int or buckets < 1:
        raise ConfigError(f"buckets must be an int >= 1, got {buckets!r}", setting="buckets")
    config = store_path if isinstance(store_path, StoreConfig) else StoreConfig(Path(store_path))
    with engine.shared(store_key) as key:

        def task(bucket: CustomerBucket | None, decided: FeatureManifest | None) -> _FeatureTask:
            folder = "" if bucket is None else _join(out, f"bucket={bucket.index:05d}")
            return _FeatureTask(
                store=config,
                key=key,
                snapshot_date=snapshot_date,
                salt_epoch=salt_epoch,
                taxonomy_version=taxonomy_version,
                top_apps=top_apps,
                like=decided,
                bucket=bucket,
                out=folder,
            )

        if like is None:
            (like,) = engine.map_buckets(
                _snapshot_manifest, [task(None, None)], stage="feature-manifest"
            )
        tasks = [task(CustomerBucket(i, buckets), like) for i in range(buckets)]
        manifests = engine.map_buckets(_build_bucket, tasks, stage="features")
    return FeatureBuckets(tuple(t.out for t in tasks), _combined(manifests))


# -- job: batch scoring --------------------------------------------------------------------------

# Models loaded on this worker, by (registry root, name, version): each is read and its digests
# checked once per worker, not once per chunk.
_MODELS: dict[tuple[str, str, str], ScoreModel] = {}


@dataclass(frozen=True)
class _ScoreTask:
    registry: str
    model: str
    version: str
    table: str
    tags: str
    common: str  # folder of tag_ids.npy and manifest.json
    reason_deciles: int
    out: str


def _loaded_model(registry: str, name: str, version: str) -> ScoreModel:
    cached = _MODELS.get((registry, name, version))
    if cached is None:
        cached = Registry(Path(registry)).load_score_model(name, version)
        _MODELS[(registry, name, version)] = cached
    return cached


def _score_chunk(task: _ScoreTask) -> int:
    """Score one row chunk of the feature table; return the rows written."""
    model = _loaded_model(task.registry, task.model, task.version)
    fs, path = _fs(task.common)
    with fs.open(f"{path}/tag_ids.npy", "rb") as handle:
        tag_ids = np.load(handle, allow_pickle=False)
    with fs.open(f"{path}/manifest.json", "rb") as handle:
        manifest = FeatureManifest.from_dict(json.loads(handle.read().decode("utf-8")))
    tags_fs, tags_path = _fs(task.tags)
    with tags_fs.open(tags_path, "rb") as handle:
        tags = sp.csr_matrix(sp.load_npz(handle))
    table = _read_parquet([task.table])
    chunk = FeatureSet(table, tags, tag_ids, manifest)
    frame = score_rows(model, chunk, np.arange(table.height), reason_deciles=task.reason_deciles)
    _write_parquet(frame, task.out)
    return frame.height


@dataclass(frozen=True, kw_only=True)
class _ScoreBucketTask:
    registry: str
    model: str
    version: str
    folder: str  # a FeatureSet folder of build_feature_buckets
    chunk_rows: int
    reason_deciles: int
    out: str


def _score_bucket(task: _ScoreBucketTask) -> int:
    """Score one feature bucket in row chunks into one file; return the rows written."""
    model = _loaded_model(task.registry, task.model, task.version)
    bucket = FeatureSet.read(Path(task.folder))
    rows = np.arange(bucket.table.height)
    frames = [
        score_rows(
            model, bucket, rows[begin : begin + task.chunk_rows], reason_deciles=task.reason_deciles
        )
        for begin in range(0, max(len(rows), 1), task.chunk_rows)
    ]
    frame = pl.concat(frames, how="vertical")
    _write_parquet(frame, task.out)
    return frame.height


def score_features(
    engine: Engine,
    features: FeatureSet | FeatureBuckets,
    registry: Registry,
    name: str,
    out: Location,
    *,
    version: str | None = None,
    chunk_rows: int = SCORE_CHUNK_ROWS,
    reason_deciles: int = REASON_DECILES,
) -> Parts:
    """Return the score frames of every row of `features`, one Parquet file per row chunk.

    The rows and columns of `fusion.scoring.score_base` with the same model, in table order. The
    version is fixed before the first task (CURRENT when None), so a promotion during the job
    does not mix models; each worker loads it from the registry once. The registry folder must
    be readable by the workers at the same path (a shared mount on a cluster).

    Feature buckets (`build_feature_buckets`) are scored one task per bucket, each reading only
    its bucket's folder and scoring it `chunk_rows` at a time, into one file per bucket
    (`<out>/bucket=00007.parquet`): rows in bucket order, then customer_id order.

    Args:
        engine: where the tasks run.
        features: the feature table and tag matrix to score, or feature buckets whose folders
            the workers can read.
        registry: the model registry.
        name: the scoring model's name (e.g. "acquisition").
        out: the folder of the score files.
        version: the model version; CURRENT when None.
        chunk_rows: rows a scoring task takes.
        reason_deciles: deciles that get reason codes (as in `score_rows`).
    """
    if chunk_rows < 1:
        raise ConfigError(f"chunk_rows must be >= 1, got {chunk_rows}", setting="chunk_rows")
    chosen = str(registry.describe(name, version)["version"])
    registry.load_score_model(name, chosen)  # refuse an uplift model before any task runs
    if isinstance(features, FeatureBuckets):
        bucket_tasks = [
            _ScoreBucketTask(
                registry=os.fspath(registry.root.resolve()),
                model=name,
                version=chosen,
                folder=folder,
                chunk_rows=chunk_rows,
                reason_deciles=reason_deciles,
                out=_bucket_file(os.fspath(out), index),
            )
            for index, folder in enumerate(features.folders)
        ]
        scored = engine.map_buckets(_score_bucket, bucket_tasks, stage="score")
        return Parts(tuple(t.out for t in bucket_tasks), sum(scored), pl.Schema(SCORE_SCHEMA))
    base, work = os.fspath(out), _join(out, "_work")
    try:
        fs, common = _fs(_join(work, "common"))
        fs.makedirs(common, exist_ok=True)
        with fs.open(f"{common}/tag_ids.npy", "wb") as handle:
            np.save(handle, np.asarray(features.tag_ids), allow_pickle=False)
        with fs.open(f"{common}/manifest.json", "wb") as handle:
            handle.write(json.dumps(features.manifest.to_dict()).encode("utf-8"))
        tasks = []
        for index, begin in enumerate(range(0, features.table.height, chunk_rows)):
            end = min(begin + chunk_rows, features.table.height)
            table = _join(work, "chunks", f"chunk-{index:05d}.parquet")
            tags = _join(work, "chunks", f"tags-{index:05d}.npz")
            _write_parquet(features.table[begin:end], table)
            tags_fs, tags_path = _fs(tags)
            with tags_fs.open(tags_path, "wb") as handle:
                sp.save_npz(handle, sp.csr_matrix(features.tags[begin:end]))
            tasks.append(
                _ScoreTask(
                    registry=os.fspath(registry.root.resolve()),
                    model=name,
                    version=chosen,
                    table=table,
                    tags=tags,
                    common=_join(work, "common"),
                    reason_deciles=reason_deciles,
                    out=_join(base, f"part-{index:05d}.parquet"),
                )
            )
        counts = engine.map_buckets(_score_chunk, tasks, stage="score")
    finally:
        _remove(work)
    return Parts(tuple(t.out for t in tasks), sum(counts), pl.Schema(SCORE_SCHEMA))


# -- jobs: the OPRF match's per-item steps -------------------------------------------------------

BLIND_BLOCK_ROWS = 1_024  # rows whose blinds one block seed draws
OPRF_CHUNK_ROWS = 100 * BLIND_BLOCK_ROWS  # rows an OPRF task takes (about 5 s on one core)
_BLOCK_SEED_LABEL = b"bankfusion/oprf/block-seed/v1"
_SEED_BYTES = 32
_ELEMENTS = pl.Schema({"blinded": pl.Binary})
_EVALUATED = pl.Schema({"evaluated": pl.Binary})
_LABELS = pl.Schema({"label": pl.Binary})


def block_seed(seed: bytes, block: int) -> bytes:
    """Return the 32-byte blind seed of rows 1024 b to 1024 b + 1023 (block b) of a request.

    HMAC-SHA256(seed, "bankfusion/oprf/block-seed/v1" || b as 8 bytes, big-endian): HMAC keyed
    with a uniformly random seed is a PRF (RFC 2104; M. Bellare, "New proofs for NMAC and HMAC:
    security without collision resistance", CRYPTO 2006), so block seeds are independent
    uniform values. Block b's blinds are `draw_blinds(rows of b, rng=seeded_rng(block_seed(seed,
    b)))`. Blocks are fixed whatever the task size, so a row's blind depends only on the seed
    and the row's position: blinding and finalising may cut the rows into different chunks,
    and `replay_blinds` needs no chunk size.

    Args:
        seed: the request's 32 random bytes (the bank keeps it, never the blinds).
        block: the block's number, from 0.
    """
    _check_seed(seed)
    if block < 0:
        raise ConfigError(f"a block number is >= 0, got {block}", setting="block")
    return hmac.new(seed, _BLOCK_SEED_LABEL + block.to_bytes(8, "big"), hashlib.sha256).digest()


def replay_blinds(inputs: Sequence[bytes], seed: bytes) -> BankRequest:
    """Return the request state (inputs and blinds) the OPRF jobs use for `inputs` under `seed`.

    The single-process path of `oprf_blind` and `oprf_finalize`: `blind_with(inputs,
    state.blinds)` gives the blinded elements `oprf_blind` writes, and `unblind_labels(state,
    evaluated)` the labels `oprf_finalize` writes, element for element, on any engine and with
    any chunk size.
    """
    return BankRequest(tuple(inputs), tuple(_blinds(seed, 0, len(inputs))))


def _check_seed(seed: bytes) -> None:
    if not isinstance(seed, bytes) or len(seed) != _SEED_BYTES:
        raise OprfError(f"a blind seed must be {_SEED_BYTES} random bytes", item="rng")


def _blinds(seed: bytes, start: int, count: int) -> list[bytes]:
    """Return the blinds of rows start to start + count - 1, start a block's first row.

    Every block but the request's last is whole, so each block is drawn with its own row count
    whichever chunk asks for it.
    """
    blinds: list[bytes] = []
    for first in range(start, start + count, BLIND_BLOCK_ROWS):
        rows = min(BLIND_BLOCK_ROWS, start + count - first)
        rng = seeded_rng(block_seed(seed, first // BLIND_BLOCK_ROWS))
        blinds.extend(draw_blinds(rows, rng=rng))
    return blinds


def _check_oprf_chunk(chunk_rows: int) -> None:
    if chunk_rows < 1 or chunk_rows % BLIND_BLOCK_ROWS:
        raise ConfigError(
            f"an OPRF job's chunk_rows must be a positive multiple of {BLIND_BLOCK_ROWS} (a "
            f"chunk holds whole blind blocks); got {chunk_rows}",
            setting="chunk_rows",
        )


def _oprf_threads() -> int:
    """Return the threads an OPRF task may use: the polars pool's size, this worker's share.

    `ClusterEngine.start_local` sizes each worker's polars pool to its share of the cores, and
    in this process the pool has every core, so the OPRF's libsodium threads follow suit.
    """
    return max(1, pl.thread_pool_size())


def _in_request(error: OprfError, start: int) -> OprfError:
    """Return `error` (from a chunk starting at row `start`) with its index in the request."""
    index = None if error.index is None else start + error.index
    where = f"in the chunk from row {start}" if index is None else f"at row {index}"
    return OprfError(f"{error} ({where} of the request)", item=error.item, index=index)


def _binary_column(frame: pl.DataFrame, column: str, what: str) -> pl.Series:
    """Return `column` of `frame` as Binary (text as its UTF-8 bytes); refuse other types, nulls."""
    series = frame[column]
    if series.dtype == pl.String:
        series = series.cast(pl.Binary)
    elif series.dtype != pl.Binary:
        raise IdentifierError(
            f"column {column!r} must hold {what} as Binary or String, got {series.dtype}",
            column=column,
        )
    if series.null_count():
        raise IdentifierError(
            f"{series.null_count()} value(s) of {column!r} are null; every row of an OPRF job "
            f"needs {what} (drop the rows before the job)",
            column=column,
        )
    return series


def _stream(
    source: pl.DataFrame | Location | Parts, column: str, chunk_rows: int
) -> Iterator[pl.DataFrame]:
    """Yield `column` of `source` in chunks of `chunk_rows` rows (at least one chunk).

    A `Parts` is read file after file, its rows cut into chunks across file boundaries as one
    file would be, so chunks follow row positions whatever files an earlier job wrote.
    """
    if not isinstance(source, Parts):
        yield from _chunks(source, (column,), chunk_rows)
        return
    held: list[pl.DataFrame] = []
    rows, yielded = 0, False
    for location in source.files:
        for frame in _chunks(location, (column,), chunk_rows):
            while frame.height:
                take = min(chunk_rows - rows, frame.height)
                held.append(frame[:take])
                rows += take
                frame = frame[take:]
                if rows == chunk_rows:
                    yield pl.concat(held, how="vertical")
                    held, rows, yielded = [], 0, True
    if rows:
        yield pl.concat(held, how="vertical")
    elif not yielded:
        yield pl.DataFrame(schema={column: pl.Binary})


def _aligned(
    inputs: pl.DataFrame | Location,
    column: str,
    evaluated: pl.DataFrame | Parts | Location,
    chunk_rows: int,
) -> Iterator[tuple[int, pl.Series, pl.Series]]:
    """Yield (first row, inputs, evaluated elements) per chunk; refuse an answer of other length."""
    answers = _stream(evaluated, "evaluated", chunk_rows)
    start = 0
    for frame in _stream(inputs, column, chunk_rows):
        answer = next(answers, None)
        if answer is None or answer.height != frame.height:
            got = 0 if answer is None else answer.height
            raise OprfError(
                f"the evaluated elements do not line up with the inputs: {got} against "
                f"{frame.height} in the chunk from row {start}; finalise with the vendor's "
                "answer to this very request, in the order it was sent",
                item="batch",
            )
        yield (
            start,
            _binary_column(frame, column, "OPRF inputs"),
            _binary_column(answer, "evaluated", "evaluated elements"),
        )
        start += frame.height
    if any(extra.height for extra in answers):
        raise OprfError(
            f"the vendor's answer holds more elements than the {start} inputs; finalise with "
            "the answer to this very request",
            item="batch",
        )


@dataclass(frozen=True)
class _BlindTask:
    chunk: str  # the chunk's inputs, column "input"
    start: int  # its first row in the request, a block's first row
    seed: SecretRef[bytes]
    out: str


def _blind_chunk(task: _BlindTask) -> int:
    """Blind one chunk of inputs with its blocks' blinds; return the elements written."""
    inputs = _read_parquet([task.chunk])["input"].to_list()
    try:
        blinded = blind_with(
            inputs, _blinds(task.seed.resolve(), task.start, len(inputs)), workers=_oprf_threads()
        )
    except OprfError as error:
        raise _in_request(error, task.start) from None
    _write_parquet(pl.DataFrame({"blinded": blinded}, schema=_ELEMENTS), task.out)
    return len(blinded)


def oprf_blind(
    engine: Engine,
    inputs: pl.DataFrame | Location,
    seed: bytes,
    out: Location,
    *,
    column: str = "input",
    chunk_rows: int = OPRF_CHUNK_ROWS,
) -> Parts:
    """Return the blinded elements of `inputs`, in input order, one Parquet file per row chunk.

    The bank's first OPRF step (RFC 9497 Blind) as "oprf-blind" tasks: element for element
    `blind_with(inputs, replay_blinds(inputs, seed).blinds)`, on any engine and any chunk size.
    Each task draws its rows' blinds from their blocks' seeds (`block_seed`); the seed reaches
    the workers through `engine.shared`, never inside a task, and the blinds are never written.
    The elements (column "blinded", 32 bytes) are what the bank sends: uniformly random group
    elements whatever the inputs (RFC 9497 section 3.3.1), so the files may leave the bank.

    Args:
        engine: where the tasks run.
        inputs: a frame or a Parquet file (any fsspec location) with the OPRF inputs in order,
            Binary or String (normalised identifiers, e.g. 11 ASCII digits), no nulls.
        seed: the request's 32 random bytes, kept by the bank to finalise the answer.
        out: the folder of the element files (`part-00000.parquet`, ...).
        column: the column of `inputs` that holds them.
        chunk_rows: rows a task takes, a multiple of `BLIND_BLOCK_ROWS`.
    """
    _check_seed(seed)
    _check_oprf_chunk(chunk_rows)

    def chunks() -> Iterator[tuple[int, pl.DataFrame]]:
        start = 0
        for frame in _stream(inputs, column, chunk_rows):
            yield start, pl.DataFrame([_binary_column(frame, column, "OPRF inputs").alias("input")])
            start += frame.height

    return _chunk_job(
        engine, chunks(), seed, _blind_chunk, _BlindTask, out, "oprf-blind", _ELEMENTS
    )


@dataclass(frozen=True)
class _EvaluateTask:
    chunk: str  # the chunk's blinded elements, column "blinded"
    start: int
    key: SecretRef[OprfServerKey]
    out: str


def _evaluate_chunk(task: _EvaluateTask) -> int:
    """Evaluate one chunk of blinded elements under the key; return the elements written."""
    blinded = _read_parquet([task.chunk])["blinded"].to_list()
    try:
        evaluated = blind_evaluate(task.key.resolve(), blinded, workers=_oprf_threads())
    except OprfError as error:
        raise _in_request(error, task.start) from None
    _write_parquet(pl.DataFrame({"evaluated": evaluated}, schema=_EVALUATED), task.out)
    return len(evaluated)


def oprf_evaluate(
    engine: Engine,
    blinded: pl.DataFrame | Parts | Location,
    key: OprfServerKey,
    out: Location,
    *,
    chunk_rows: int = OPRF_CHUNK_ROWS,
) -> Parts:
    """Return the vendor's evaluated elements for a request, in its order, one file per chunk.

    The vendor's step (RFC 9497 BlindEvaluate) as "oprf-evaluate" tasks: element for element
    `blind_evaluate(key, blinded)`; the first invalid element stops the job with an `OprfError`
    naming its row. The key reaches the workers through `engine.shared`, never inside a task.
    Counting evaluations against the epoch's budget (`EvaluationBudget`) stays with the caller,
    before the job: a request is answered whole or not at all.

    Args:
        engine: where the tasks run (the vendor's).
        blinded: `oprf_blind`'s parts, or a frame or Parquet file with column "blinded".
        key: the vendor's OPRF key of the epoch.
        out: the folder of the evaluated files (column "evaluated", 32 bytes).
        chunk_rows: elements a task takes.
    """
    if chunk_rows < 1:
        raise ConfigError(f"chunk_rows must be >= 1, got {chunk_rows}", setting="chunk_rows")

    def chunks() -> Iterator[tuple[int, pl.DataFrame]]:
        start = 0
        for frame in _stream(blinded, "blinded", chunk_rows):
            yield start, pl.DataFrame([_binary_column(frame, "blinded", "blinded elements")])
            start += frame.height

    return _chunk_job(
        engine, chunks(), key, _evaluate_chunk, _EvaluateTask, out, "oprf-evaluate", _EVALUATED
    )


@dataclass(frozen=True)
class _FinalizeTask:
    chunk: str  # the chunk's inputs and evaluated elements, columns "input" and "evaluated"
    start: int  # its first row in the request, a block's first row
    seed: SecretRef[bytes]
    out: str


def _finalize_chunk(task: _FinalizeTask) -> int:
    """Unblind and finalise one chunk; write its labels only; return the labels written."""
    frame = _read_parquet([task.chunk])
    inputs, evaluated = frame["input"].to_list(), frame["evaluated"].to_list()
    blinds = _blinds(task.seed.resolve(), task.start, len(inputs))
    try:
        outputs = finalize(inputs, blinds, evaluated, workers=_oprf_threads())
    except OprfError as error:
        raise _in_request(error, task.start) from None
    # derive_row_keys derives the data keys too (~2 us a row against ~50 us of finalize); they
    # are dropped here, never written, never returned: see oprf_finalize.
    labels, _ = derive_row_keys(outputs)
    _write_parquet(pl.DataFrame({"label": labels}, schema=_LABELS), task.out)
    return len(labels)


def oprf_finalize(
    engine: Engine,
    inputs: pl.DataFrame | Location,
    evaluated: pl.DataFrame | Parts | Location,
    seed: bytes,
    out: Location,
    *,
    column: str = "input",
    chunk_rows: int = OPRF_CHUNK_ROWS,
) -> Parts:
    """Return each input's 16-byte match label, in input order, one Parquet file per chunk.

    The bank's last OPRF step (RFC 9497 Finalize, then `derive_row_keys`) as "oprf-finalize"
    tasks: element for element the labels of `unblind_labels(replay_blinds(inputs, seed),
    evaluated)`, and the labels the vendor computes directly (`derive_row_keys(evaluate(key,
    inputs))`). Each task rebuilds its rows' blinds from the seed (shared through
    `engine.shared`, never inside a task).

    Only labels are written (column "label"). A data key opens its vendor row, so it is as
    secret as the row; a label only says which row to look for, is published in the vendor's
    batch anyway, and says nothing of the data key (another part of the pseudorandom HKDF
    output, `derive_row_keys`). Files on shared storage outlive a run, so the data keys never
    reach them: the bank joins the labels with the vendor's batch, then re-derives the keys of
    the matched rows alone, in its own process, with `oprf_row_keys`.

    Args:
        engine: where the tasks run.
        inputs: the inputs given to `oprf_blind`, in the same order (a frame or Parquet file).
        evaluated: the vendor's answer (`oprf_evaluate`'s parts, or a frame or Parquet file
            with column "evaluated"), in the order the blinded elements were sent.
        seed: the seed the request was blinded with.
        out: the folder of the label files.
        column: the column of `inputs` that holds them.
        chunk_rows: rows a task takes, a multiple of `BLIND_BLOCK_ROWS`.

    Raises:
        OprfError: the answer has another length than the inputs, or an invalid element.
    """
    _check_seed(seed)
    _check_oprf_chunk(chunk_rows)
    chunks = (
        (start, pl.DataFrame([ids.alias("input"), answer]))
        for start, ids, answer in _aligned(inputs, column, evaluated, chunk_rows)
    )
    return _chunk_job(
        engine, chunks, seed, _finalize_chunk, _FinalizeTask, out, "oprf-finalize", _LABELS
    )


def _chunk_job(
    engine: Engine,
    chunks: Iterable[tuple[int, pl.DataFrame]],
    secret: object,
    run: Callable[[Any], int],
    task: Callable[[str, int, Any, str], Any],
    out: Location,
    stage: str,
    schema: pl.Schema,
) -> Parts:
    """Run one `stage` task per (first row, frame) chunk with `secret` shared; return the parts.

    Each chunk is written under `<out>/_work` (removed at the end, on success or failure: the
    chunks may hold identifiers) and `task(chunk file, first row, secret ref, output file)`
    builds the task that `run` runs; `run` returns the rows it wrote.
    """
    base, work = os.fspath(out), _join(out, "_work")
    written = []
    try:
        for index, (start, frame) in enumerate(chunks):
            chunk = _join(work, "chunks", f"chunk-{index:05d}.parquet")
            _write_parquet(frame, chunk)
            written.append((chunk, start, _join(base, f"part-{index:05d}.parquet")))
        with engine.shared(secret) as ref:
            counts = engine.map_buckets(
                run,
                [task(chunk, first, ref, target) for chunk, first, target in written],
                stage=stage,
            )
    finally:
        _remove(work)
    return Parts(tuple(target for _, _, target in written), sum(counts), schema)


def oprf_row_keys(
    inputs: pl.DataFrame | Location,
    evaluated: pl.DataFrame | Parts | Location,
    seed: bytes,
    rows: Sequence[int],
    *,
    column: str = "input",
    chunk_rows: int = OPRF_CHUNK_ROWS,
    workers: int | None = None,
) -> tuple[list[bytes], list[bytes]]:
    """Return (labels, data keys) of the inputs at positions `rows`, computed in this process.

    After `oprf_finalize` and the join of its labels with the vendor's batch, the bank needs
    the data keys of the matched rows only: this finalises those rows again (blinds from their
    blocks' seeds) and keeps the keys in memory, never on disk. Inputs and answer are streamed
    in chunks, so memory holds a chunk and the keys asked for. The labels come back too, so a
    caller can check them against the ones `oprf_finalize` wrote.

    Args:
        inputs: the inputs given to `oprf_blind`, in the same order.
        evaluated: the vendor's answer, as for `oprf_finalize`.
        seed: the seed the request was blinded with.
        rows: positions in the request (from 0), ascending, without repeats.
        column: the column of `inputs` that holds them.
        chunk_rows: rows read at a time, a multiple of `BLIND_BLOCK_ROWS`.
        workers: OPRF threads; every core by default.
    """
    _check_seed(seed)
    _check_oprf_chunk(chunk_rows)
    wanted = np.asarray(rows, dtype=np.int64)
    if wanted.size and (wanted[0] < 0 or np.any(np.diff(wanted) <= 0)):
        raise ConfigError(
            "rows must be request positions from 0, ascending, without repeats",
            setting="rows",
        )
    labels: list[bytes] = []
    data_keys: list[bytes] = []
    total = 0
    for start, ids, answer in _aligned(inputs, column, evaluated, chunk_rows):
        total = start + ids.len()
        picked = wanted[(wanted >= start) & (wanted < total)] - start
        if not picked.size:
            continue
        blinds: list[bytes] = []
        for block in np.unique(picked // BLIND_BLOCK_ROWS).tolist():
            first = start + block * BLIND_BLOCK_ROWS
            drawn = _blinds(seed, first, min(BLIND_BLOCK_ROWS, total - first))
            in_block = picked[picked // BLIND_BLOCK_ROWS == block] - block * BLIND_BLOCK_ROWS
            blinds.extend(drawn[i] for i in in_block.tolist())
        outputs = finalize(
            ids.gather(picked).to_list(),
            blinds,
            answer.gather(picked).to_list(),
            workers=workers,
        )
        chunk_labels, chunk_keys = derive_row_keys(outputs)
        labels.extend(chunk_labels)
        data_keys.extend(chunk_keys)
    if wanted.size and wanted[-1] >= total:
        raise ConfigError(
            f"row {int(wanted[-1])} is past the request's {total} rows", setting="rows"
        )
    return labels, data_keys
