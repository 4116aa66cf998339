"""Where a job's tasks run: in this process, or on a Dask cluster reached over TLS.

    engine = parse_cluster(None)              in this process (polars and DuckDB use every core)
    engine = parse_cluster("local:4")         a LocalCluster of 4 worker processes, TLS on
    engine = parse_cluster("tls://h:8786")    the bank's scheduler, certificates from Dask's config

An engine runs one pure task per bucket or chunk (`map_buckets`) and holds the job's secrets for
its tasks (`shared`, see `fusion.jobs.worker_secrets`). Failure: a task that raises is retried
(`retries`, 2 by default); a task whose worker dies is rescheduled by Dask on another worker (the
nanny restarts the dead one, and the plugins reinstall its secrets). Tasks are pure and write
each file whole or not at all, so a retried task rewrites the same rows and the job's result does
not change.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Self, TypeVar, cast

from distributed import Client, LocalCluster, as_completed
from distributed.security import Security
from rich.console import Console

from contracts.errors import ConfigError
from fusion.jobs.tls import TlsFiles, client_security
from fusion.jobs.worker_secrets import (
    SecretPlugin,
    SecretRef,
    drop_secret,
    hold_secret,
    new_secret_id,
)
from fusion.models.distributed import cluster_workers
from fusion.progress import progress_bar

__all__ = [
    "DEFAULT_RETRIES",
    "LOCAL_HOSTS",
    "ClusterEngine",
    "Engine",
    "InProcessEngine",
    "check_stage",
    "check_workers",
    "installed_version",
    "parse_cluster",
]

DEFAULT_RETRIES = 2
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")
_STAGE = re.compile(r"^[a-z][a-z0-9-]{0,39}$")

T = TypeVar("T")
R = TypeVar("R")
S = TypeVar("S")


def check_stage(stage: str) -> str:
    """Return `stage` if it can prefix task keys; raise `ConfigError` if not."""
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

    def __exit__(self, *exc: object) -> None:
        self.close()


class InProcessEngine(Engine):
    """Runs tasks one after another in this process; each task's polars work uses every core."""

    def map_buckets(self, fn: Callable[[T], R], tasks: Sequence[T], *, stage: str) -> list[R]:
        """Return fn(task) for each task, in task order; the first error stops the stage."""
        check_stage(stage)
        results = []
        with progress_bar(self.console, stage, len(tasks)) as advance:
            for task in tasks:
                results.append(fn(task))
                advance()
        return results

    @contextmanager
    def shared(self, value: S) -> Iterator[SecretRef[S]]:
        """Keep `value` in this process's registry for the block; yield its ref."""
        ref: SecretRef[S] = SecretRef(new_secret_id())
        hold_secret(ref.secret_id, value)
        try:
            yield ref
        finally:
            drop_secret(ref.secret_id)

    @property
    def workers(self) -> int:
        return 1

    def close(self) -> None:
        """Nothing to release: the engine started nothing."""

    def __repr__(self) -> str:
        return "InProcessEngine()"


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
            check_workers(client)
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
        check_stage(stage)
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
        ref: SecretRef[S] = SecretRef(new_secret_id())
        self.client.register_plugin(SecretPlugin(ref.secret_id, value), name=ref.secret_id)
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


def installed_version() -> str:
    """Return the bankfusion version installed in this process."""
    try:
        return importlib.metadata.version("bankfusion")
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def check_workers(client: Client) -> None:
    """Raise unless every worker imports this module at this process's bankfusion version."""
    ours = installed_version()
    try:
        theirs = client.run(installed_version)
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
        if host not in LOCAL_HOSTS:
            raise ConfigError(
                f"refusing plain tcp to {host}: salts and keys would cross the network "
                f"unencrypted; run the scheduler with TLS and use tls://{host}:{port} "
                "(docs/cluster.md)",
                setting="cluster",
            )
        return ClusterEngine.connect(text, retries=retries, console=console, timeout=timeout)
    return ClusterEngine.connect(
        text, security=client_security(tls), retries=retries, console=console, timeout=timeout
    )
