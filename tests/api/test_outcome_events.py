"""POST /v1/outcomes with funnel events on a real server: stored or refused by row, retries
recorded once, the roles, malformed bodies, and nothing echoed but customer ids and reasons."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import polars as pl
import pytest

from tests.support.campaign_banks import declaration
from tests.support.server import ServedRun, bearer, settings_changed

CAMPAIGN = "events-2026q4"
AT = "2026-09-03T10:30:00+08:00"


@pytest.fixture(scope="module")
def arms(served: ServedRun) -> dict[str, list[int]]:
    """A campaign of eight known customers, four in each arm, written to the served store."""
    scores = pl.read_parquet(served.folder.scores / "acquisition.parquet")
    known = scores["customer_id"].head(8).to_list()
    cur = served.service.cursor()
    now = datetime(2026, 9, 1)
    declared = declaration(CAMPAIGN).canonical_json()
    cur.execute(
        "INSERT INTO campaigns VALUES (?, 1, ?, ?, 'ab', ?, 'test', ?)",
        [CAMPAIGN, declared, b"\x00" * 32, now, now],
    )
    for index, customer in enumerate(known):
        arm = "treatment" if index < 4 else "control"
        cur.execute(
            "INSERT INTO assignments (campaign_id, customer_id, plan_id, stage, arm, branch_id, "
            "stratum, window_start, window_end, contact_day, assigned_at) "
            "VALUES (?, ?, 'p1', 'ab', ?, 'B001', 's', ?, ?, ?, ?)",
            [CAMPAIGN, customer, arm, date(2026, 9, 1), date(2026, 9, 29), date(2026, 9, 2), now],
        )
    return {"treatment": known[:4], "control": known[4:]}


def _event(customer: int, event: str, **more: Any) -> dict[str, Any]:
    return {
        "campaign_id": CAMPAIGN,
        "customer_id": customer,
        "event": event,
        "occurred_at": AT,
        **more,
    }


def _post(served: ServedRun, body: Any, role: str = "campaign_tool") -> httpx.Response:
    token = getattr(served.tokens, role)
    return httpx.post(f"{served.url}/v1/outcomes", json=body, headers=bearer(token), timeout=60)


def test_events_are_stored_or_refused_by_row(served: ServedRun, arms: dict[str, list[int]]):
    treated, control = arms["treatment"], arms["control"]
    body = {
        "events": [
            _event(treated[0], "delivered"),
            _event(treated[0], "converted", amount=250.0, event_key="crm-1"),
            _event(control[0], "converted", amount=40),  # the control's organic conversion
            _event(control[1], "contacted"),  # control customers are never contacted
            _event(treated[1], "opted_out"),
            _event(7, "responded"),  # no customer of the bank
            _event(treated[2], "responded", amount=3.0),
        ]
    }
    answer = _post(served, body)
    assert answer.status_code == 201, answer.text
    result = answer.json()
    assert (result["recorded"], result["already_recorded"]) == (4, 0)
    refused = {r["row"]: (r["customer_id"], r["reason"]) for r in result["refused"]}
    assert sorted(refused) == [3, 5, 6]
    assert refused[3][0] == control[1] and "control customers are never contacted" in refused[3][1]
    assert refused[5] == (7, "unknown customer: not in the bank's customers")
    assert refused[6][1].startswith("a responded event carries no amount")
    cur = served.service.cursor()
    rows = cur.execute(
        "SELECT customer_id, event, amount, occurred_at FROM outcome_events "
        "WHERE campaign_id = ? ORDER BY customer_id, event",
        [CAMPAIGN],
    ).fetchall()
    utc = datetime(2026, 9, 3, 2, 30)
    assert sorted(rows) == sorted(
        [
            (treated[0], "delivered", None, utc),
            (treated[0], "converted", 250.0, utc),
            (control[0], "converted", 40.0, utc),
            (treated[1], "opted_out", None, utc),
        ]
    )
    sources = cur.execute(
        "SELECT DISTINCT source FROM outcome_events WHERE campaign_id = ?", [CAMPAIGN]
    )
    (source,) = sources.fetchall()
    # The token's id (bf_<id>_<secret>), never the secret.
    assert source == (served.tokens.campaign_tool.split("_")[1],)
    suppressed = cur.execute(
        "SELECT list_name, since, reason FROM suppressions WHERE customer_id = ?", [treated[1]]
    ).fetchall()
    assert suppressed == [("opt-out", utc.date(), f"opted out in campaign {CAMPAIGN}")]


def test_a_resent_or_racing_request_records_once(served: ServedRun, arms: dict[str, list[int]]):
    customer = arms["treatment"][3]
    body = {"events": [_event(customer, "reached", occurred_at="2026-09-04T09:00:00Z")] * 2}
    first = _post(served, body).json()
    assert (first["recorded"], first["already_recorded"], first["refused"]) == (1, 1, [])
    racing = {"events": [_event(customer, "responded", occurred_at="2026-09-05T09:00:00Z")]}
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: _post(served, racing, "admin").json(), "abcd"))
    assert sorted(a["recorded"] for a in answers) == [0, 0, 0, 1]
    count = served.service.cursor().execute(
        "SELECT count(*) FROM outcome_events WHERE customer_id = ? AND event IN ('reached', "
        "'responded')",
        [customer],
    )
    assert count.fetchall() == [(2,)]


@pytest.mark.parametrize("role", ["vendor", "analyst", "head_office"])
def test_only_campaign_tools_and_admins_send_events(
    served: ServedRun, arms: dict[str, list[int]], role: str
):
    answer = _post(served, {"events": [_event(arms["treatment"][0], "delivered")]}, role)
    assert answer.status_code == 403


def test_nothing_of_an_event_is_echoed_but_its_customer_id_and_reason(
    served: ServedRun, arms: dict[str, list[int]]
):
    marker = "zzmarker"
    body = {
        "events": [
            {**_event(arms["treatment"][0], f"{marker}-event")},
            {**_event(arms["treatment"][0], "delivered"), "campaign_id": f"{marker}-campaign"},
            {**_event(arms["treatment"][0], "delivered"), "event_key": f"{marker}-key"},
            {**_event(arms["treatment"][0], "responded"), "occurred_at": "2099-01-01T00:00:00Z"},
        ]
    }
    answer = _post(served, body)
    assert answer.status_code == 201
    assert marker not in answer.text
    reasons = [r["reason"] for r in answer.json()["refused"]]
    assert reasons[0].startswith("unknown event") and reasons[1].startswith("unknown campaign")
    assert "in the future" in reasons[2]


_TOO_LONG = "k" * 129


@pytest.mark.parametrize(
    "body",
    [
        {"events": []},
        {},
        {"campaign_id": CAMPAIGN},
        {"campaign_id": CAMPAIGN, "events": [_event(1, "delivered")]},
        {"events": [_event(1, "delivered")],
         "outcomes": [{"customer_id": 1, "treatment": True, "responded": True}]},
        {"events": [{**_event(1, "delivered"), "channel": "sms"}]},
        {"events": [{**_event(1, "delivered"), "event_key": _TOO_LONG}]},
        {"events": [{**_event(1, "converted"), "amount": "12"}]},
        {"events": [{**_event(1, "converted"), "amount": True}]},
        {"events": [{**_event(1, "delivered"), "customer_id": "1"}]},
        {"events": [{**_event(1, "delivered"), "occurred_at": 1_700_000_000}]},
        {"events": [{**_event(1, "delivered"), "campaign_id": "a b"}]},
        {"events": [{k: v for k, v in _event(1, "delivered").items() if k != "occurred_at"}]},
    ],
)  # fmt: skip
def test_a_malformed_body_gets_a_422(served: ServedRun, body: Any):
    answer = _post(served, body)
    assert answer.status_code == 422, answer.text
    assert all(set(e) == {"loc", "msg", "type"} for e in answer.json()["detail"])


@pytest.mark.parametrize("value", ["NaN", "Infinity", "1e400"])
def test_an_amount_that_is_no_finite_number_gets_a_422_naming_it(served: ServedRun, value: str):
    text = (
        f'{{"events": [{{"campaign_id": "{CAMPAIGN}", "customer_id": 1, "event": "converted", '
        f'"occurred_at": "{AT}", "amount": {value}}}]}}'
    )
    headers = {**bearer(served.tokens.admin), "Content-Type": "application/json"}
    answer = httpx.post(f"{served.url}/v1/outcomes", content=text, headers=headers)
    assert answer.status_code == 422
    assert ["body", "events", 0, "amount"] in [e["loc"] for e in answer.json()["detail"]]
    assert "inf" not in answer.text.lower() and "nan" not in answer.text.lower()


def test_more_events_than_the_cap_get_a_422(served: ServedRun, arms: dict[str, list[int]]):
    body = {"events": [_event(arms["treatment"][0], "delivered")] * 3}
    with settings_changed(served, max_outcomes=2):
        answer = _post(served, body)
    assert answer.status_code == 422
    assert "at most 2 events per request; got 3" in answer.json()["detail"]


def test_the_per_customer_report_still_works_beside_events(
    served: ServedRun, arms: dict[str, list[int]]
):
    at = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    body = {
        "campaign_id": "legacy-2026q4",
        "outcomes": [
            {
                "customer_id": arms["control"][0],
                "treatment": False,
                "responded": True,
                "occurred_at": at,
            }
        ],
    }
    answer = _post(served, body)
    assert answer.status_code == 201, answer.text
    assert answer.json() == {
        "campaign_id": "legacy-2026q4",
        "recorded": 1,
        "already_recorded": 0,
        "unknown": [],
    }
