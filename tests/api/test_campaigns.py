"""The campaign routes on a real server: declare, plan, promote through the gates, deliver, read
the delivery as a campaign tool, read out as head office and as a branch analyst; the roles."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import httpx
import polars as pl
import pytest

from fusion.campaigns.delivery import DELIVERY_COLUMNS
from fusion.features import TABLE_FILE
from fusion.tokens import create_token
from tests.support.audit import AuditTrailQuery
from tests.support.polling import eventually
from tests.support.server import NOW, ServedRun, bearer

pytestmark = pytest.mark.slow

WHITELIST_WINDOW = "2028-01-03"
PILOT_WINDOW = "2028-02-07"


def marketer_headers(served: ServedRun, label: str) -> dict[str, str]:
    """Return the header of a new marketer token, once the running service accepts it."""
    issued = create_token(served.service.cursor(), role="marketer", now=NOW, label=label)
    headers = bearer(issued.secret)

    def accepted() -> bool:
        return httpx.get(f"{served.url}/v1/campaigns", headers=headers).status_code == 200

    eventually(accepted, timeout=10, interval=0.1, what="the marketer token picked up")
    return headers


@pytest.fixture(scope="module")
def client(served: ServedRun) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=served.url, timeout=120) as http:
        yield http


@pytest.fixture(scope="module")
def marketer(served: ServedRun) -> dict[str, str]:
    return marketer_headers(served, "campaign-tests")


def _customers(served: ServedRun) -> pl.DataFrame:
    folder = sorted((served.run / "features").iterdir())[-1]
    return pl.read_parquet(folder / TABLE_FILE, columns=["customer_id", "branch_id"])


def _declaration(name: str, whitelist: list[int], **changes: Any) -> dict[str, Any]:
    """Return a declaration taking half of its audience into the pilot (so two compete)."""
    body: dict[str, Any] = {
        "name": name,
        "priority": 1,
        "objective": {"event": "converted", "value": 120.0, "cost_per_contact": 3.0},
        "audience": {"source": "model", "model": "rescue", "top_share": 0.5},
        "channel": {"kind": "call_centre", "capacity_per_branch_per_day": 60},
        "stages": {
            "whitelist": whitelist,
            "pilot_share": 0.5,
            "ab": {"baseline_rate": 0.01, "minimum_detectable_effect": 0.02},
        },
    }
    return {**body, **changes}


def _assigned(served: ServedRun, *names: str) -> pl.DataFrame:
    return (
        served.service.cursor()
        .execute(
            "SELECT campaign_id, customer_id, stage, arm, branch_id FROM assignments "
            "WHERE list_contains(?, campaign_id)",
            [list(names)],
        )
        .pl()
    )


def _events(served: ServedRun, name: str, customers: list[int], event: str) -> dict[str, Any]:
    at = datetime.now(UTC).isoformat()
    rows = [
        {"campaign_id": name, "customer_id": c, "event": event, "occurred_at": at}
        for c in customers
    ]
    return {"events": rows}


def test_declare_new_again_and_invalid(served: ServedRun, client: httpx.Client, marketer):
    whitelist = _customers(served)["customer_id"].head(2).to_list()
    body = _declaration("api-declare-test", whitelist)
    first = client.post("/v1/campaigns", json=body, headers=marketer)
    assert first.status_code == 201, first.text
    record = first.json()
    assert (record["campaign_id"], record["stage"], record["version"]) == (
        "api-declare-test",
        "draft",
        1,
    )
    assert record["history"] == [] and record["declaration"]["stages"]["whitelist"] == whitelist
    again = client.post("/v1/campaigns", json=body, headers=marketer)
    assert again.status_code == 200 and again.json()["version"] == 1
    changed = client.post("/v1/campaigns", json={**body, "priority": 3}, headers=marketer)
    assert changed.status_code == 201 and changed.json()["version"] == 2

    bad_channel = {**body, "channel": {"kind": "pigeon", "capacity_per_branch_per_day": 1}}
    wrong = client.post("/v1/campaigns", json=bad_channel, headers=marketer)
    assert wrong.status_code == 422 and wrong.json()["field"] == "channel.kind", wrong.text
    missing = {k: v for k, v in body.items() if k != "stages"}
    answer = client.post("/v1/campaigns", json=missing, headers=marketer)
    assert answer.status_code == 422 and answer.json()["field"] == "stages"
    unknown = client.post("/v1/campaigns", json={**body, "budget": 1}, headers=marketer)
    assert unknown.status_code == 422 and unknown.json()["field"] == "budget"
    # NaN and Infinity are not JSON, but Python's parser reads them: refused by field.
    # NaN and Infinity are not JSON, but Python's parser reads them (and 1e400 as Infinity).
    headers = {**marketer, "Content-Type": "application/json"}
    template = json.dumps(_declaration("api-nan-test", whitelist, objective={"value": "V"}))
    for value in ("NaN", "Infinity", "-Infinity", "1e400"):
        text = template.replace('"V"', value)
        nan = client.post("/v1/campaigns", content=text, headers=headers)
        assert nan.status_code == 422 and nan.json()["field"] == "objective.value", nan.text
    for shape in ([body], "text", 3):
        assert client.post("/v1/campaigns", json=shape, headers=marketer).status_code == 422
    huge = client.post("/v1/campaigns", json={**body, "x" * 500_000: 1}, headers=marketer)
    assert huge.status_code == 422 and len(huge.content) < 4_000
    assert client.get("/v1/campaigns/api-nan-test", headers=marketer).status_code == 404


def test_two_campaigns_through_whitelist_pilot_delivery_and_readout(
    served: ServedRun, client: httpx.Client, marketer: dict[str, str]
):
    customers = _customers(served)
    ids = customers["customer_id"].to_list()
    rescue, coupon = "api-rescue-call", "api-coupon-sms"
    declarations = [
        _declaration(rescue, ids[:3]),
        _declaration(
            coupon,
            ids[3:6],
            priority=2,
            audience={"source": "model", "model": "uplift", "top_share": 0.5},
            channel={"kind": "sms", "capacity_per_branch_per_day": 2000},
        ),
    ]
    for body in declarations:
        assert client.post("/v1/campaigns", json=body, headers=marketer).status_code == 201

    # Stages are never skipped; the whitelist leaves only once it was delivered.
    skip = client.post(
        f"/v1/campaigns/{rescue}/promote", json={"to_stage": "pilot"}, headers=marketer
    )
    assert skip.status_code == 409 and skip.json()["gate"] == "order", skip.text
    for name in (rescue, coupon):
        promoted = client.post(f"/v1/campaigns/{name}/promote", headers=marketer)
        assert promoted.status_code == 200, promoted.text
        assert (promoted.json()["from_stage"], promoted.json()["to_stage"]) == (
            "draft",
            "whitelist",
        )
    early = client.post(f"/v1/campaigns/{rescue}/promote", json={}, headers=marketer)
    assert early.status_code == 409 and early.json()["gate"] == "whitelist_delivered"
    assert early.json()["stage"] == "pilot" and "deliver" in early.json()["detail"]

    plan = client.post(
        "/v1/campaigns/plan",
        json={"campaigns": [rescue, coupon], "window_start": WHITELIST_WINDOW},
        headers=marketer,
    )
    assert plan.status_code == 200, plan.text
    assert {p["campaign_id"]: p["assigned"] for p in plan.json()["plans"]} == {rescue: 3, coupon: 3}
    tool = bearer(served.tokens.campaign_tool)
    for name, named in ((rescue, ids[:3]), (coupon, ids[3:6])):
        delivered = client.post(f"/v1/campaigns/{name}/deliveries", headers=marketer)
        assert delivered.status_code == 201, delivered.text
        assert delivered.json()["version"] == 1 and delivered.json()["rows"] == 3
        events = client.post("/v1/outcomes", json=_events(served, name, named, "delivered"),
                             headers=tool)  # fmt: skip
        assert events.status_code == 201 and events.json()["recorded"] == 3, events.text
        passed = client.post(f"/v1/campaigns/{name}/promote", headers=marketer)
        assert passed.status_code == 200 and passed.json()["to_stage"] == "pilot", passed.text

    plan = client.post(
        "/v1/campaigns/plan",
        json={"campaigns": [rescue, coupon], "window_start": PILOT_WINDOW},
        headers=marketer,
    )
    assert plan.status_code == 200, plan.text
    plans = {p["campaign_id"]: p for p in plan.json()["plans"]}
    assert plans[rescue]["stage"] == plans[coupon]["stage"] == "pilot"
    # The audiences overlap, and the planned entrants do not: one campaign per customer.
    pilots = _assigned(served, rescue, coupon).filter(pl.col("stage") == "pilot")
    both = pilots.group_by("customer_id").len().filter(pl.col("len") > 1)
    assert both.is_empty()
    assert plans[coupon]["removed"]["lost_arbitration"] > 0, plans[coupon]["removed"]
    again = client.post(
        "/v1/campaigns/plan",
        json={"campaigns": [rescue], "window_start": PILOT_WINDOW},
        headers=marketer,
    )
    assert again.status_code == 200 and again.json()["plans"][0]["stored_before"] is True

    _delivery_is_treated_only(served, client, marketer, rescue)
    refused = client.post(f"/v1/campaigns/{rescue}/promote", headers=marketer)
    assert refused.status_code == 409 and refused.json()["gate"] == "pilot_delivered"
    _readouts(served, client, marketer, rescue, pilots.filter(pl.col("campaign_id") == rescue))
    _history_and_close(served, client, marketer, coupon)


def _delivery_is_treated_only(
    served: ServedRun, client: httpx.Client, marketer: dict[str, str], name: str
) -> None:
    """Deliver the pilot; a campaign tool reads every branch's rows: treated customers only."""
    delivered = client.post(f"/v1/campaigns/{name}/deliveries", headers=marketer)
    assert delivered.status_code == 201, delivered.text
    body = delivered.json()
    assert body["version"] == 2 and body["stage"] == "pilot" and body["new"] is True
    assert str(served.run) not in delivered.text and ".parquet" not in delivered.text
    assert sum(b["rows"] for b in body["branches"].values()) == body["rows"]
    unchanged = client.post(f"/v1/campaigns/{name}/deliveries", headers=marketer)
    assert unchanged.status_code == 200 and unchanged.json()["new"] is False

    tool = bearer(served.tokens.campaign_tool)
    listed = client.get(f"/v1/campaigns/{name}/deliveries", headers=tool)
    assert listed.status_code == 200, listed.text
    assert [v["version"] for v in listed.json()["versions"]] == [1, 2]
    assert listed.json()["versions"][1]["branches"] == body["branches"]

    pilot = _assigned(served, name).filter(pl.col("stage") == "pilot")
    treated = set(pilot.filter(pl.col("arm") == "treatment")["customer_id"].to_list())
    control = set(pilot.filter(pl.col("arm") == "control")["customer_id"].to_list())
    assert treated and control
    read: list[int] = []
    for branch, info in body["branches"].items():
        rows: list[dict[str, Any]] = []
        while len(rows) < info["rows"]:
            page = client.get(
                f"/v1/campaigns/{name}/deliveries/2",
                params={"branch_id": branch, "offset": len(rows), "limit": 7},
                headers=tool,
            )
            assert page.status_code == 200, page.text
            assert page.json()["total"] == info["rows"]
            assert page.json()["rows"], "a page before the end is never empty"
            rows += page.json()["rows"]
        assert all(tuple(row) == DELIVERY_COLUMNS for row in rows)
        assert {row["branch_id"] for row in rows} == {branch}
        assert [row["rank"] for row in rows] == list(range(1, info["rows"] + 1))
        read += [row["customer_id"] for row in rows]
    assert len(read) == len(set(read)) == body["rows"]
    assert set(read) == treated and not set(read) & control

    # The file itself: the delivery columns and nothing else (no match key, no vendor data).
    folder = served.folder.deliveries / name / "v2"
    for path in folder.rglob("*.parquet"):
        assert tuple(pl.read_parquet(path).columns) == DELIVERY_COLUMNS
        text = path.with_suffix(".csv").read_text()
        assert pl.read_csv(io.StringIO(text)).columns == list(DELIVERY_COLUMNS)

    branch = next(iter(body["branches"]))
    for url, params in (
        (f"/v1/campaigns/{name}/deliveries/9", {"branch_id": branch}),
        (f"/v1/campaigns/{name}/deliveries/2", {"branch_id": "B999"}),
        ("/v1/campaigns/api-no-such/deliveries/1", {"branch_id": branch}),
    ):
        assert client.get(url, params=params, headers=tool).status_code == 404, url
    for params in ({"branch_id": "B001\n"}, {"branch_id": branch, "limit": 0}, {}):
        bad = client.get(f"/v1/campaigns/{name}/deliveries/2", params=params, headers=tool)
        assert bad.status_code == 422, params
    # The rows route is the campaign tool's and the admin's; a marketer lists versions only.
    rows_url = f"/v1/campaigns/{name}/deliveries/2?branch_id={branch}"
    assert client.get(rows_url, headers=marketer).status_code == 403
    assert client.get(rows_url, headers=bearer(served.tokens.admin)).status_code == 200


def _readouts(
    served: ServedRun,
    client: httpx.Client,
    marketer: dict[str, str],
    name: str,
    assigned: pl.DataFrame,
) -> None:
    """Head office reads the whole readout; a branch analyst only its branch's cells."""
    whole = client.get(f"/v1/campaigns/{name}/readout", headers=marketer)
    assert whole.status_code == 200, whole.text
    readout = whole.json()
    assert readout["campaign"] == name and readout["stages"] == ["pilot", "ab", "full"]
    arms = {row["arm"]: row for row in readout["arms"]}
    counts = assigned.group_by("arm").len()
    for arm, n in counts.iter_rows():
        assert arms[arm]["n"] in (None, n)  # None: withheld by k-anonymity
    assert (served.folder.reports / "campaigns" / name / "readout.json").is_file()
    # The adjusted figures (CUPAC on the acquisition score) beside the unadjusted ones, and the
    # always-valid looks, whenever the arms are published.
    if readout["comparison"] is not None:
        adjusted = {a["metric"]: a for a in readout["adjusted"]}
        assert adjusted["converted"]["covariate"] == "acquisition score"
        assert adjusted["converted"]["unadjusted"]["estimate"] == pytest.approx(
            readout["comparison"]["diff"], abs=1e-12
        )
        assert {"stratified", "variance_reduction", "control_saved", "verdict"} <= set(
            adjusted["converted"]
        )
        assert readout["sequential"]["ab"]["look_days"] == 7
    head_office = client.get(
        f"/v1/campaigns/{name}/readout", headers=bearer(served.tokens.head_office)
    )
    assert head_office.status_code == 200 and head_office.json()["arms"] == readout["arms"]

    branch = client.get(f"/v1/campaigns/{name}/readout", headers=bearer(served.tokens.analyst))
    assert branch.status_code == 200, branch.text
    scoped = branch.json()
    assert set(scoped) == {"campaign", "stages", "analysis", "objective", "k", "alpha", "scope",
                           "breakdowns"}  # fmt: skip
    assert scoped["scope"] == {"branches": ["B001"]}
    assert list(scoped["breakdowns"]) == ["by_branch"]
    mine = [r for r in readout["breakdowns"]["by_branch"] if r["branch_id"] == "B001"]
    assert scoped["breakdowns"]["by_branch"] == mine
    assert {r["branch_id"] for r in scoped["breakdowns"]["by_branch"]} <= {"B001"}
    for path in ("/v1/campaigns", f"/v1/campaigns/{name}"):
        assert client.get(path, headers=bearer(served.tokens.analyst)).status_code == 403
    assert client.get(f"/v1/campaigns/{name}", headers=bearer(served.tokens.head_office)).is_success


def _history_and_close(
    served: ServedRun, client: httpx.Client, marketer: dict[str, str], name: str
) -> None:
    """The stage history names the token's id, never the token; a closed campaign is done."""
    record = client.get(f"/v1/campaigns/{name}", headers=marketer).json()
    assert [(h["from_stage"], h["to_stage"]) for h in record["history"]] == [
        ("draft", "whitelist"),
        ("whitelist", "pilot"),
    ]
    actor = record["history"][0]["actor"]
    assert len(actor) == 16 and marketer["Authorization"].split("_")[1] == actor
    assert marketer["Authorization"].split(" ")[1] not in str(record)
    closed = client.post(f"/v1/campaigns/{name}/close", headers=marketer)
    assert closed.status_code == 200 and closed.json()["from_stage"] == "pilot"
    assert client.post(f"/v1/campaigns/{name}/close", headers=marketer).status_code == 409
    assert client.post(f"/v1/campaigns/{name}/promote", headers=marketer).status_code == 409
    replan = client.post(
        "/v1/campaigns/plan",
        json={"campaigns": [name], "window_start": "2028-06-05"},
        headers=marketer,
    )
    assert replan.status_code == 409 and "closed" in replan.json()["detail"]
    listed = client.get("/v1/campaigns", headers=marketer).json()["campaigns"]
    assert {c["campaign_id"]: c["stage"] for c in listed}[name] == "closed"
    cur = AuditTrailQuery(served.service)

    def audited() -> list[tuple[Any, ...]] | None:
        rows = cur.execute(
            "SELECT actor, role, detail, status FROM audit_log WHERE action = ? "
            'AND detail LIKE ? ORDER BY "at"',
            ["POST /v1/campaigns/{campaign_id}/close", f"{name}%"],
        ).fetchall()
        return rows if len(rows) == 2 else None

    closing = eventually(audited, timeout=10, interval=0.05, what="the close audited")
    assert closing == [(actor, "marketer", f"{name} pilot->closed", "200"),
                       (actor, "marketer", name, "409")]  # fmt: skip


def test_concurrent_promotions_pass_a_gate_once(
    served: ServedRun, client: httpx.Client, marketer: dict[str, str]
):
    whitelist = _customers(served)["customer_id"].head(1).to_list()
    name = "api-race-test"
    assert client.post(
        "/v1/campaigns", json=_declaration(name, whitelist), headers=marketer
    ).is_success
    url = f"/v1/campaigns/{name}/promote"
    with ThreadPoolExecutor(4) as pool:
        answers = list(
            pool.map(
                lambda _: client.post(url, json={"to_stage": "whitelist"}, headers=marketer),
                range(4),
            )
        )
    assert sorted(a.status_code for a in answers) == [200, 409, 409, 409]
    assert {a.json()["gate"] for a in answers if a.status_code == 409} == {"order"}
    history = client.get(f"/v1/campaigns/{name}", headers=marketer).json()["history"]
    assert len(history) == 1


def test_roles_and_unknown_campaigns(served: ServedRun, client: httpx.Client, marketer):
    body = _declaration("api-roles-test", _customers(served)["customer_id"].head(1).to_list())
    tokens = served.tokens
    for token in (tokens.analyst, tokens.head_office, tokens.campaign_tool, tokens.vendor):
        assert client.post("/v1/campaigns", json=body, headers=bearer(token)).status_code == 403
    assert client.post("/v1/campaigns", json=body, headers=bearer(tokens.admin)).status_code == 201
    name = body["name"]
    for token in (tokens.campaign_tool, tokens.analyst, tokens.vendor):
        headers = bearer(token)
        assert client.post(f"/v1/campaigns/{name}/promote", headers=headers).status_code == 403
        assert client.post(f"/v1/campaigns/{name}/close", headers=headers).status_code == 403
        assert client.post(f"/v1/campaigns/{name}/deliveries", headers=headers).status_code == 403
    vendor = bearer(tokens.vendor)
    for method, path in (
        ("GET", "/v1/campaigns"),
        ("GET", f"/v1/campaigns/{name}"),
        ("GET", f"/v1/campaigns/{name}/deliveries"),
        ("GET", f"/v1/campaigns/{name}/deliveries/1?branch_id=B001"),
        ("GET", f"/v1/campaigns/{name}/readout"),
    ):
        assert client.request(method, path, headers=vendor).status_code == 403, path
    assert (
        client.get(f"/v1/campaigns/{name}/deliveries", headers=bearer(tokens.analyst)).status_code
        == 403
    )
    for method, path in (
        ("GET", "/v1/campaigns/api-nobody"),
        ("POST", "/v1/campaigns/api-nobody/promote"),
        ("POST", "/v1/campaigns/api-nobody/close"),
        ("POST", "/v1/campaigns/api-nobody/deliveries"),
        ("GET", "/v1/campaigns/api-nobody/deliveries"),
        ("GET", "/v1/campaigns/api-nobody/readout"),
    ):
        answer = client.request(method, path, headers=marketer)
        assert answer.status_code == 404 and "api-nobody" in answer.json()["detail"], path
    plan = client.post(
        "/v1/campaigns/plan",
        json={"campaigns": [name, "api-nobody"], "window_start": "2028-03-06"},
        headers=marketer,
    )
    assert plan.status_code == 404
    # A draft has nothing to plan, deliver or read out: 409, saying what to do.
    plan = client.post(
        "/v1/campaigns/plan", json={"campaigns": [name], "window_start": "2028-03-06"},
        headers=marketer,
    )  # fmt: skip
    assert plan.status_code == 409 and "promote" in plan.json()["detail"].lower()
    assert client.post(f"/v1/campaigns/{name}/deliveries", headers=marketer).status_code == 409
    for window in ("9999-12-31", "2028-02-30", 20280306, "1999-12-31"):
        bad = client.post(
            "/v1/campaigns/plan", json={"campaigns": [name], "window_start": window},
            headers=marketer,
        )  # fmt: skip
        assert bad.status_code == 422, window
    for stage in ("nowhere", 1, None):
        answer = client.post(
            f"/v1/campaigns/{name}/promote", json={"to_stage": stage}, headers=marketer
        )
        assert answer.status_code in ((200,) if stage is None else (422,)), (stage, answer.text)


def test_a_write_conflict_is_a_503_to_retry(
    served: ServedRun, client: httpx.Client, marketer: dict[str, str]
):
    # DuckDB refuses a second change of one keyed row while an older transaction still reads:
    # the route tries again for a while (short readers pass), then says to retry later.
    name = "api-conflict-test"
    body = _declaration(name, _customers(served)["customer_id"].head(1).to_list())
    assert client.post("/v1/campaigns", json=body, headers=marketer).status_code == 201
    cur = served.service.cursor()
    cur.execute("BEGIN TRANSACTION")
    try:
        cur.execute("SELECT count(*) FROM campaigns").fetchall()
        assert client.post(f"/v1/campaigns/{name}/promote", headers=marketer).status_code == 200
        busy = client.post(f"/v1/campaigns/{name}/close", headers=marketer)
    finally:
        cur.execute("ROLLBACK")
    assert busy.status_code == 503, busy.text
    assert busy.headers["retry-after"] == "5" and "again" in busy.json()["detail"]
    record = client.get(f"/v1/campaigns/{name}", headers=marketer).json()
    assert record["stage"] == "whitelist" and len(record["history"]) == 1
    assert client.post(f"/v1/campaigns/{name}/close", headers=marketer).status_code == 200


# Values a schema-driven generator does not send (as tests/api/test_schemathesis.py's HOSTILE).
_HOSTILE: tuple[Any, ...] = (
    float("nan"), float("inf"), "__1e400__", 10**30, 2**63, -1, 1.5, True, None, "", "yes",
    [], {}, [[[]]], "9999-12-31", "0001-01-01", "2028-02-30",
)  # fmt: skip


def _slots(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield path
    if isinstance(value, dict | list):
        for key, inner in value.items() if isinstance(value, dict) else enumerate(value):
            yield from _slots(inner, (*path, key))


def _replaced(template: Any, slot: tuple[Any, ...], value: Any) -> str:
    body = json.loads(json.dumps(template))
    if not slot:
        body = value
    else:
        parent = body
        for key in slot[:-1]:
            parent = parent[key]
        parent[slot[-1]] = value
    return json.dumps(body).replace('"__1e400__"', "1e400")


def test_hostile_values_in_campaign_bodies_get_no_server_error(
    served: ServedRun, client: httpx.Client, marketer: dict[str, str]
):
    whitelist = _customers(served)["customer_id"].head(2).to_list()
    templates = {
        "/v1/campaigns": _declaration("api-hostile-test", whitelist),
        "/v1/campaigns/plan": {"campaigns": ["api-hostile-test"], "window_start": "2028-03-06"},
        "/v1/campaigns/api-hostile-test/promote": {"to_stage": "pilot"},
    }
    headers = {**marketer, "Content-Type": "application/json"}
    for path, template in templates.items():
        for slot in _slots(template):
            for value in _HOSTILE:
                text = _replaced(template, slot, value)
                answer = client.post(path, content=text, headers=headers)
                assert answer.status_code < 500, (path, text, answer.text)
                assert answer.status_code != 422 or len(answer.content) < 4_000
    # fetchall, not fetchone: an unread result keeps the cursor's transaction open, and DuckDB
    # then refuses later stage changes of one campaign as write conflicts.
    stored = served.service.cursor().execute(
        "SELECT declaration FROM campaigns WHERE campaign_id = 'api-hostile-test'"
    )
    assert "NaN" not in stored.fetchall()[0][0]


def test_a_stored_declaration_that_cannot_be_read_is_named_not_blamed_on_the_request(
    served: ServedRun, client: httpx.Client, marketer: dict[str, str]
):
    name = "api-unreadable-test"
    cur = served.service.cursor()
    now = datetime(2026, 9, 1)
    cur.execute(
        "INSERT INTO campaigns VALUES (?, 1, '{}', ?, 'draft', ?, 'test', ?)",
        [name, b"\x00" * 32, now, now],
    )
    try:
        listed = client.get("/v1/campaigns", headers=marketer)
        assert listed.status_code == 200, listed.text
        assert {"campaign_id": name, "field": "name"} in listed.json()["unreadable"]
        assert name not in {c["campaign_id"] for c in listed.json()["campaigns"]}
        assert client.get(f"/v1/campaigns/{name}", headers=marketer).status_code == 503
        missing = client.get("/v1/campaigns/api-still-nobody", headers=marketer)
        assert missing.status_code == 404 and name not in missing.text
    finally:
        cur.execute("DELETE FROM campaigns WHERE campaign_id = ?", [name])
