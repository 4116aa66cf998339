"""The audit fails closed, on servers of their own: while audit writes fail (the write function
monkeypatched) or the queue is full, requests get 503, GET /healthz still answers, and the
service recovers by itself with every kept record in its request trail."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.audit import AuditRecord
from api.service import Service
from tests.support.audit import AuditTrailQuery
from tests.support.polling import eventually
from tests.support.server import Tokens, bearer, serve_copy


@dataclass(frozen=True)
class Audited:
    url: str
    service: Service
    tokens: Tokens
    failing: threading.Event  # set: every audit write raises


@contextmanager
def audited_server(
    demo_run: Path, root: Path, monkeypatch: pytest.MonkeyPatch, **settings: Any
) -> Iterator[Audited]:
    """Serve a copy of the demo run whose audit writes fail while `failing` is set."""
    with serve_copy(demo_run, root, **settings) as served:
        service = served.service
        failing = threading.Event()
        write = service.audit.write

        def flaky(records: list[AuditRecord]) -> None:
            if failing.is_set():
                raise OSError(28, "No space left on device (test)")
            write(records)

        monkeypatch.setattr(service.audit, "write", flaky)
        try:
            yield Audited(served.url, service, served.tokens, failing)
        finally:
            failing.clear()  # so that close() flushes


def _drained(service: Service) -> None:
    eventually(lambda: service.audit.depth() == 0, what="the audit queue draining")


def _audit_rows(service: Service) -> Counter[tuple[str, str]]:
    """Return the audit log's rows counted by (action, status)."""
    rows = AuditTrailQuery(service).execute("SELECT action, status FROM audit_log").fetchall()
    return Counter((action, status) for action, status in rows)


def _stored_since(
    service: Service, before: Counter[tuple[str, str]], expected: int
) -> Counter[tuple[str, str]]:
    """Return the rows audited since `before`, once `expected` are there (waits up to 10 s).

    A request's record is queued just after its answer is sent, so it may trail the answer.
    """

    def stored() -> Counter[tuple[str, str]] | None:
        rows = _audit_rows(service) - before
        return rows if rows.total() >= expected else None

    return eventually(stored, timeout=10, interval=0.05, what=f"{expected} audit rows stored")


def _until(client: httpx.Client, token: str, status: int) -> list[httpx.Response]:
    """GET /metrics every 50 ms until it answers `status` (at most 15 s); return every answer."""
    answers: list[httpx.Response] = []

    def answered() -> bool:
        answers.append(client.get("/metrics", headers=bearer(token)))
        return answers[-1].status_code == status

    eventually(answered, timeout=15, interval=0.05, what=f"GET /metrics answering {status}")
    return answers


def test_failing_audit_writes_close_the_service_until_they_succeed_again(
    demo_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    with (
        audited_server(demo_run, tmp_path, monkeypatch, audit_outage_seconds=0.5) as bank,
        httpx.Client(base_url=bank.url, timeout=30) as client,
    ):
        _drained(bank.service)
        before = _audit_rows(bank.service)
        bank.failing.set()
        down = _until(client, bank.tokens.admin, 503)
        refused = down[-1]
        assert "audit log cannot be written" in refused.json()["detail"]
        assert "tell the bank's operators" in refused.json()["detail"]
        assert refused.headers["retry-after"] == "5"
        # Writes failed for longer than audit_outage_seconds, not for want of queue room.
        assert bank.service.audit.failures >= 1 and bank.service.audit.depth() < 100
        assert client.get("/healthz").status_code == 200  # the load balancer's probe still works
        up_only = client.post(
            "/v1/outcomes",
            json={"campaign_id": "c", "outcomes": [{"customer_id": 1, "treatment": True}]},
            headers=bearer(bank.tokens.campaign_tool),
        )
        assert up_only.status_code == 503  # refused before the body is even parsed

        bank.failing.clear()
        up = _until(client, bank.tokens.admin, 200)
        assert "bankfusion_audit_write_failures_total" in up[-1].text
        metrics = client.get("/metrics", headers=bearer(bank.tokens.admin)).text
        failures = next(
            line for line in metrics.splitlines() if line.startswith("bankfusion_audit_write_")
        )
        assert int(failures.split()[-1]) == bank.service.audit.failures >= 1
        assert "bankfusion_audit_dropped_total 0" in metrics
        # Every request of the outage is in the store, the 503s included (under their route).
        sent = Counter(("GET /metrics", str(a.status_code)) for a in (*down, *up))
        sent[("GET /healthz", "200")] += 1
        sent[("POST /v1/outcomes", "503")] += 1
        sent[("GET /metrics", "200")] += 1
        assert _stored_since(bank.service, before, sent.total()) == sent
        assert sent[("GET /metrics", "503")] >= 1 and sent[("GET /metrics", "200")] >= 2


def test_a_full_audit_queue_closes_the_service_and_keeps_every_admitted_record(
    demo_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    with (
        audited_server(
            demo_run, tmp_path, monkeypatch, audit_queue_limit=5, audit_outage_seconds=600
        ) as bank,
        httpx.Client(base_url=bank.url, timeout=30) as client,
    ):
        _drained(bank.service)
        before = _audit_rows(bank.service)
        bank.failing.set()
        down = _until(client, bank.tokens.admin, 503)
        admitted = [a for a in down if a.status_code == 200]
        assert len(admitted) >= 5  # the queue's limit, reached by the records of these
        more = [client.get("/metrics", headers=bearer(bank.tokens.admin)) for _ in range(3)]
        assert {a.status_code for a in more} == {503}
        # No room: the records of requests refused for want of it are counted, not kept.
        # A record is queued (or dropped) just after its answer is sent.
        eventually(lambda: bank.service.audit.dropped >= 4, timeout=5, what="4 records dropped")
        assert bank.service.audit.dropped == 4
        assert bank.service.audit.depth() == len(admitted)  # all kept, none written yet

        bank.failing.clear()
        up = _until(client, bank.tokens.admin, 200)
        _drained(bank.service)
        metrics = client.get("/metrics", headers=bearer(bank.tokens.admin)).text
        dropped = bank.service.audit.dropped
        assert f"bankfusion_audit_dropped_total {dropped}" in metrics
        answers = Counter(str(a.status_code) for a in (*down, *more, *up))
        answers["200"] += 1  # the last GET /metrics
        stored = _stored_since(bank.service, before, answers.total() - dropped)
        # Every admitted request is in the store; a refused one is stored or counted as dropped
        # (refusals sent while a retry emptied the queue found room).
        assert stored[("GET /metrics", "200")] == answers["200"]
        assert stored[("GET /metrics", "503")] + dropped == answers["503"]
        assert set(stored) <= {("GET /metrics", "200"), ("GET /metrics", "503")}
