"""Roles x routes on a real server; scoring, lists, outcomes, metrics; every request audited."""

from __future__ import annotations

import io
import time

import httpx
import polars as pl
import pytest

from fusion.registry import Registry
from fusion.runfolder import RunFolder
from matcher.identity import normalize_phones
from tests.api.conftest import Served, bearer

ROLES = ("vendor", "analyst", "head_office", "campaign_tool", "admin")


def _known_ids(served: Served, n: int = 5) -> list[int]:
    scores = pl.read_parquet(RunFolder(served.run).scores / "acquisition.parquet")
    return scores["customer_id"].head(n).to_list()


def _routes(served: Served) -> list[tuple[str, str, dict, set[str]]]:
    """(method, path, request kwargs, roles that may call it)."""
    known = _known_ids(served, 2)
    return [
        ("GET", "/metrics", {}, {"admin"}),
        ("POST", "/v1/batches", {"content": b""}, {"vendor"}),
        ("GET", "/v1/batches/00000000-0000-4000-8000-000000000000", {}, {"vendor", "admin"}),
        ("POST", "/v1/scores", {"json": {"customer_ids": known}}, {"campaign_tool", "admin"}),
        (
            "GET",
            "/v1/lists/mobile-banking?branch=B001",
            {},
            {"campaign_tool", "admin", "analyst", "head_office"},
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
    ]


def test_every_role_reaches_its_routes_and_gets_403_elsewhere(served: Served):
    tokens = {role: getattr(served.tokens, role) for role in ROLES}
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


def test_scores_give_decile_reasons_and_the_model_version(served: Served):
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
    assert too_many.status_code == 422 and "at most" in too_many.json()["detail"]


def test_lists_stream_csv_and_parquet_and_analysts_stay_in_their_branch(served: Served):
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


def test_outcomes_are_recorded_for_known_customers_only(served: Served):
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
    assert answer.json() == {"campaign_id": "coupon-2026q4", "recorded": 2, "unknown": [7]}
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


def test_every_request_is_audited_without_raw_identifiers(served: Served):
    marker = f"audit-{time.monotonic_ns()}"
    with httpx.Client(base_url=served.url) as client:
        client.get("/v1/lists/rescue?branch=B001", headers=bearer(served.tokens.campaign_tool))
        client.post("/v1/query", json={"sql": f"SELECT '{marker}' AS m"}, headers={})
        client.post(
            "/v1/scores",
            json={"customer_ids": _known_ids(served, 3)},
            headers=bearer(served.tokens.campaign_tool),
        )
    deadline = time.monotonic() + 5
    cur = served.service.cursor()
    while time.monotonic() < deadline:
        rows = cur.execute(
            'SELECT actor, role, action, rows, status FROM audit_log ORDER BY "at" DESC LIMIT 3'
        ).fetchall()
        if len(rows) == 3 and rows[0][2] == "POST /v1/scores":
            break
        time.sleep(0.05)
    scores, query, lists = rows
    assert scores[1:] == ("campaign_tool", "POST /v1/scores", 3, "200")
    assert query == ("anonymous", None, "POST /v1/query", None, "401")
    assert lists[1:3] == ("campaign_tool", "GET /v1/lists/{campaign}") and lists[4] == "200"
    dump = str(cur.execute("SELECT * FROM audit_log").fetchall())
    assert marker not in dump  # SQL text is never logged
    customers = pl.read_parquet(served.run / "world" / "bank" / "customers.parquet")
    phones = normalize_phones(customers["phone"]).values.drop_nulls().head(500).to_list()
    assert not any(p in dump for p in phones)


def test_metrics_are_prometheus_text(served: Served):
    httpx.get(f"{served.url}/healthz")
    answer = httpx.get(f"{served.url}/metrics", headers=bearer(served.tokens.admin))
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    text = answer.text
    assert 'bankfusion_requests_total{method="GET",route="/healthz",status="200"}' in text
    assert 'bankfusion_request_seconds_bucket{route="/healthz",le="+Inf"}' in text
    assert "bankfusion_pending_uploads 0" in text
    assert 'bankfusion_batches{status="loaded"} 1' in text
