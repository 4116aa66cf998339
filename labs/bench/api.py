"""Benchmark of the scoring API under concurrent clients, against GET /healthz under the same.

A demo run (trained, scored, then published) is served as `fusion serve` serves it
(`api.serve`: one uvicorn worker, access log on) in a process of its own, so the load generator
does not share the server's GIL.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from labs.bench.figures import Figure, cpu_count
from labs.bench.run_folder import demo_run_folder

if TYPE_CHECKING:
    import httpx

    from fusion.runfolder import RunFolder

__all__ = ["bench_api"]

_Send = Callable[["httpx.AsyncClient"], Awaitable[bool]]
"""One request of a client; True when it was answered as it should be."""


def bench_api(
    work: Path,
    *,
    customers: int = 20_000,
    clients: int = 50,
    seconds: float = 20.0,
    baseline_seconds: float = 5.0,
) -> Iterator[Figure]:
    """POST /v1/scores req/s, p50/p99 latency and errors under concurrent loopback clients.

    A demo run of `customers` is served in a process of its own (see the module docstring).
    `clients` httpx clients (one connection each) on one asyncio loop post one random known
    customer id a request for `seconds`; the baseline is GET /healthz under the same clients
    for `baseline_seconds`, in the same run: what the HTTP stack, the audit middleware and the
    clients cost without scoring. The target is met only when not one request failed.
    """
    run = work / "api-run"
    folder = demo_run_folder(run, customers=customers, seed=5)
    known, secret = _known_customers_and_token(folder)
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = work / "api-server.log"
    server = _start_server(run, port, log)
    rng = np.random.default_rng(5)

    async def healthz(client: httpx.AsyncClient) -> bool:
        return (await client.get("/healthz")).status_code == 200

    async def score(client: httpx.AsyncClient) -> bool:
        customer = int(known[rng.integers(len(known))])
        response = await client.post("/v1/scores", json={"customer_ids": [customer]})
        return response.status_code == 200 and len(response.json()["scores"]) == 1

    load = _Loader(url=url, secret=secret, clients=clients)
    try:
        _wait_until_up(server, url, log)
        load.run(score, 2.0)  # warm-up: the first request builds the scorer's design matrix
        base = load.run(healthz, baseline_seconds)
        scores = load.run(score, seconds)
    finally:
        _stop(server)
    yield from _api_figures(
        scores, base, customers=customers, clients=clients, seconds=(seconds, baseline_seconds)
    )


def _known_customers_and_token(folder: RunFolder) -> tuple[np.ndarray[Any, Any], str]:
    """Return the world's customer ids and the secret of a new campaign-tool token."""
    from fusion.store import Store
    from fusion.tokens import create_token
    from labs.world import WorldFiles
    from matcher.keyring import Keyring

    ids = pl.read_parquet(WorldFiles(folder.world).customers, columns=["customer_id"])
    keyring = Keyring.open(folder.bank_keys)
    with Store.open(folder.store, key=keyring.store_key()) as store:  # before the server holds it
        issued = create_token(store, role="campaign_tool", label="bench", now=datetime.now(UTC))
    return ids["customer_id"].to_numpy(), issued.secret


def _free_port() -> int:
    """Return a loopback port that was free a moment ago (the server binds it itself)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start_server(run: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    """Return the process serving `run` on `port`, its output going to `log`."""
    launch = (
        "import sys; from pathlib import Path; from api import ApiSettings, serve; "
        "serve(ApiSettings(run=Path(sys.argv[1]), port=int(sys.argv[2])))"
    )
    with log.open("wb") as sink:
        return subprocess.Popen(  # noqa: S603 - our own interpreter, our own arguments
            [sys.executable, "-c", launch, str(run), str(port)], stdout=sink, stderr=sink
        )


def _wait_until_up(server: subprocess.Popen[bytes], url: str, log: Path) -> None:
    """Return once /healthz answers; raise RuntimeError with the log if the server never does."""
    import httpx

    deadline = time.monotonic() + 120
    while server.poll() is None and time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"the server did not come up:\n{log.read_text()[-3000:]}")


def _stop(server: subprocess.Popen[bytes]) -> None:
    """Stop the server: politely, then by force after a minute."""
    server.terminate()
    try:
        server.wait(timeout=60)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


@dataclass(frozen=True, slots=True)
class _Load:
    """What one load run saw: requests/s, latencies in ms, errors, the client's CPU share."""

    rate: float
    ms: np.ndarray[Any, Any]
    errors: int
    cpu: float


@dataclass(frozen=True, slots=True)
class _Loader:
    """Concurrent clients against one server, each on a keep-alive connection of its own."""

    url: str
    secret: str
    clients: int

    def run(self, send: _Send, duration: float) -> _Load:
        """Return what `self.clients` clients calling `send` in a loop saw over `duration` s."""
        cpu = time.process_time()
        elapsed, latencies, errors = asyncio.run(self._clients(send, duration))
        cpu = (time.process_time() - cpu) / elapsed
        return _Load(len(latencies) / elapsed, np.asarray(latencies) * 1000, errors, cpu)

    async def _clients(self, send: _Send, duration: float) -> tuple[float, list[float], int]:
        import httpx

        latencies: list[float] = []
        errors = 0
        headers = {"Authorization": f"Bearer {self.secret}"}

        async def one_client(client: httpx.AsyncClient, deadline: float) -> None:
            nonlocal errors
            while time.perf_counter() < deadline:
                sent = time.perf_counter()
                try:
                    ok = await send(client)
                except httpx.HTTPError:
                    ok = False
                latencies.append(time.perf_counter() - sent)
                errors += not ok

        # One client (one keep-alive connection) each: a single AsyncClient pooling all the
        # connections was the bottleneck itself, measured well below the /healthz rate.
        async with AsyncExitStack() as stack:
            pool = [
                await stack.enter_async_context(
                    httpx.AsyncClient(base_url=self.url, headers=headers, timeout=60)
                )
                for _ in range(self.clients)
            ]
            start = time.perf_counter()
            await asyncio.gather(*(one_client(c, start + duration) for c in pool))
            elapsed = time.perf_counter() - start
        return elapsed, latencies, errors


def _api_figures(
    scores: _Load, base: _Load, *, customers: int, clients: int, seconds: tuple[float, float]
) -> Iterator[Figure]:
    """Requests/s, p50 and p99 latency and the error count, each beside /healthz's."""
    duration, baseline_seconds = seconds
    baseline_name = f"GET /healthz under the same {clients} clients, {baseline_seconds:g} s"
    note = (
        f"{len(scores.ms):,} requests in {duration:g} s from {clients} httpx clients (a "
        f"connection each) on one asyncio loop (load generator at {scores.cpu:.2f} CPU, "
        f"{base.cpu:.2f} for /healthz); a {customers:,}-customer demo run served by api.serve "
        f"(1 uvicorn worker, own process); {cpu_count()} CPUs shared by server and clients"
    )
    yield Figure(
        name="api.scores_req_per_s",
        value=scores.rate,
        unit="req/s",
        baseline=base.rate,
        baseline_name=baseline_name,
        ratio=scores.rate / base.rate,
        target="0 errors",
        met=scores.errors == 0,
        note=f"one random known customer a request, {scores.errors} errors; {note}",
    )
    for quantile in (50, 99):
        value = float(np.percentile(scores.ms, quantile))
        baseline = float(np.percentile(base.ms, quantile))
        yield Figure(
            name=f"api.scores_p{quantile}_ms",
            value=value,
            unit="ms",
            baseline=baseline,
            baseline_name=baseline_name,
            ratio=baseline / value,
            target="reported",
            met=None,
            note=f"latency seen by a client, queueing behind {clients - 1} others included",
        )
    yield Figure(
        name="api.scores_errors",
        value=float(scores.errors),
        unit="errors",
        baseline=float(base.errors),
        baseline_name=baseline_name,
        ratio=None,
        target="== 0",
        met=scores.errors == 0,
        note="non-200 answers, transport errors and known customers left unscored",
    )
