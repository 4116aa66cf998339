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
partitions) and `score_features` (a feature table scored in row chunks by a registered model).
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
    <out>/part-00000.parquet              score_features: the score frame of one row chunk
    <out>/_work/                          row chunks and per-chunk bucket parts, while running
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
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

from contracts.errors import ConfigError, IdentifierError
from fusion.features import FeatureManifest, FeatureSet
from fusion.models.classifier import ScoreModel
from fusion.registry import Registry
from fusion.scoring import REASON_DECILES, SCORE_SCHEMA, score_rows
from matcher.identity import normalize_phones
from matcher.keyed_hash import KEY_BYTES, SaltEpoch, keyed_hash

__all__ = [
    "DEFAULT_BUCKETS",
    "ClusterEngine",
    "Engine",
    "InProcessEngine",
    "KeyedCustomers",
    "Partitions",
    "Parts",
    "SecretRef",
    "TlsFiles",
    "bucket_of",
    "join_keys",
    "key_customers",
    "parse_cluster",
    "partition_by_key",
    "score_features",
]

DEFAULT_BUCKETS = 256  # the key's first byte
DEFAULT_RETRIES = 2
DEFAULT_CHUNK_ROWS = 1_000_000  # rows a keying task hashes (about 0.25 s on two cores)
SCORE_CHUNK_ROWS = 100_000  # rows a scoring task scores (SHAP reasons make a row ~0.1 ms)
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
def _progress(console: Console | None, stage: str, total: int) -> Iterator[Callable[[], None]]:
    """Yield a callable that advances the stage's progress bar by one task (no bar: no console)."""
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
        with _progress(self.console, stage, len(tasks)) as advance:
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
        return max(1, len(self.client.scheduler_info(n_workers=-1).get("workers", {})))

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
            with _progress(self.console, stage, len(futures)) as advance:
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


def score_features(
    engine: Engine,
    features: FeatureSet,
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

    Args:
        engine: where the tasks run.
        features: the feature table and tag matrix to score.
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
