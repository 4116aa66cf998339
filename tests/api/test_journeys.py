"""The journey routes on a real server: declare (422 naming the field), read, promote (a refused
gate says why) and close strategies, send events (once each, refused rows with their reasons),
read a strategy out after a month of engine days and dry-run a day; roles by route, no 5xx on
hostile bodies, every call audited, no raw identifier in any answer.

The served run is a copy of the shared API demo run whose store got its journey events, three
strategies and 31 days of `run_day` before the service started (`tests.support.served_journeys`).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fusion.journeys.engine import dry_run
from fusion.journeys.readout import readout
from fusion.pipeline.journeys import opt_out_comparison
from matcher.identity import normalize_device_ids, normalize_id_numbers, normalize_phones
from tests.support.audit import AuditTrailQuery
from tests.support.polling import eventually
from tests.support.served_journeys import (
    DRAFT,
    IDLE,
    PUSH,
    JourneyWorld,
    journey_run,
    push_document,
    serve_journeys,
)
from tests.support.server import ServedRun, bearer

pytestmark = pytest.mark.slow

AS_OF = "2026-11-30"
ROLES = ("vendor", "analyst", "head_office", "campaign_tool", "marketer", "admin")


@pytest.fixture(scope="module")
def journeys(
    demo_run: Path, tmp_path_factory: pytest.TempPathFactory, worker_id: str
) -> Iterator[tuple[ServedRun, JourneyWorld]]:
    shared = journey_run(tmp_path_factory, worker_id, demo_run)
    with serve_journeys(shared, tmp_path_factory.mktemp("journeys")) as pair:
        yield pair


@pytest.fixture(scope="module")
def served_j(journeys: tuple[ServedRun, JourneyWorld]) -> ServedRun:
    return journeys[0]


@pytest.fixture(scope="module")
def world(journeys: tuple[ServedRun, JourneyWorld]) -> JourneyWorld:
    return journeys[1]


@pytest.fixture(scope="module")
def client(served_j: ServedRun) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=served_j.url, timeout=120) as http:
        yield http


def _headers(served: ServedRun, world: JourneyWorld, role: str) -> dict[str, str]:
    token = world.marketer if role == "marketer" else getattr(served.tokens, role)
    return bearer(token)


def _document(name: str, whitelist: list[int], **changes: Any) -> dict[str, Any]:
    document = push_document(name, **changes)
    document["stages"] = {**document["stages"], "whitelist": whitelist}
    return document


def _store(served: ServedRun) -> Any:
    """The service's own store on a cursor of this thread (reads only)."""
    return served.service.store.on_cursor(served.service.cursor())


def test_roles_by_route(served_j: ServedRun, world: JourneyWorld, client: httpx.Client):
    """Each route answers its roles and 403s the others (401 without a token)."""
    event = {"customer_id": world.customers[0], "event": "login",
             "occurred_at": "2026-11-20T10:00:00Z"}  # fmt: skip
    routes: list[tuple[str, str, Any, set[str]]] = [
        ("GET", "/v1/journeys", None, {"marketer", "admin", "head_office"}),
        ("GET", f"/v1/journeys/{PUSH}", None, {"marketer", "admin", "head_office"}),
        ("GET", f"/v1/journeys/{PUSH}/readout?as_of={AS_OF}", None,
         {"marketer", "admin", "head_office"}),
        ("GET", f"/v1/journeys/{PUSH}/dry-run?day=2026-11-02", None,
         {"marketer", "admin", "head_office"}),
        ("POST", "/v1/journeys", _document("role-check", world.whitelist), {"marketer", "admin"}),
        ("POST", f"/v1/journeys/{IDLE}/promote", None, {"marketer", "admin"}),
        ("POST", "/v1/journey-events", {"events": [event]}, {"campaign_tool", "admin"}),
    ]  # fmt: skip
    for method, path, body, allowed in routes:
        assert client.request(method, path, json=body).status_code == 401, path
        for role in ROLES:
            answer = client.request(
                method, path, json=body, headers=_headers(served_j, world, role)
            )
            if role in allowed:
                assert answer.status_code not in (401, 403, 500), (path, role, answer.text)
            else:
                assert answer.status_code == 403, (path, role, answer.status_code)
    # Closing is the marketers': an analyst may not, even at head office.
    for role in ("head_office", "campaign_tool"):
        answer = client.post(f"/v1/journeys/{DRAFT}/close", headers=_headers(served_j, world, role))
        assert answer.status_code == 403


def test_declare_again_change_a_draft_and_invalid_names_the_field(
    served_j: ServedRun, world: JourneyWorld, client: httpx.Client
):
    marketer = _headers(served_j, world, "marketer")
    body = _document("api-journey-declared", world.whitelist)
    first = client.post("/v1/journeys", json=body, headers=marketer)
    assert first.status_code == 201, first.text
    record = first.json()
    assert (record["strategy_id"], record["stage"], record["version"]) == (
        "api-journey-declared", "draft", 1,
    )  # fmt: skip
    assert record["history"] == []
    assert record["declaration"]["stages"]["whitelist"] == world.whitelist
    assert record["created_by"] != world.marketer and "salt" not in record
    again = client.post("/v1/journeys", json=body, headers=marketer)
    assert again.status_code == 200 and again.json()["version"] == 1
    changed = client.post("/v1/journeys", json={**body, "priority": 3}, headers=marketer)
    assert changed.status_code == 201 and changed.json()["version"] == 2
    # Past its draft a strategy's declaration is fixed.
    fixed = client.post("/v1/journeys", json=_document(PUSH, [1], priority=9), headers=marketer)
    assert fixed.status_code == 409 and "fixed once it leaves the draft" in fixed.json()["detail"]

    def refused(document: Any) -> tuple[int, str | None]:
        answer = client.post("/v1/journeys", json=document, headers=marketer)
        return answer.status_code, answer.json().get("field")

    nodes = copy.deepcopy(body["nodes"])
    nodes[3]["channel"] = "pigeon"
    assert refused({**body, "nodes": nodes}) == (422, "nodes[push].channel")
    assert refused({k: v for k, v in body.items() if k != "stages"}) == (422, "stages")
    assert refused({**body, "budget": 1}) == (422, "budget")
    loop = copy.deepcopy(body["nodes"])
    loop[6]["next"] = "clicked"  # popup -> clicked -> popup: no wait in the loop
    status, field = refused({**body, "nodes": loop})
    assert status == 422 and field is not None and field.startswith("nodes[")
    answer = client.post("/v1/journeys", json={**body, "nodes": loop}, headers=marketer)
    assert "has no wait node" in answer.json()["detail"]
    dangling = copy.deepcopy(body["nodes"])
    dangling[0]["next"] = "nowhere"
    assert refused({**body, "nodes": dangling}) == (422, "nodes[registered]")
    headers = {**marketer, "Content-Type": "application/json"}
    text = json.dumps({**body, "control_share": "V"})
    for value in ("NaN", "Infinity", "1e400"):
        nan = client.post("/v1/journeys", content=text.replace('"V"', value), headers=headers)
        assert nan.status_code == 422 and nan.json()["field"] == "control_share", nan.text
    for shape in ([body], "text", 3):
        assert client.post("/v1/journeys", json=shape, headers=marketer).status_code == 422
    huge = client.post("/v1/journeys", json={**body, "x" * 500_000: 1}, headers=marketer)
    assert huge.status_code in (413, 422) and len(huge.content) < 4_000
    assert client.get("/v1/journeys/api-nan-test", headers=marketer).status_code == 404


def test_read_the_book_and_one_strategy(
    served_j: ServedRun, world: JourneyWorld, client: httpx.Client
):
    head_office = _headers(served_j, world, "head_office")
    book = client.get("/v1/journeys", headers=head_office)
    assert book.status_code == 200
    stages = {j["strategy_id"]: j["stage"] for j in book.json()["journeys"]}
    assert {PUSH: "pilot", IDLE: "whitelist", DRAFT: "draft"}.items() <= stages.items()
    push = client.get(f"/v1/journeys/{PUSH}", headers=head_office).json()
    assert [(h["from_stage"], h["to_stage"]) for h in push["history"]] == [
        ("draft", "whitelist"), ("whitelist", "pilot"),
    ]  # fmt: skip
    assert push["history"][1]["checks"]["whitelist_confirmed"]["passed"] is True
    assert [n["id"] for n in push["declaration"]["nodes"]][:2] == ["registered", "settle"]
    missing = client.get("/v1/journeys/no-such-journey", headers=head_office)
    assert missing.status_code == 404 and "POST /v1/journeys" in missing.json()["detail"]
    assert client.get("/v1/journeys/Bad_Name", headers=head_office).status_code == 422
    branch = client.get("/v1/journeys", headers=_headers(served_j, world, "analyst"))
    assert branch.status_code == 403 and "head office" in branch.json()["detail"]


def test_promote_refused_at_a_gate_says_why_then_promote_and_close(
    served_j: ServedRun, world: JourneyWorld, client: httpx.Client
):
    marketer = _headers(served_j, world, "marketer")
    idle = client.post(f"/v1/journeys/{IDLE}/promote", headers=marketer)
    assert idle.status_code == 409, idle.text
    refusal = idle.json()
    assert (refusal["gate"], refusal["stage"]) == ("whitelist_confirmed", "pilot")
    assert "0 of 1 touched named customers confirmed exposed" in refusal["detail"]
    push = client.post(f"/v1/journeys/{PUSH}/promote", headers=marketer).json()
    assert push["gate"] == "pilot_exposed" and "run more days of small traffic" in push["detail"]
    skipped = client.post(
        f"/v1/journeys/{PUSH}/promote", json={"to_stage": "full"}, headers=marketer
    )
    assert skipped.status_code == 409 and skipped.json()["gate"] == "order"
    name = "api-journey-promoted"
    declared = client.post("/v1/journeys", json=_document(name, world.whitelist), headers=marketer)
    assert declared.status_code == 201
    promoted = client.post(
        f"/v1/journeys/{name}/promote", json={"to_stage": "whitelist"}, headers=marketer
    )
    assert promoted.status_code == 200, promoted.text
    assert promoted.json() == {
        "strategy_id": name, "from_stage": "draft", "to_stage": "whitelist",
        "checks": [{"name": "declared", "passed": True, "detail": "stage 'draft' has no gate"}],
    }  # fmt: skip
    closed = client.post(f"/v1/journeys/{name}/close", headers=marketer)
    assert closed.status_code == 200 and closed.json()["to_stage"] == "closed"
    again = client.post(f"/v1/journeys/{name}/close", headers=marketer)
    assert again.status_code == 409 and "already closed" in again.json()["detail"]
    assert client.post(f"/v1/journeys/{name}/promote", headers=marketer).status_code == 409
    assert client.post("/v1/journeys/no-such-one/promote", headers=marketer).status_code == 404
    record = client.get(f"/v1/journeys/{name}", headers=marketer).json()
    assert [h["to_stage"] for h in record["history"]] == ["whitelist", "closed"]
    assert {h["actor"] for h in record["history"]} == {_token_id(served_j, world.marketer)}


def _token_id(served: ServedRun, secret: str) -> str:
    principal = served.service.tokens.authenticate(secret)
    assert principal is not None
    return principal.token_id


def test_events_are_stored_once_each_and_refused_rows_say_why(
    served_j: ServedRun, world: JourneyWorld, client: httpx.Client
):
    tool = _headers(served_j, world, "campaign_tool")
    customer = world.customers[10]
    touch = world.delivered.row(0, named=True)
    now = datetime.now(UTC)
    events = [
        {"event_key": "app-login-1", "customer_id": customer, "event": "login",
         "occurred_at": (now - timedelta(hours=2)).isoformat()},
        {"customer_id": customer, "event": "login", "occurred_at": "2026-11-21T08:00:00+08:00"},
        {"customer_id": touch["customer_id"], "event": "click", "touch_id": touch["touch_id"],
         "occurred_at": "2026-11-21T09:00:00Z"},
        {"customer_id": 1, "event": "login", "occurred_at": "2026-11-21T09:00:00Z"},
        {"customer_id": customer, "event": "dance", "occurred_at": "2026-11-21T09:00:00Z"},
        {"customer_id": customer, "event": "click", "touch_id": "journey-push:push:1:2",
         "occurred_at": "2026-11-21T09:00:00Z"},
        {"customer_id": customer, "event": "login",
         "occurred_at": (now + timedelta(days=1)).isoformat()},
    ]  # fmt: skip
    first = client.post("/v1/journey-events", json={"events": events}, headers=tool)
    assert first.status_code == 201, first.text
    answer = first.json()
    assert (answer["recorded"], answer["already_recorded"]) == (3, 0)
    reasons = {r["row"]: r["reason"] for r in answer["refused"]}
    assert sorted(reasons) == [3, 4, 5, 6]
    assert "unknown customer" in reasons[3] and "unknown event" in reasons[4]
    assert "no touch delivered to this customer" in reasons[5] and "future" in reasons[6]
    again = client.post("/v1/journey-events", json={"events": events}, headers=tool)
    assert (again.json()["recorded"], again.json()["already_recorded"]) == (0, 3)
    # The same key with other content is the same event: the sender's key decides.
    resent = {**events[0], "occurred_at": "2026-11-22T10:00:00Z"}
    third = client.post("/v1/journey-events", json={"events": [resent]}, headers=tool).json()
    assert (third["recorded"], third["already_recorded"]) == (0, 1)
    stored = (
        _store(served_j)
        .execute(
            "SELECT count(*), min(source) FROM journey_events WHERE customer_id = ? AND "
            "event = 'login' AND source <> 'fixture-app'",
            [customer],
        )
        .fetchone()
    )
    assert stored == (2, _token_id(served_j, served_j.tokens.campaign_tool))
    malformed: tuple[dict[str, Any], ...] = (
        {"events": []},
        {"events": [{**events[1], "customer_id": str(customer)}]},
        {"events": [{**events[1], "occurred_at": 1790000000}]},
        {"events": [{**events[1], "extra": 1}]},
        {"events": [{k: v for k, v in events[1].items() if k != "event"}]},
    )
    for bad in malformed:
        assert client.post("/v1/journey-events", json=bad, headers=tool).status_code == 422


def test_the_readout_after_a_month_of_days(
    served_j: ServedRun, world: JourneyWorld, client: httpx.Client
):
    answer = client.get(
        f"/v1/journeys/{PUSH}/readout", params={"as_of": AS_OF}, headers=_headers(
            served_j, world, "head_office")
    )  # fmt: skip
    assert answer.status_code == 200, answer.text
    body = answer.json()
    arms = {a["arm"]: a for a in body["arms"]}
    assert arms["treatment"]["customers"] > 100 and arms["control"]["customers"] > 20
    assert arms["treatment"]["exposed"] > 100 and arms["treatment"]["clicked"] > 10
    assert body["comparisons"]["goal"]["diff_ci_low"] < body["comparisons"]["goal"]["diff"]
    assert {n["node_id"] for n in body["nodes"]} >= {"push", "popup", "done"}
    assert {f["arm"] for f in body["funnel"]} == {"treatment", "control"}
    # Every count under k is withheld (null) with its rates.
    for table in ("arms", "nodes", "funnel"):
        for row in body[table]:
            for key, value in row.items():
                if isinstance(value, int) and not isinstance(value, bool):
                    assert value == 0 or value >= body["k"] or key in ("k",), (table, key)
    store, day, now = _store(served_j), date.fromisoformat(AS_OF), datetime.now(UTC)
    direct = readout(store, PUSH, as_of=day, now=now)
    opt_outs = opt_out_comparison(store, PUSH, as_of=day, now=now)
    assert body == json.loads(
        json.dumps({**direct.to_dict(), "opt_outs": opt_outs.to_dict() if opt_outs else None})
    )
    assert "files" not in body and str(served_j.run) not in answer.text
    for query in ("as_of=9999-12-31", "as_of=1999-12-31", "as_of=yesterday"):
        bad = client.get(f"/v1/journeys/{PUSH}/readout?{query}", headers=_headers(
            served_j, world, "marketer"))  # fmt: skip
        assert bad.status_code == 422, query
    before = datetime.now(UTC).date().isoformat()
    today = client.get(f"/v1/journeys/{DRAFT}/readout", headers=_headers(served_j, world, "admin"))
    after = datetime.now(UTC).date().isoformat()  # the request may cross midnight UTC
    assert today.status_code == 200 and today.json()["as_of"] in {before, after}


def test_the_dry_run_counts_per_node(
    served_j: ServedRun, world: JourneyWorld, client: httpx.Client
):
    day = "2026-11-02"
    marketer = client.get(
        f"/v1/journeys/{PUSH}/dry-run", params={"day": day}, headers=_headers(
            served_j, world, "marketer")
    )  # fmt: skip
    assert marketer.status_code == 200, marketer.text
    exact = marketer.json()
    assert (exact["stage"], exact["policy"], exact["day"]) == ("pilot", "operational", day)
    direct = dry_run(
        _store(served_j), date.fromisoformat(day), now=datetime.now(UTC), strategy_ids=[PUSH]
    ).drop("strategy_id")
    assert [{k: v for k, v in n.items() if k != "suppressed_cells"} for n in exact["nodes"]] == (
        direct.to_dicts()
    )
    assert sum(n["visits"] for n in exact["nodes"]) > 0
    analyst = client.get(
        f"/v1/journeys/{PUSH}/dry-run", params={"day": day}, headers=_headers(
            served_j, world, "head_office")
    ).json()  # fmt: skip
    assert analyst["policy"] == "k-anonymous"
    for node in analyst["nodes"]:
        for measure in ("visits", "asked", "delivered", "held_out", "blocked"):
            assert node[measure] is None or node[measure] == 0 or node[measure] >= 10
    # A draft is taken as at full launch; nothing is written.
    runs = _store(served_j).execute("SELECT count(*) FROM journey_runs").fetchone()
    draft = client.get(f"/v1/journeys/{DRAFT}/dry-run", headers=_headers(served_j, world, "admin"))
    assert draft.status_code == 200 and draft.json()["stage"] == "draft"
    assert _store(served_j).execute("SELECT count(*) FROM journey_runs").fetchone() == runs
    far = client.get(f"/v1/journeys/{PUSH}/dry-run?day=0001-01-01", headers=_headers(
        served_j, world, "admin"))  # fmt: skip
    assert far.status_code == 422


def _raw_identifiers(served: ServedRun) -> list[str]:
    """Every customer's phone, ID number and device id, normalised and as written."""
    customers = pl.read_parquet(served.run / "world" / "bank" / "customers.parquet")
    found: set[str] = set()
    for column, normalise in (("phone", normalize_phones), ("id_number", normalize_id_numbers),
                              ("device_id", normalize_device_ids)):  # fmt: skip
        found |= set(normalise(customers[column]).values.drop_nulls().to_list())
        found |= {v.strip() for v in customers[column].drop_nulls().to_list() if len(v) >= 8}
    return sorted(found)


def test_no_answer_holds_a_raw_identifier_and_every_call_is_audited(
    served_j: ServedRun, world: JourneyWorld, client: httpx.Client
):
    admin = _headers(served_j, world, "admin")
    texts = [
        client.get(path, headers=admin).text
        for path in (
            "/v1/journeys",
            f"/v1/journeys/{PUSH}",
            f"/v1/journeys/{PUSH}/readout?as_of={AS_OF}",
            f"/v1/journeys/{PUSH}/dry-run?day=2026-11-02",
        )
    ]
    identifiers = _raw_identifiers(served_j)
    assert identifiers and not [i for i in identifiers if any(i in t for t in texts)]
    cur = AuditTrailQuery(served_j.service)

    def audited() -> list[tuple[Any, ...]] | None:
        rows = cur.execute(
            "SELECT action, role, status FROM audit_log WHERE action LIKE '% /v1/journey%'"
        ).fetchall()
        actions = {r[0] for r in rows}
        wanted = {
            "GET /v1/journeys", "GET /v1/journeys/{strategy_id}", "POST /v1/journeys",
            "GET /v1/journeys/{strategy_id}/readout", "GET /v1/journeys/{strategy_id}/dry-run",
            "POST /v1/journeys/{strategy_id}/promote", "POST /v1/journey-events",
        }  # fmt: skip
        return rows if wanted <= actions else None

    rows = eventually(audited, timeout=10, interval=0.1, what="the journey calls audited")
    assert ("POST /v1/journeys/{strategy_id}/promote", "marketer", "409") in rows
    assert ("GET /v1/journeys", "analyst", "403") in rows
    detail = cur.execute(
        "SELECT detail FROM audit_log WHERE action = 'GET /v1/journeys/{strategy_id}/readout' "
        "AND status = '200' LIMIT 1"
    ).fetchone()
    assert detail is not None and detail[0] == f"{PUSH} as of {AS_OF}"


_HOSTILE: tuple[Any, ...] = (
    float("nan"), float("inf"), 10**30, 2**63, -1, 1.5, True, None, "", "yes", "1000000010",
    [], {}, [[[]]], {"a": {"b": None}}, "9999-12-31T23:59:59-01:00", "2026-02-30T00:00:00",
)  # fmt: skip


def _slots(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield path
    if isinstance(value, dict | list):
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, inner in items:
            yield from _slots(inner, (*path, key))


def test_hostile_bodies_get_no_server_error(
    served_j: ServedRun, world: JourneyWorld, client: httpx.Client
):
    """Each JSON route's valid body with one value replaced, or an unknown field added."""
    event = {"customer_id": world.customers[1], "event": "login",
             "occurred_at": "2026-11-20T10:00:00Z", "event_key": "k", "touch_id": None}  # fmt: skip
    target = "api-hostile-promote"  # promoted at most to its whitelist, then refused
    declared = client.post("/v1/journeys", json=_document(target, world.whitelist),
                           headers=_headers(served_j, world, "admin"))  # fmt: skip
    assert declared.status_code == 201
    templates = [
        ("/v1/journeys", _document("api-hostile", world.whitelist), "marketer"),
        ("/v1/journey-events", {"events": [event]}, "campaign_tool"),
        (f"/v1/journeys/{target}/promote", {"to_stage": "pilot"}, "admin"),
    ]
    for path, template, role in templates:
        headers = {**_headers(served_j, world, role), "Content-Type": "application/json"}
        _fuzz(client, path, template, headers)


def _fuzz(client: httpx.Client, path: str, template: Any, headers: dict[str, str]) -> None:
    """Post `path` variants of `template`; fail on any 5xx or a large 422."""

    @given(st.sampled_from(list(_slots(template))), st.sampled_from(_HOSTILE), st.booleans())
    @settings(max_examples=40, derandomize=True, database=None, deadline=None,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    def fuzz(slot: tuple[Any, ...], value: Any, add: bool) -> None:
        body = copy.deepcopy(template)
        if not slot:
            body = value
        else:
            parent = body
            for key in slot[:-1]:
                parent = parent[key]
            if add and isinstance(parent, dict):
                parent[f"unknown_{slot[-1]}"] = value
            else:
                parent[slot[-1]] = value
        answer = client.post(path, content=json.dumps(body), headers=headers)
        assert answer.status_code < 500, (path, body, answer.text)
        assert answer.status_code != 422 or len(answer.content) < 4_000

    fuzz()


def test_a_stored_strategy_that_cannot_be_read_is_named_not_blamed_on_the_request(
    served_j: ServedRun, world: JourneyWorld, client: httpx.Client
):
    marketer = _headers(served_j, world, "marketer")
    name = "api-journey-unreadable"
    assert client.post("/v1/journeys", json=_document(name, world.whitelist),
                       headers=marketer).status_code == 201  # fmt: skip
    cur = served_j.service.cursor()
    found = cur.execute(
        "SELECT declaration FROM journey_strategies WHERE strategy_id = ?", [name]
    ).fetchone()
    assert found is not None
    stored = found[0]
    # As if the rules had changed under a stored strategy: a key this version does not know.
    broken = json.dumps({**json.loads(stored), "retired_field": 1})
    cur.execute(
        "UPDATE journey_strategies SET declaration = ? WHERE strategy_id = ?", [broken, name]
    )
    try:
        for path in (f"/v1/journeys/{name}", "/v1/journeys"):
            answer = client.get(path, headers=marketer)
            assert answer.status_code == 503, (path, answer.text)
            assert name in answer.json()["detail"] and "retired_field" in answer.json()["detail"]
        again = client.post("/v1/journeys", json=_document(name, world.whitelist), headers=marketer)
        assert again.status_code == 503
    finally:
        cur.execute(
            "UPDATE journey_strategies SET declaration = ? WHERE strategy_id = ?", [stored, name]
        )
    assert client.get(f"/v1/journeys/{name}", headers=marketer).status_code == 200
