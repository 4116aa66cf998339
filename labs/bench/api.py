"""Benchmark of the scoring API under concurrent clients, against GET /healthz under the same.

A demo run (trained, scored, then published) is served as `fusion serve` serves it
(`api.serve`: one uvicorn worker, access log on) in a process of its own, so the load generator
does not share the server's GIL. Requests name customers the batch scored (answered from its
stored rows, `source` "batch"); a shorter load names customers it did not score (scored live);
a soak of `soak_seconds` then repeats the first load and reads the server's RSS as it goes.
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
    live_seconds: float = 5.0,
    soak_seconds: float = 20.0,
) -> Iterator[Figure]:
    """POST /v1/scores req/s, p50/p99 latency and errors under concurrent loopback clients.

    A demo run of `customers` is served in a process of its own (see the module docstring).
    `clients` httpx clients (one connection each) on one asyncio loop post one customer id a
    request: for `seconds`, a random customer the batch scored with reasons (the indexed
    lookup; an answer from elsewhere than the batch counts as an error); for `live_seconds`
    each, customers it scored without reasons, each once (reasons at the first request), then
    customers it did not score (live). The baseline is GET /healthz under the same clients for
    `baseline_seconds`, in the same run: what the HTTP stack, the audit middleware and the
    clients cost without scoring. The soak asks for any customer the batch scored for
    `soak_seconds` (bounded: it stops by itself), the server's RSS read at its start, every
    `_SOAK_STEP` seconds and at its end.
    """
    run = work / "api-run"
    folder = _served_run(run, customers)
    pools, secret = _customers_and_token(folder)
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = work / "api-server.log"
    server = _start_server(run, port, log)
    rng = np.random.default_rng(5)

    async def healthz(client: httpx.AsyncClient) -> bool:
        return (await client.get("/healthz")).status_code == 200

    def scores_of(pool: np.ndarray[Any, Any], source: str, *, once: bool = False) -> _Send:
        order = iter(rng.permutation(pool).tolist()) if once else None

        async def score(client: httpx.AsyncClient) -> bool:
            customer = next(order, None) if order is not None else None
            if customer is None:
                customer = int(pool[rng.integers(len(pool))])
            response = await client.post("/v1/scores", json={"customer_ids": [customer]})
            if response.status_code != 200:
                return False
            answered = response.json()["scores"]
            return len(answered) == 1 and answered[0]["source"] == source

        return score

    load = _Loader(url=url, secret=secret, clients=clients)
    try:
        _wait_until_up(server, url, log)
        load.run(scores_of(pools["explained"], "batch"), 2.0)  # warm-up: loads the index
        base = load.run(healthz, baseline_seconds)
        scores = load.run(scores_of(pools["explained"], "batch"), seconds)
        first = load.run(scores_of(pools["unexplained"], "batch", once=True), live_seconds)
        live = load.run(scores_of(pools["unscored"], "live"), live_seconds)
        soak = _soak(load, scores_of(pools["stored"], "batch"), server.pid, soak_seconds)
    finally:
        _stop(server)
    sizes = {"customers": customers} | {name: len(pool) for name, pool in pools.items()}
    yield from _api_figures(
        scores, base, sizes=sizes, clients=clients, seconds=(seconds, baseline_seconds)
    )
    yield from _live_and_soak_figures(first, live, soak, base, clients=clients)


def _served_run(run: Path, customers: int) -> RunFolder:
    """Return a demo run of `customers` (trained, scored, lists, published) without the demo
    campaigns or the scenario models: the service's scores need neither."""
    from fusion.pipeline.bank import open_bank, publish_snapshots
    from labs.demo import run_demo

    summary = run_demo(run, customers=customers, seed=5, campaigns=False, scenarios=False)
    with open_bank(summary.folder) as bank:
        publish_snapshots(bank)
    return summary.folder


def _customers_and_token(folder: RunFolder) -> tuple[dict[str, np.ndarray[Any, Any]], str]:
    """Return the customer pools and the secret of a new campaign-tool token.

    stored: the ids the batch scored; explained: those it gave reasons (its lists' deciles);
    unexplained: the others (reasons at their first request); unscored: known ids it did not
    score (live).
    """
    from fusion.store import Store
    from fusion.tokens import create_token
    from labs.world import WorldFiles
    from matcher.keyring import Keyring

    ids = pl.read_parquet(WorldFiles(folder.world).customers, columns=["customer_id"])
    stored = pl.read_parquet(
        folder.scores / "acquisition.parquet", columns=["customer_id", "reason_1"]
    )
    explained = stored["reason_1"].is_not_null()
    pools = {
        "stored": stored["customer_id"].to_numpy(),
        "explained": stored.filter(explained)["customer_id"].to_numpy(),
        "unexplained": stored.filter(~explained)["customer_id"].to_numpy(),
        "unscored": ids.join(stored, on="customer_id", how="anti")["customer_id"].to_numpy(),
    }
    keyring = Keyring.open(folder.bank_keys)
    with Store.open(folder.store, key=keyring.store_key()) as store:  # before the server holds it
        issued = create_token(store, role="campaign_tool", label="bench", now=datetime.now(UTC))
    return pools, issued.secret


@dataclass(frozen=True, slots=True)
class _Soak:
    """What the soak saw: its load, and the server's RSS in MB at its start and every step."""

    load: _Load
    rss_mb: tuple[float, ...]
    seconds: float


def _soak(load: _Loader, send: _Send, pid: int, seconds: float) -> _Soak:
    """Return the load of `seconds` of `send`, run in steps, the server's RSS read between."""
    import psutil

    process = psutil.Process(pid)
    rss = [process.memory_info().rss / 2**20]
    steps: list[_Load] = []
    left = seconds
    while left > 0:
        step = min(_SOAK_STEP, left)
        steps.append(load.run(send, step))
        rss.append(process.memory_info().rss / 2**20)
        left -= step
    return _Soak(_Load.joined(steps), tuple(rss), seconds)


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


_SOAK_STEP = 30.0  # seconds of load between two readings of the server's RSS in the soak


@dataclass(frozen=True, slots=True)
class _Load:
    """What one load run saw: requests/s, latencies in ms, errors, the client's CPU share."""

    rate: float
    ms: np.ndarray[Any, Any]
    errors: int
    cpu: float

    @classmethod
    def joined(cls, loads: list[_Load]) -> _Load:
        """Return the loads of consecutive runs as one (rates weighted by their lengths)."""
        if not loads:
            return cls(0.0, np.zeros(0), 0, 0.0)
        seconds = [len(x.ms) / x.rate if x.rate else 0.0 for x in loads]
        total = sum(seconds)
        return cls(
            sum(len(x.ms) for x in loads) / total if total else 0.0,
            np.concatenate([x.ms for x in loads]),
            sum(x.errors for x in loads),
            sum(x.cpu * s for x, s in zip(loads, seconds, strict=True)) / total if total else 0.0,
        )


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


_RATE_TARGET = 0.5  # POST /v1/scores at least half the /healthz rate of the same run
_P99_TARGET_MS = 100.0
_RSS_GROWTH_TARGET = 0.05  # the soak's RSS at its end at most 5% above its start


def _api_figures(
    scores: _Load,
    base: _Load,
    *,
    sizes: dict[str, int],
    clients: int,
    seconds: tuple[float, float],
) -> Iterator[Figure]:
    """Requests/s, p50 and p99 latency and the error count, each beside /healthz's."""
    duration, baseline_seconds = seconds
    baseline_name = f"GET /healthz under the same {clients} clients, {baseline_seconds:g} s"
    note = (
        f"{len(scores.ms):,} requests in {duration:g} s from {clients} httpx clients (a "
        f"connection each) on one asyncio loop (load generator at {scores.cpu:.2f} CPU, "
        f"{base.cpu:.2f} for /healthz); a {sizes['customers']:,}-customer demo run served by "
        f"api.serve (1 uvicorn worker, own process); {cpu_count()} CPUs shared by server and "
        "clients"
    )
    ratio = scores.rate / base.rate
    yield Figure(
        name="api.scores_req_per_s",
        value=scores.rate,
        unit="req/s",
        baseline=base.rate,
        baseline_name=baseline_name,
        ratio=ratio,
        target=f">= {_RATE_TARGET:g}x /healthz, 0 errors",
        met=ratio >= _RATE_TARGET and scores.errors == 0,
        note=f"one random customer a request of the {sizes['explained']:,} (of "
        f"{sizes['stored']:,}) the batch scored with reasons (its lists' deciles): an "
        f"indexed lookup of the stored row; {scores.errors} errors; {note}",
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
            target="reported" if quantile == 50 else f"<= {_P99_TARGET_MS:g} ms",
            met=None if quantile == 50 else value <= _P99_TARGET_MS,
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
        note="non-200 answers, transport errors, customers left unscored and answers not "
        "from the batch",
    )


def _live_and_soak_figures(
    first: _Load, live: _Load, soak: _Soak, base: _Load, *, clients: int
) -> Iterator[Figure]:
    """The costlier paths' rates beside /healthz's; the soak's RSS at its end beside its start."""
    baseline_name = f"GET /healthz under the same {clients} clients"
    yield Figure(
        name="api.scores_first_reasons_req_per_s",
        value=first.rate,
        unit="req/s",
        baseline=base.rate,
        baseline_name=baseline_name,
        ratio=first.rate / base.rate,
        target="reported",
        met=None,
        note="customers the batch scored without reasons (deciles 4-10), each at its first "
        f"request: stored row + exact SHAP reasons, kept after; p50 "
        f"{_percentile(first.ms, 50):.1f} ms, p99 {_percentile(first.ms, 99):.1f} ms, "
        f"{first.errors} errors",
    )
    yield Figure(
        name="api.scores_live_req_per_s",
        value=live.rate,
        unit="req/s",
        baseline=base.rate,
        baseline_name=baseline_name,
        ratio=live.rate / base.rate,
        target="reported",
        met=None,
        note=f"customers the batch did not score, scored live (design row, predict, exact "
        f"SHAP): p50 {_percentile(live.ms, 50):.1f} ms, p99 {_percentile(live.ms, 99):.1f} "
        f"ms, {live.errors} errors",
    )
    start, end = soak.rss_mb[0], soak.rss_mb[-1]
    met = end <= start * (1 + _RSS_GROWTH_TARGET) and soak.load.errors == 0
    readings = ", ".join(f"{r:.0f}" for r in soak.rss_mb)
    yield Figure(
        name="api.soak_rss_mb",
        value=end,
        unit="MB",
        baseline=start,
        baseline_name="the server's RSS at the soak's start (after the loads above)",
        ratio=start / end,
        target=f"end <= start + {_RSS_GROWTH_TARGET:.0%}, 0 errors",
        met=met,
        note=f"{soak.seconds:g} s of one random customer of all the batch scored a request "
        f"({len(soak.load.ms):,} requests, "
        f"{soak.load.rate:.0f} req/s, p99 {_percentile(soak.load.ms, 99):.1f} ms, "
        f"{soak.load.errors} errors); RSS every {_SOAK_STEP:g} s: {readings} MB",
    )


def _percentile(ms: np.ndarray[Any, Any], quantile: float) -> float:
    """Return the `quantile` of `ms`; NaN when no request was made."""
    return float(np.percentile(ms, quantile)) if len(ms) else float("nan")
