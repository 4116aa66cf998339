"""Analyst queries run in capped worker processes: the served process stays flat under attack.

uvicorn runs in a thread of this process, so this process's resident set (its children, the
query workers, excluded) is the server's. Values built step by step - nested replace and
regexp_replace, lambdas over lists, string_agg over a cross join - pass the check, which only
bounds sized functions with constant sizes; they grow inside a worker whose address space is
capped, and come back as a 4xx naming rule memory, result_size or timeout.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field

import polars as pl
import psutil
import pytest

from fusion.query import QueryLimits
from tests.support.polling import eventually
from tests.support.server import ServedRun, post_query, settings_changed

LIMITS = QueryLimits(memory_limit="256MB", timeout_seconds=20)
MARGIN = 150 << 20  # the server's resident set may grow this much while the attack runs
_TEXT = "array_to_string(range(1000), '')"  # 2,890 characters, 300 of them '1'

# Two per caller: each caller holds at most half of the four slots.
HOSTILE = [
    (  # 2,890 x 300 x 90,000...: each replace multiplies the text by about 300
        "analyst",
        f"SELECT length(replace(replace(replace({_TEXT}, '1', {_TEXT}), '1', {_TEXT}), '1', "
        f"{_TEXT})) AS n",
    ),
    (  # a billion list elements, a thousand at a time
        "analyst",
        "SELECT length(list_transform(range(1000), x -> list_transform(range(1000), "
        "y -> list_transform(range(1000), z -> x + y + z)))::VARCHAR) AS n",
    ),
    (  # every pair of the bank's customer rows, as one string
        "head_office",
        "SELECT length(string_agg(a.branch_id || b.branch_id || a.key_status, ',')) AS n "
        "FROM customers a, customers b",
    ),
    (  # every character of every branch id replaced by all of them, then widened tenfold
        "head_office",
        "SELECT length(regexp_replace(regexp_replace(string_agg(branch_id, ''), '.', "
        "string_agg(branch_id, ''), 'g'), '.', 'xxxxxxxxxx', 'g')) AS n FROM customers",
    ),
]
REFUSED_AT_CHECK = [
    "SELECT repeat('z', 1000000) AS s FROM customers",
    "SELECT length(repeat('x', 2000000000)) AS n",
]


@dataclass
class _Peaks:
    """Resident sets seen while sampling: this process's (the server) and its query workers'."""

    idle: int
    server: int
    workers: dict[int, int] = field(default_factory=dict)  # pid -> peak


def _is_query_worker(child: psutil.Process) -> bool:
    """Whether `child` is one of the service's query workers (`python -m fusion.query_process`),
    not another child of this process (e.g. a session fixture's Dask LocalCluster nanny)."""
    return "fusion.query_process" in child.cmdline()


@contextmanager
def _sampled() -> Iterator[_Peaks]:
    process = psutil.Process()
    peaks = _Peaks(idle=process.memory_info().rss, server=process.memory_info().rss)
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.005):
            peaks.server = max(peaks.server, process.memory_info().rss)
            for child in process.children():
                try:
                    # Asked every time: a child just forked shows this process's command line.
                    if child.pid not in peaks.workers and not _is_query_worker(child):
                        continue
                    rss = child.memory_info().rss
                except psutil.Error:  # ended between the listing and the reading
                    continue
                peaks.workers[child.pid] = max(peaks.workers.get(child.pid, 0), rss)

    sampler = threading.Thread(target=sample, name="rss-sampler", daemon=True)
    sampler.start()
    try:
        yield peaks
    finally:
        done.set()
        sampler.join()


def _warm(served: ServedRun) -> None:
    """Wait until the app's pool has its warm workers started (they start in the background);
    queries beyond them start a worker each."""
    workers = served.running.server.config.app.state.query_workers  # type: ignore[union-attr]
    warm = served.settings.warm_query_workers
    eventually(lambda: workers.idle() >= warm, timeout=120, what="the query workers")


def test_four_values_built_in_steps_at_once_leave_the_server_flat(served: ServedRun):
    _warm(served)
    with settings_changed(served, query_limits=LIMITS), _sampled() as peaks:
        with ThreadPoolExecutor(len(HOSTILE)) as pool:
            running = [
                pool.submit(post_query, served, getattr(served.tokens, who), sql)
                for who, sql in HOSTILE
            ]
            eventually(
                lambda: served.service.running_queries() == len(HOSTILE),
                timeout=30,
                what="four queries running",
            )
            # The analyst holds its two slots: a third query of theirs is refused at once.
            third = post_query(served, served.tokens.analyst, "SELECT 1 AS one")
            answers = [f.result() for f in running]
    grown = peaks.server - peaks.idle
    worker_peak = max(peaks.workers.values(), default=0)
    print(
        f"server resident set: idle {peaks.idle >> 20} MiB, peak {peaks.server >> 20} MiB "
        f"(+{grown >> 20} MiB); busiest worker peak {worker_peak >> 20} MiB; answers "
        f"{[(a.status_code, a.json().get('rule'), a.elapsed.total_seconds()) for a in answers]}"
    )
    assert third.status_code == 429, third.text
    for (_, sql), answer in zip(HOSTILE, answers, strict=True):
        assert 400 <= answer.status_code < 500, (sql, answer.status_code, answer.text)
        assert answer.json()["rule"] in {"memory", "result_size", "timeout"}, answer.text
        assert len(answer.content) < 4096  # the refusal, never rows
    assert grown < MARGIN
    assert worker_peak > MARGIN  # the memory was taken: by a worker, not the server
    assert served.service.running_queries() == 0


@pytest.mark.parametrize("sql", REFUSED_AT_CHECK)
def test_the_attacks_constant_sizes_are_refused_before_any_worker(served: ServedRun, sql: str):
    answer = post_query(served, served.tokens.analyst, sql)
    assert answer.status_code == 400 and answer.json()["rule"] == "memory", answer.text


def test_a_normal_query_answers_after_the_attack(served: ServedRun):
    extract = pl.read_parquet(served.run / "world" / "bank" / "customers.parquet")
    mine = extract.filter(pl.col("branch_id") == "B001").height
    with settings_changed(served, query_limits=LIMITS):
        answer = post_query(
            served,
            served.tokens.analyst,
            "SELECT branch_id, count(*) AS n FROM customers GROUP BY branch_id",
        )
    assert answer.status_code == 200, answer.text
    assert answer.json()["rows"] == [["B001", mine]]


def test_a_json_answer_past_its_cap_is_refused_as_result_size(served: ServedRun):
    sql = "SELECT * FROM bank_features ORDER BY customer_id LIMIT 500"
    whole = post_query(served, served.tokens.head_office, sql)
    assert whole.status_code == 200, whole.text
    size, rows = len(whole.content), whole.json()["rows"]
    assert len(rows) == 500 and size > 100_000
    # elapsed_seconds may print a few characters longer or shorter from one answer to the next.
    with settings_changed(served, max_query_response_bytes=size + 64):
        assert post_query(served, served.tokens.head_office, sql).json()["rows"] == rows
    with settings_changed(served, max_query_response_bytes=size // 2):
        refused = post_query(served, served.tokens.head_office, sql)
    assert refused.status_code == 400, refused.text
    body = refused.json()
    assert body["rule"] == "result_size" and f"{size // 2:,} bytes" in body["detail"]
    assert "as JSON" in body["detail"] and len(refused.content) < 1024


def test_the_key_reaches_the_workers_through_their_pipes_only(served: ServedRun):
    _warm(served)
    workers = served.running.server.config.app.state.query_workers  # type: ignore[union-attr]
    key = served.service.keyring.head_office_key()
    pids = workers.pids()
    assert len(pids) >= served.settings.warm_query_workers >= 1
    for pid in pids:
        worker = psutil.Process(pid)
        assert worker.ppid() == psutil.Process().pid
        assert key not in " ".join(worker.cmdline())
        assert all(key not in value for value in worker.environ().values())
