"""Roles x routes on a real server (campaign routes and the marketer role included); scoring,
lists, outcomes, metrics, revocation, body caps; every request audited."""

from __future__ import annotations

import io
import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import polars as pl
import pytest

from fusion.registry import Registry
from fusion.runfolder import RunFolder
from fusion.tokens import create_token
from matcher.identity import normalize_phones
from tests.support.audit import AuditTrailQuery
from tests.support.polling import eventually
from tests.support.server import NOW, ServedRun, bearer

ROLES = ("vendor", "analyst", "head_office", "campaign_tool", "marketer", "admin")
MATRIX_CAMPAIGN = "matrix-campaign"


@pytest.fixture(scope="module")
def marketer_token(served: ServedRun) -> str:
    """A marketer token, made while the service runs (the served run's tokens predate the role)."""
    issued = create_token(served.service.cursor(), role="marketer", now=NOW, label="matrix")

    def accepted() -> bool:
        answer = httpx.get(f"{served.url}/v1/campaigns", headers=bearer(issued.secret))
        return answer.status_code == 200

    eventually(accepted, timeout=10, interval=0.1, what="the marketer token picked up")
    return issued.secret


def _known_ids(served: ServedRun, n: int = 5) -> list[int]:
    scores = pl.read_parquet(RunFolder(served.run).scores / "acquisition.parquet")
    return scores["customer_id"].head(n).to_list()


def _routes(served: ServedRun) -> list[tuple[str, str, dict, set[str]]]:
    """(method, path, request kwargs, roles that may call it)."""
    known = _known_ids(served, 2)
    return [
        ("GET", "/metrics", {}, {"admin"}),
        ("POST", "/v1/batches", {"content": b""}, {"vendor"}),
        ("GET", "/v1/batches/00000000-0000-4000-8000-000000000000", {}, {"vendor", "admin"}),
        ("GET", "/v1/uploads/000000000000000000000000", {}, {"vendor", "admin"}),
        ("POST", "/v1/scores", {"json": {"customer_ids": known}}, {"campaign_tool", "admin"}),
        (
            "GET",
            "/v1/lists/mobile-banking?branch=B001",
            {},
            {"campaign_tool", "admin", "analyst", "head_office", "marketer"},
        ),
        (
            "POST",
            "/v1/outcomes",
            {
                "json": {
                    "campaign_id": "matrix-test",
                    "outcomes": [{"customer_id": known[0], "treatment": True, "responded": False}],
                }
            },
            {"campaign_tool", "admin"},
        ),
        (
            "POST",
            "/v1/query",
            {"json": {"sql": "SELECT count(*) AS n FROM customers"}},
            {"analyst", "head_office", "admin"},
        ),
        ("DELETE", "/v1/tokens/0000000000000000", {}, {"admin"}),  # admin: 404, no such token
        *_campaign_routes(known[0]),
    ]


def _campaign_routes(customer_id: int) -> list[tuple[str, str, dict, set[str]]]:
    """The campaign routes: declared first, so the reads find the campaign; writes to a
    campaign that does not exist get 404 (past the role check), a draft's readout 409."""
    declaration = {
        "name": MATRIX_CAMPAIGN,
        "priority": 5,
        "objective": {"value": 10.0},
        "audience": {"source": "model", "model": "acquisition", "deciles": [1]},
        "channel": {"kind": "sms", "capacity_per_branch_per_day": 100},
        "stages": {
            "whitelist": [customer_id],
            "ab": {"baseline_rate": 0.05, "minimum_detectable_effect": 0.02},
        },
    }
    marketers = {"marketer", "admin"}
    head_office = {"marketer", "admin", "head_office"}
    name, nobody = f"/v1/campaigns/{MATRIX_CAMPAIGN}", "/v1/campaigns/matrix-nobody"
    plan = {"campaigns": ["matrix-nobody"], "window_start": "2028-01-03"}
    return [
        ("POST", "/v1/campaigns", {"json": declaration}, marketers),
        ("GET", "/v1/campaigns", {}, head_office),
        ("GET", name, {}, head_office),
        ("POST", "/v1/campaigns/plan", {"json": plan}, marketers),
        ("POST", f"{nobody}/promote", {"json": {"to_stage": "whitelist"}}, marketers),
        ("POST", f"{nobody}/close", {}, marketers),
        ("POST", f"{nobody}/deliveries", {}, marketers),
        ("GET", f"{name}/deliveries", {}, {"campaign_tool", "marketer", "admin"}),
        ("GET", f"{name}/deliveries/1?branch_id=B001", {}, {"campaign_tool", "admin"}),
        ("GET", f"{name}/readout", {}, {"marketer", "admin", "analyst", "head_office"}),
    ]


def test_every_role_reaches_its_routes_and_gets_403_elsewhere(
    served: ServedRun, marketer_token: str
):
    tokens = {role: getattr(served.tokens, role, marketer_token) for role in ROLES}
    with httpx.Client(base_url=served.url, timeout=60) as client:
        for method, path, kwargs, allowed in _routes(served):
            for role, token in tokens.items():
                answer = client.request(method, path, headers=bearer(token), **kwargs)
                if role in allowed:
                    assert answer.status_code not in (401, 403), (method, path, role, answer.text)
                    assert answer.status_code < 500, (method, path, role, answer.text)
                else:
                    assert answer.status_code == 403, (method, path, role, answer.text)
            for headers in ({}, bearer("bf_0123456789abcdef_" + "A" * 43), bearer("nonsense")):
                answer = client.request(method, path, headers=headers, **kwargs)
                assert answer.status_code == 401, (method, path, headers)
                assert answer.headers["www-authenticate"] == "Bearer"
        assert client.get("/healthz").status_code == 200


def test_scores_give_decile_reasons_and_the_model_version(served: ServedRun):
    known = _known_ids(served)
    current = Registry(RunFolder(served.run).models).current("acquisition")
    answer = httpx.post(
        f"{served.url}/v1/scores",
        json={"customer_ids": [*known, 999]},
        headers=bearer(served.tokens.campaign_tool),
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["model"] == "acquisition" and body["model_version"] == current
    assert [s["customer_id"] for s in body["scores"]] == known
    assert body["unknown"] == [999]
    batch = pl.read_parquet(RunFolder(served.run).scores / "acquisition.parquet")
    for item in body["scores"]:
        row = batch.filter(pl.col("customer_id") == item["customer_id"]).row(0, named=True)
        assert item["score"] == pytest.approx(row["score"], rel=1e-6)
        assert item["decile"] == row["decile"] and 1 <= item["decile"] <= 10
        assert len(item["reasons"]) <= 3
    too_many = httpx.post(
        f"{served.url}/v1/scores",
        json={"customer_ids": list(range(served.settings.max_score_ids + 1))},
        headers=bearer(served.tokens.campaign_tool),
    )
    # Refused while the JSON is parsed (the schema's bound), before the route runs.
    assert too_many.status_code == 422 and "at most 1000 items" in too_many.text


def test_lists_stream_csv_and_parquet_and_analysts_stay_in_their_branch(served: ServedRun):
    headers = bearer(served.tokens.campaign_tool)
    csv = httpx.get(f"{served.url}/v1/lists/rescue?branch=B001&format=csv", headers=headers)
    parquet = httpx.get(f"{served.url}/v1/lists/rescue?branch=B001&format=parquet", headers=headers)
    assert csv.status_code == parquet.status_code == 200
    frame = pl.read_parquet(io.BytesIO(parquet.content))
    assert pl.read_csv(io.BytesIO(csv.content)).height == frame.height > 0
    assert frame["branch_id"].unique().to_list() == ["B001"]
    analyst = bearer(served.tokens.analyst)
    assert httpx.get(f"{served.url}/v1/lists/rescue?branch=B001", headers=analyst).is_success
    other = httpx.get(f"{served.url}/v1/lists/rescue?branch=B002", headers=analyst)
    assert other.status_code == 403
    assert httpx.get(f"{served.url}/v1/lists/nope?branch=B001", headers=headers).status_code == 404
    bad = httpx.get(f"{served.url}/v1/lists/rescue?branch=../x", headers=headers)
    assert bad.status_code == 422


def test_outcomes_are_recorded_for_known_customers_only(served: ServedRun):
    known = _known_ids(served, 3)
    answer = httpx.post(
        f"{served.url}/v1/outcomes",
        json={
            "campaign_id": "coupon-2026q4",
            "outcomes": [
                {"customer_id": known[0], "treatment": True, "responded": True},
                {"customer_id": known[1], "treatment": False, "responded": False},
                {"customer_id": 7, "treatment": True, "responded": False},
            ],
        },
        headers=bearer(served.tokens.campaign_tool),
    )
    assert answer.status_code == 201, answer.text
    assert answer.json() == {
        "campaign_id": "coupon-2026q4",
        "recorded": 2,
        "already_recorded": 0,
        "unknown": [7],
    }
    rows = (
        served.service.cursor()
        .execute(
            "SELECT customer_id, treatment, responded FROM outcomes "
            "WHERE campaign_id = 'coupon-2026q4' ORDER BY customer_id"
        )
        .fetchall()
    )
    assert rows == sorted([(known[0], True, True), (known[1], False, False)])
    bad = httpx.post(
        f"{served.url}/v1/outcomes",
        json={"campaign_id": "x y", "outcomes": []},
        headers=bearer(served.tokens.campaign_tool),
    )
    assert bad.status_code == 422


def test_a_retried_outcomes_post_records_once(served: ServedRun):
    known = _known_ids(served, 3)
    body: dict[str, Any] = {
        "campaign_id": "retry-2026q4",
        "outcomes": [
            {"customer_id": known[0], "treatment": True, "responded": True},
            {
                "customer_id": known[1],
                "treatment": False,
                "contacted": False,
                "responded": False,
                "occurred_at": "2026-10-01T17:30:00+08:00",
            },
            {"customer_id": 7, "treatment": True, "responded": False},
        ],
    }
    headers = bearer(served.tokens.campaign_tool)
    cur = served.service.cursor()

    def stored() -> list[tuple[object, ...]]:
        return cur.execute(
            "SELECT customer_id, responded, occurred_at FROM outcomes "
            "WHERE campaign_id = 'retry-2026q4' ORDER BY customer_id, recorded_at"
        ).fetchall()

    with httpx.Client(base_url=served.url, timeout=30) as client:
        first = client.post("/v1/outcomes", json=body, headers=headers)
        again = client.post("/v1/outcomes", json=body, headers=headers)
        assert first.status_code == again.status_code == 201, again.text
        assert (first.json()["recorded"], first.json()["already_recorded"]) == (2, 0)
        assert again.json() == {
            "campaign_id": "retry-2026q4",
            "recorded": 0,
            "already_recorded": 2,
            "unknown": [7],
        }
        assert len(stored()) == 2

        # Retries racing each other (the client gave up on a slow answer) record once too.
        racing = {**body, "campaign_id": "retry-race"}
        with ThreadPoolExecutor(4) as pool:
            answers = list(
                pool.map(
                    lambda _: client.post("/v1/outcomes", json=racing, headers=headers), "abcd"
                )
            )
        assert sorted(a.json()["recorded"] for a in answers) == [0, 0, 0, 2]
        # fetchall: a result read with fetchone keeps this cursor's transaction open, and
        # DuckDB then refuses the next stage change of a campaign as a write conflict.
        count = cur.execute("SELECT count(*) FROM outcomes WHERE campaign_id = 'retry-race'")
        assert count.fetchall() == [(2,)]

        # A correction is a new report and is recorded, a reverting one too: the newest wins.
        corrected = {**body, "outcomes": [{**body["outcomes"][0], "responded": False}]}
        assert client.post("/v1/outcomes", json=corrected, headers=headers).json()["recorded"] == 1
        assert client.post("/v1/outcomes", json=body, headers=headers).json()["recorded"] == 1
        assert [r[1] for r in stored() if r[0] == known[0]] == [True, False, True]

        # Exact copies inside one body count once; two states for one key are refused.
        twice = {**body, "outcomes": [body["outcomes"][1]] * 2}
        answer = client.post("/v1/outcomes", json=twice, headers=headers).json()
        assert (answer["recorded"], answer["already_recorded"]) == (0, 2)
        clash = {**body, "outcomes": [body["outcomes"][0], corrected["outcomes"][0]]}
        refused = client.post("/v1/outcomes", json=clash, headers=headers)
        assert refused.status_code == 422
        assert "one state per customer and occurred_at" in refused.json()["detail"]
    assert len(stored()) == 4


def test_every_request_is_audited_without_raw_identifiers(served: ServedRun):
    marker = f"audit-{time.monotonic_ns()}"
    with httpx.Client(base_url=served.url) as client:
        client.get("/v1/lists/rescue?branch=B001", headers=bearer(served.tokens.campaign_tool))
        client.post("/v1/query", json={"sql": f"SELECT '{marker}' AS m"}, headers={})
        client.post(
            "/v1/scores",
            json={"customer_ids": _known_ids(served, 3)},
            headers=bearer(served.tokens.campaign_tool),
        )
    cur = AuditTrailQuery(served.service)

    def newest() -> dict[str, tuple[Any, ...]] | None:
        # A record is stamped when its request's handler finishes, which may be just after the
        # client got the answer and sent the next request: the three may come in any order.
        rows = cur.execute(
            'SELECT actor, role, action, rows, status FROM audit_log ORDER BY "at" DESC LIMIT 3'
        ).fetchall()
        by_action = {row[2]: row for row in rows}
        return by_action if "POST /v1/scores" in by_action and len(by_action) == 3 else None

    found = eventually(newest, timeout=5, interval=0.05, what="3 audit rows")
    scores = found["POST /v1/scores"]
    query = found["POST /v1/query"]
    lists = found["GET /v1/lists/{campaign}"]
    assert scores[1:] == ("campaign_tool", "POST /v1/scores", 3, "200")
    assert query == ("anonymous", None, "POST /v1/query", None, "401")
    assert lists[1:3] == ("campaign_tool", "GET /v1/lists/{campaign}") and lists[4] == "200"
    dump = str(cur.execute("SELECT * FROM audit_log").fetchall())
    assert marker not in dump  # SQL text is never logged
    customers = pl.read_parquet(served.run / "world" / "bank" / "customers.parquet")
    phones = normalize_phones(customers["phone"]).values.drop_nulls().head(500).to_list()
    assert not any(p in dump for p in phones)


def test_metrics_are_prometheus_text(served: ServedRun):
    httpx.get(f"{served.url}/healthz")
    answer = httpx.get(f"{served.url}/metrics", headers=bearer(served.tokens.admin))
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    text = answer.text
    assert 'bankfusion_requests_total{method="GET",route="/healthz",status="200"}' in text
    assert 'bankfusion_request_seconds_bucket{route="/healthz",le="+Inf"}' in text
    assert "bankfusion_pending_uploads 0" in text
    assert 'bankfusion_batches{status="loaded"} 1' in text
    resident = re.search(r"^bankfusion_resident_bytes (\d+)$", text, re.MULTILINE)
    assert resident is not None and int(resident.group(1)) > 50 << 20
    assert re.search(r'^bankfusion_store_memory_bytes\{tag="[A-Z_]+"\} \d+$', text, re.MULTILINE)
    audited = re.search(r"^bankfusion_audit_records_total (\d+)$", text, re.MULTILINE)
    assert audited is not None  # written by the audit thread: any count


def _audited(served: ServedRun, action: str, detail: str, *, rows: int) -> list[tuple[str, str]]:
    """Return (actor, status) of the audit rows of `action` with `detail`, once `rows` of them
    are written (the audit thread writes in batches, maybe one request at a time; up to
    10 s)."""
    cur = AuditTrailQuery(served.service)

    def found() -> list[tuple[str, str]] | None:
        stored = cur.execute(
            'SELECT actor, status FROM audit_log WHERE action = ? AND detail = ? ORDER BY "at"',
            [action, detail],
        ).fetchall()
        return stored if len(stored) >= rows else None

    return eventually(found, timeout=10, interval=0.05, what=f"{rows} audit rows of {action}")


def test_an_admin_revokes_a_token_and_its_next_request_gets_401(served: ServedRun):
    # Made while the service runs, through a cursor of its store: the book picks it up on a miss.
    issued = create_token(
        served.service.cursor(), role="campaign_tool", now=NOW, label="revoke-test"
    )
    token_id, headers = issued.principal.token_id, bearer(issued.secret)
    with httpx.Client(base_url=served.url, timeout=60) as client:

        def status() -> int | None:
            code = client.get("/v1/lists/rescue?branch=B001", headers=headers).status_code
            return None if code == 401 else code

        assert eventually(status, timeout=10, interval=0.1, what="the new token picked up") == 200

        for role in ("vendor", "analyst", "head_office", "campaign_tool"):
            denied = client.delete(
                f"/v1/tokens/{token_id}", headers=bearer(getattr(served.tokens, role))
            )
            assert denied.status_code == 403, (role, denied.text)
        assert client.get("/v1/lists/rescue?branch=B001", headers=headers).status_code == 200

        admin = bearer(served.tokens.admin)
        revoked = client.delete(f"/v1/tokens/{token_id}", headers=admin)
        assert revoked.status_code == 204, revoked.text
        after = client.get("/v1/lists/rescue?branch=B001", headers=headers)
        assert after.status_code == 401
        again = client.delete(f"/v1/tokens/{token_id}", headers=admin)
        assert again.status_code == 404 and "fusion token list" in again.json()["detail"]
        assert client.delete("/v1/tokens/not-an-id", headers=admin).status_code == 422

    row = served.service.cursor().execute(
        "SELECT revoked_at IS NOT NULL FROM api_tokens WHERE token_id = ?", [token_id]
    )
    assert row.fetchall() == [(True,)]
    audited = _audited(served, "DELETE /v1/tokens/{token_id}", f"revoke {token_id}", rows=2)
    assert [status for _, status in audited] == ["204", "404"]


def test_a_made_up_http_method_adds_no_metrics_series(served: ServedRun):
    admin = bearer(served.tokens.admin)
    with httpx.Client(base_url=served.url) as client:
        # Methods HTTP does not know are refused by the server's parser (httptools) with a 400
        # before the app sees them; methods it knows but no route takes reach the app: 405.
        for method in ("BREW", "XYZZY-1"):
            assert client.request(method, "/healthz").status_code in {400, 405}
        for method in ("PROPFIND", "MKCOL", "PURGE"):
            assert client.request(method, "/healthz").status_code == 405
        text = client.get("/metrics", headers=admin).text
    for method in ("BREW", "XYZZY", "PROPFIND", "MKCOL", "PURGE"):
        assert method not in text
    assert 'method="OTHER",route="/healthz",status="405"}' in text


def _chunked(size: int) -> Iterator[bytes]:
    """Yield `size` bytes of one JSON string in 64 KiB blocks: sent with no Content-Length."""
    yield b'{"sql": "'
    for _ in range(size // (64 << 10)):
        yield b"x" * (64 << 10)
    yield b'"}'


def test_a_json_body_past_the_cap_gets_413_before_it_is_parsed(served: ServedRun):
    cap = served.settings.max_body_bytes
    assert cap == 1 << 20
    big = "SELECT 1 AS one -- " + "x" * (2 << 20)
    with httpx.Client(base_url=served.url, timeout=60) as client:
        for token in (served.tokens.analyst, served.tokens.admin):
            answer = client.post("/v1/query", json={"sql": big}, headers=bearer(token))
            assert answer.status_code == 413, answer.text
            assert f"at most {cap:,} bytes" in answer.json()["detail"]
        streamed = client.post(
            "/v1/query",
            content=_chunked(2 << 20),
            headers={**bearer(served.tokens.analyst), "Content-Type": "application/json"},
        )
        assert streamed.status_code == 413, streamed.text
        assert "content-length" not in streamed.request.headers
        # Under the cap, the same route parses and answers as ever.
        small = client.post(
            "/v1/query", json={"sql": "SELECT 1 AS one"}, headers=bearer(served.tokens.analyst)
        )
        assert small.status_code == 200, small.text
