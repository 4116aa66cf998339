"""Benchmark of the scoring API under concurrent clients, against GET /healthz under the same.

A demo run (trained, scored, then published) is served as `fusion serve` serves it
(`api.serve`: one uvicorn worker, access log on) in a process of its own, so the load generator
does not share the server's GIL. Requests name customers the batch scored (answered from its
stored rows, `source` "batch"); a shorter load names customers it did not score (scored live);
a soak of `soak_seconds` then repeats the first load and reads the server's RSS as it goes.

The load generator shares the machine's cores with the server, so it is kept lean: each client
is one keep-alive HTTP/1.1 connection on asyncio streams (uvloop's loop when installed) that
writes pre-encoded request bytes and reads the answer by its Content-Length, parsing the JSON
body only where the check needs it. A general client (httpx) spent several times the CPU per
request, and its queueing on the shared loop was counted in every latency.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from labs.bench.figures import Figure, cpu_count

if TYPE_CHECKING:
    from fusion.runfolder import RunFolder

__all__ = ["bench_api"]


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
    `clients` lean clients (one keep-alive connection each, see the module docstring) on one
    event loop post one customer id a request: for `seconds`, a random customer the batch
    scored with reasons (the indexed lookup; an answer from elsewhere than the batch counts as
    an error); for `live_seconds` each, customers it scored without reasons, each once
    (reasons at the first request), then customers it did not score (live). The baseline is
    GET /healthz under the same clients for `baseline_seconds`, in the same run: what the HTTP
    stack, the audit middleware and the clients cost without scoring. The soak asks for any
    customer the batch scored for `soak_seconds` (bounded: it stops by itself), the server's
    RSS read at its start and every `_SOAK_STEP` seconds (`_soak_figure` says how it is
    judged).
    """
    run = work / "api-run"
    folder = _served_run(run, customers)
    pools, secret, admin = _customers_and_tokens(folder)
    port = _free_port()
    log = work / "api-server.log"
    server = _start_server(run, port, log)
    rng = np.random.default_rng(5)
    host = f"127.0.0.1:{port}"
    get_healthz = _HEALTHZ % host.encode()
    healthz = _Call(lambda: get_healthz, lambda status, _: status == 200)

    def scores_of(pool: np.ndarray[Any, Any], source: str, *, once: bool = False) -> _Call:
        return _scores_call(host, secret, _customers(pool, rng, once=once), source)

    load = _Loader(port=port, clients=clients)
    try:
        _wait_until_up(server, f"http://{host}", log)
        load.run(scores_of(pools["explained"], "batch"), 2.0)  # warm-up: loads the index
        base = load.run(healthz, baseline_seconds)
        scores = load.run(scores_of(pools["explained"], "batch"), seconds)
        first = load.run(scores_of(pools["unexplained"], "batch", once=True), live_seconds)
        live = load.run(scores_of(pools["unscored"], "live"), live_seconds)
        metrics = _MetricsReader(f"http://{host}/metrics", admin)
        soak = _soak(load, scores_of(pools["stored"], "batch"), server.pid, soak_seconds, metrics)
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


def _customers_and_tokens(
    folder: RunFolder,
) -> tuple[dict[str, np.ndarray[Any, Any]], str, str]:
    """Return the customer pools and the secrets of a new campaign-tool and admin token (the
    soak reads /metrics with the latter).

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
        admin = create_token(store, role="admin", label="bench-metrics", now=datetime.now(UTC))
    return pools, issued.secret, admin.secret


@dataclass(frozen=True, slots=True)
class _Soak:
    """What the soak saw: its load, and at its start and every step the server's RSS (MB), the
    memory DuckDB accounts for in it (MB) and the audit records it wrote (both from /metrics)."""

    load: _Load
    rss_mb: tuple[float, ...]
    seconds: float
    store_mb: tuple[float, ...]
    audit_records: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class _MetricsReader:
    """Reads the service's memory gauges from its /metrics with an admin token."""

    url: str
    secret: str

    def read(self) -> tuple[float, int]:
        """Return (DuckDB's accounted memory in MB, the audit records written)."""
        import httpx

        text = httpx.get(
            self.url, headers={"Authorization": f"Bearer {self.secret}"}, timeout=30
        ).text
        store = sum(
            int(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("bankfusion_store_memory_bytes{")
        )
        records = next(
            (int(line.split()[1]) for line in text.splitlines()
             if line.startswith("bankfusion_audit_records_total ")),
            0,
        )  # fmt: skip
        return store / 2**20, records


def _soak(load: _Loader, call: _Call, pid: int, seconds: float, metrics: _MetricsReader) -> _Soak:
    """Return the load of `seconds` of `call`, run in steps, the server's memory read between."""
    import psutil

    process = psutil.Process(pid)
    rss = [process.memory_info().rss / 2**20]
    stores = [metrics.read()]
    steps: list[_Load] = []
    left = seconds
    while left > 0:
        step = min(_SOAK_STEP, left)
        steps.append(load.run(call, step))
        rss.append(process.memory_info().rss / 2**20)
        stores.append(metrics.read())
        left -= step
    store_mb, audit_records = zip(*stores, strict=True)
    return _Soak(_Load.joined(steps), tuple(rss), seconds, store_mb, audit_records)


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


_HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: %s\r\n\r\n"
_STUCK_SECONDS = 60.0  # a request unanswered this long past a load's end counts as an error


@dataclass(frozen=True, slots=True)
class _Call:
    """One kind of request: the bytes of the next one, and the check of its answer."""

    request: Callable[[], bytes]
    check: Callable[[int, bytes], bool]  # (status, body): answered as it should be


def _customers(
    pool: np.ndarray[Any, Any], rng: np.random.Generator, *, once: bool
) -> Iterator[int]:
    """Yield customers of `pool`: each once in a random order first if `once`, then at random.

    Drawn in blocks, so that a request costs the client no numpy call of its own.
    """
    if once:
        yield from rng.permutation(pool).tolist()
    while True:
        yield from pool[rng.integers(len(pool), size=4096)].tolist()


def _scores_call(host: str, secret: str, customers: Iterator[int], source: str) -> _Call:
    """Return POST /v1/scores of one customer a request, answered from `source` to pass."""
    head = (
        f"POST /v1/scores HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {secret}\r\n"
        "Content-Type: application/json\r\nContent-Length: "
    ).encode()

    def request() -> bytes:
        body = b'{"customer_ids":[%d]}' % next(customers)
        return b"%s%d\r\n\r\n%s" % (head, len(body), body)

    def check(status: int, body: bytes) -> bool:
        if status != 200:
            return False
        answered = json.loads(body)["scores"]
        return len(answered) == 1 and answered[0]["source"] == source

    return _Call(request, check)


class _Connection:
    """One keep-alive HTTP/1.1 connection to 127.0.0.1: a request written whole, its answer
    read by its Content-Length (the service frames every answer so)."""

    def __init__(self, port: int) -> None:
        self._port = port
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def open(self) -> None:
        """Connect, unless connected."""
        if self._streams is None:
            self._streams = await asyncio.open_connection("127.0.0.1", self._port)

    async def exchange(self, request: bytes) -> tuple[int, bytes]:
        """Return the status and body of the answer to `request` (whole HTTP/1.1 bytes).

        Raises OSError, asyncio.IncompleteReadError or ValueError on a broken or unframed
        answer; the connection is then closed, and the next exchange opens a new one.
        """
        await self.open()
        assert self._streams is not None
        reader, writer = self._streams
        try:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            lower = head.lower()
            at = lower.find(b"\r\ncontent-length:") + 17
            if at < 17:
                raise ValueError("an answer without Content-Length")
            body = await reader.readexactly(int(head[at : head.index(b"\r", at)]))
        except BaseException:
            self.close()
            raise
        if b"\r\nconnection: close" in lower:
            self.close()
        return int(head[9:12]), body

    def close(self) -> None:
        """Close the connection (the next exchange opens a new one)."""
        if self._streams is not None:
            self._streams[1].close()
            self._streams = None


def _event_loop() -> asyncio.AbstractEventLoop:
    """Return a new event loop for the clients: uvloop's when installed (less CPU a request)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


@dataclass(frozen=True, slots=True)
class _Loader:
    """Concurrent clients against one server on 127.0.0.1, each a keep-alive connection."""

    port: int
    clients: int

    def run(self, call: _Call, duration: float) -> _Load:
        """Return what `self.clients` clients making `call` in a loop saw over `duration` s."""
        cpu = time.process_time()
        with asyncio.Runner(loop_factory=_event_loop) as runner:
            elapsed, latencies, errors = runner.run(self._clients(call, duration))
        cpu = (time.process_time() - cpu) / elapsed
        return _Load(len(latencies) / elapsed, np.asarray(latencies) * 1000, errors, cpu)

    async def _clients(self, call: _Call, duration: float) -> tuple[float, list[float], int]:
        latencies: list[float] = []
        errors = 0
        clock = time.perf_counter

        async def one_client(connection: _Connection, deadline: float) -> None:
            nonlocal errors
            while clock() < deadline:
                request = call.request()
                sent = clock()
                try:
                    ok = call.check(*await connection.exchange(request))
                except (OSError, EOFError, asyncio.LimitOverrunError, ValueError, LookupError):
                    ok = False  # a broken connection, an unframed answer, an unexpected body
                latencies.append(clock() - sent)
                errors += not ok

        connections = [_Connection(self.port) for _ in range(self.clients)]
        try:
            await asyncio.gather(*(c.open() for c in connections))  # connected before the clock
            start = clock()
            tasks = [asyncio.create_task(one_client(c, start + duration)) for c in connections]
            done, stuck = await asyncio.wait(tasks, timeout=duration + _STUCK_SECONDS)
            elapsed = clock() - start
            for task in stuck:
                task.cancel()
            errors += len(stuck)
            for task in done:
                task.result()  # a bug of the client itself surfaces here
        finally:
            for c in connections:
                c.close()
        return elapsed, latencies, errors


_RATE_TARGET = 0.5  # POST /v1/scores at least half the /healthz rate of the same run
_P99_TARGET_MS = 100.0
_RSS_GROWTH_TARGET = 0.05  # the soak's settled RSS at most 5% above its early RSS
_SETTLED_READINGS = 6  # RSS readings (start included) from which a soak is judged by thirds


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
        f"{len(scores.ms):,} requests in {duration:g} s from {clients} lean clients (a "
        f"keep-alive connection each) on one event loop (load generator at {scores.cpu:.2f} CPU, "
        f"{base.cpu:.2f} for /healthz); a {sizes['customers']:,}-customer demo run served by "
        f"api.serve (1 uvicorn worker on uvloop + httptools when installed, own process); "
        f"{cpu_count()} CPUs shared by server and clients"
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
    """The costlier paths' rates beside /healthz's; the soak's RSS late beside early."""
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
    yield _soak_figure(soak)


def _soak_figure(soak: _Soak) -> Figure:
    """The server's RSS late in the soak beside early in it, and whether it stayed flat.

    A soak of `_SETTLED_READINGS` readings or more is judged on the median of its last third
    against the median of its first, not on its last reading against its first: the service
    grows at first by what is bounded (the reasons of each stored row, kept once computed,
    at most one per customer the batch scored), and the audit log's newest rows sit in
    DuckDB's memory until its checkpoint writes them out, so single readings ride a sawtooth.
    A leak still shows: it lifts the whole last third. A shorter soak is judged end against
    start.
    """
    rss = soak.rss_mb
    start, end, peak = rss[0], rss[-1], max(rss)
    third = len(rss) // 3
    if len(rss) >= _SETTLED_READINGS:
        early, late = float(np.median(rss[:third])), float(np.median(rss[-third:]))
        judged = "the median of the soak's last third against the median of its first"
        baseline_name = "the server's median RSS over the soak's first third"
    else:
        early, late = start, end
        judged = "the soak's last reading against its first (too short for thirds)"
        baseline_name = "the server's RSS at the soak's start (after the loads above)"
    readings = ", ".join(f"{r:.0f}" for r in rss)
    return Figure(
        name="api.soak_rss_mb",
        value=late,
        unit="MB",
        baseline=early,
        baseline_name=baseline_name,
        ratio=early / late,
        target=f"<= +{_RSS_GROWTH_TARGET:.0%}, 0 errors",
        met=late <= early * (1 + _RSS_GROWTH_TARGET) and soak.load.errors == 0,
        note=f"{soak.seconds:g} s of one random customer of all the batch scored a request "
        f"({len(soak.load.ms):,} requests, {soak.load.rate:.0f} req/s, p99 "
        f"{_percentile(soak.load.ms, 99):.1f} ms, {soak.load.errors} errors); judged: "
        f"{judged}; start {start:.0f} MB, end {end:.0f} MB ({end / start - 1:+.1%}), peak "
        f"{peak:.0f} MB; RSS every {_SOAK_STEP:g} s: {readings} MB; DuckDB's accounted memory "
        f"{soak.store_mb[0]:.0f} -> {soak.store_mb[-1]:.0f} MB (peak {max(soak.store_mb):.0f}), "
        f"audit records written {soak.audit_records[0]:,} -> {soak.audit_records[-1]:,}",
    )


def _percentile(ms: np.ndarray[Any, Any], quantile: float) -> float:
    """Return the `quantile` of `ms`; NaN when no request was made."""
    return float(np.percentile(ms, quantile)) if len(ms) else float("nan")
