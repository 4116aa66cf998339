"""The journey pages on a real server: the strategies, one strategy (its flow, gate, today's
dry-run counts, history), its readout with the funnel plot, the cohort funnel and the home panel;
pages per role (a branch analyst reaches none), CSRF-less and refused promotions, hostile paths;
and in the browser, a marketer whose promotion the gate refuses sees the reason (screenshots in
test-artifacts/console/).

This module serves its own copy of the API demo run, with the journey world written before the
service started (`tests.support.served_journeys`): `served` below stands in for the shared one,
so the console fixtures (sign-in, CSRF, the marketer token) work on it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, expect

from tests.support.browser import assert_images_loaded, chromium, shot
from tests.support.served_journeys import (
    DRAFT,
    IDLE,
    PUSH,
    JourneyWorld,
    journey_run,
    serve_journeys,
)
from tests.support.server import ServedRun

pytestmark = pytest.mark.slow

ROLES = ("analyst", "head_office", "campaign_tool", "marketer", "admin")
HEAD_OFFICE = {"marketer", "admin", "head_office"}


@pytest.fixture(scope="module")
def journeys(
    demo_run: Path, tmp_path_factory: pytest.TempPathFactory, worker_id: str
) -> Iterator[tuple[ServedRun, JourneyWorld]]:
    shared = journey_run(tmp_path_factory, worker_id, demo_run)
    with serve_journeys(shared, tmp_path_factory.mktemp("console-journeys")) as pair:
        yield pair


@pytest.fixture(scope="module")
def served(journeys: tuple[ServedRun, JourneyWorld]) -> ServedRun:
    """This module's served run (the console fixtures sign in to it)."""
    return journeys[0]


@pytest.fixture(scope="module")
def clients(
    served: ServedRun, marketer_token: str, sign_in: Callable[[str], httpx.Client]
) -> dict[str, httpx.Client]:
    tokens = {role: getattr(served.tokens, role, marketer_token) for role in ROLES}
    return {role: sign_in(token) for role, token in tokens.items()}


def _stage(html: str) -> str:
    found = re.search(r'<span class="stage">([a-z]+)</span>', html)
    assert found is not None
    return found.group(1)


def test_pages_per_role_and_the_navigation(served: ServedRun, clients: dict[str, httpx.Client]):
    pages = [
        "/console/journeys",
        "/console/journeys/funnel",
        f"/console/journeys/{PUSH}",
        f"/console/journeys/{DRAFT}",
        f"/console/journeys/{PUSH}/readout?as_of=2026-11-30",
        f"/console/journeys/{PUSH}/plots/funnel.png",  # drawn by the readout just opened
    ]
    with httpx.Client(base_url=served.url, follow_redirects=False) as anonymous:
        for path in pages:
            assert anonymous.get(path).status_code == 303, path
    for path in pages:
        for role, client in clients.items():
            answer = client.get(path)
            assert answer.status_code == (200 if role in HEAD_OFFICE else 403), (path, role)
            if role not in HEAD_OFFICE:
                assert "Head office only" in answer.text or "Not for this role" in answer.text
    for role, client in clients.items():
        home = client.get("/console").text
        link = '<a href="/console/journeys"'
        assert (link in home) == (role in HEAD_OFFICE), role
        assert ("Journey strategies at a gate" in home) == (role in HEAD_OFFICE), role


def test_the_strategy_page_shows_its_flow_gate_dry_run_and_history(
    clients: dict[str, httpx.Client],
):
    marketer = clients["marketer"].get(f"/console/journeys/{PUSH}").text
    assert _stage(marketer) == "pilot"
    for words in (
        "customers in the activate stage enter (once each)",
        "if bind card is not reached",
        "touch by app push: content bind-card-howto",
        "touch by in app popup: content bind-card-cashback, offer cashback-10",
        "if the latest touch of push was clicked within 3 days",
        'yes: <a href="#node-done">done</a>; no: <a href="#node-popup">popup</a>',
        "wait 3 days",
        "the customer leaves",
    ):
        assert words in marketer, words
    gate = marketer.split('<table id="gate">', 1)[1].split("</table>", 1)[0]
    assert "pilot_exposed" in gate and '<td class="fail">no</td>' in gate
    assert "Promote to ab" in marketer and "Close the strategy" in marketer
    flow = marketer.split('<table id="flow">', 1)[1].split("</table>", 1)[0]
    assert flow.count("<tr id=") == 8 and "suppressed" not in flow  # exact to its marketers
    history = marketer.split('<table id="history">', 1)[1].split("</table>", 1)[0]
    assert history.count("<tr>") == 3 and "whitelist_confirmed" in history
    analyst = clients["head_office"].get(f"/console/journeys/{PUSH}").text
    assert "Promote to" not in analyst and "Close the strategy" not in analyst
    assert "k = 10" in analyst  # the dry-run counts k-anonymised for a reader
    draft = clients["marketer"].get(f"/console/journeys/{DRAFT}").text
    assert "Promote to whitelist" in draft and "taken as at full launch" in draft
    book = clients["head_office"].get("/console/journeys").text
    for name in (PUSH, IDLE, DRAFT):
        assert f'<a href="/console/journeys/{name}">{name}</a>' in book
    assert "waits for whitelist_confirmed" in book and "waits for pilot_exposed" in book
    home = clients["marketer"].get("/console").text
    assert "waiting for\n  <strong>whitelist_confirmed</strong> before pilot" in home


def test_promotions_refused_without_csrf_and_at_a_gate_with_the_reason(
    clients: dict[str, httpx.Client], csrf_of: Callable[[httpx.Client, str], str]
):
    marketer, admin = clients["marketer"], clients["admin"]
    page = f"/console/journeys/{DRAFT}"
    theirs = csrf_of(admin, page)
    for fields in ({"to_stage": "whitelist"}, {"csrf": ""}, {"csrf": theirs}):
        answer = marketer.post(f"{page}/promote", data=fields)
        assert answer.status_code == 403 and "Form refused" in answer.text, fields
        assert marketer.post(f"{page}/close", data=fields).status_code == 403
    assert _stage(marketer.get(page).text) == "draft"
    analyst = clients["head_office"]
    mine = csrf_of(analyst, page)
    assert analyst.post(f"{page}/promote", data={"csrf": mine}).status_code == 403
    idle = f"/console/journeys/{IDLE}"
    token = csrf_of(marketer, idle)
    refused = marketer.post(f"{idle}/promote", data={"csrf": token, "to_stage": "pilot"})
    assert refused.status_code == 409
    assert "Promotion refused at gate whitelist_confirmed" in refused.text
    assert "0 of 1 touched named customers confirmed exposed" in refused.text
    assert _stage(refused.text) == "whitelist"
    passed = marketer.post(f"{page}/promote", data={"csrf": token, "to_stage": "whitelist"})
    assert passed.status_code == 303 and passed.headers["location"].endswith("done=promoted")
    again = marketer.post(f"{page}/promote", data={"csrf": token, "to_stage": "whitelist"})
    assert again.status_code == 409 and "refused at gate order" in again.text
    closed = marketer.post(f"{page}/close", data={"csrf": token})
    assert closed.status_code == 303 and _stage(marketer.get(page).text) == "closed"
    assert marketer.post(f"{page}/close", data={"csrf": token}).status_code == 409


def test_the_readout_page_and_its_funnel_plot(clients: dict[str, httpx.Client]):
    marketer = clients["marketer"]
    page = marketer.get(f"/console/journeys/{PUSH}/readout", params={"as_of": "2026-11-30"})
    assert page.status_code == 200
    for heading in ("Arms", "Treatment against control", "Funnel", "Nodes"):
        assert f"<h2>{heading}</h2>" in page.text
    assert 'src="/console/journeys/journey-push/plots/funnel.png"' in page.text
    assert "goal lift (95% CI)" in page.text and "suppressed" in page.text
    plot = marketer.get(f"/console/journeys/{PUSH}/plots/funnel.png")
    assert plot.status_code == 200 and plot.content.startswith(b"\x89PNG")
    for query in ("as_of=2026-13-01", "as_of=9999-12-31", "as_of=" + "9" * 5000):
        answer = marketer.get(f"/console/journeys/{PUSH}/readout?{query}")
        assert answer.status_code == 422 and "Not a day" in answer.text, query


def test_the_cohort_funnel_page(clients: dict[str, httpx.Client]):
    page = clients["head_office"].get("/console/journeys/funnel?as_of=2026-11-30")
    assert page.status_code == 200
    table = page.text.split('<table id="funnel">', 1)[1].split("</table>", 1)[0]
    weeks = re.findall(r'<tr><th scope="row">(\d{4}-\d\d-\d\d)</th>', table)
    assert weeks and set(weeks) <= {"2026-09-28", "2026-10-05", "2026-10-12", "2026-10-19",
                                     "2026-10-26"}  # fmt: skip
    assert "suppressed" in table and "retained day 30" in page.text


_HOSTILE = (
    "/console/journeys/..%2f..%2fkeys", "/console/journeys/%00", "/console/journeys/" + "a" * 5000,
    "/console/journeys/Bad_Name", "/console/journeys/x/plots/..%2f..%2fkeys%2fbank",
    f"/console/journeys/{PUSH}/plots/readout.json", f"/console/journeys/{PUSH}/plots/%00.png",
    "/console/journeys/funnel?as_of=%00", "/console/journeys/no-such-strategy/readout",
    f"/console/journeys/{PUSH}/readout?as_of=2026-02-30",
)  # fmt: skip


def test_hostile_paths_and_forms_get_no_server_error(clients: dict[str, httpx.Client]):
    admin = clients["admin"]
    for path in _HOSTILE:
        answer = admin.get(path)
        assert 400 <= answer.status_code < 500, (path, answer.status_code)
    for body in (b"\xff\xfe", b"csrf=a&csrf=b", b"to_stage=%00"):
        for action in ("promote", "close"):
            answer = admin.post(
                f"/console/journeys/{PUSH}/{action}",
                content=body,
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )
            assert 400 <= answer.status_code < 500, (body, action)
    assert _stage(admin.get(f"/console/journeys/{PUSH}").text) == "pilot"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as launched:
        yield launched


def test_a_marketer_sees_why_the_gate_refuses_a_promotion(
    served: ServedRun, browser: Browser, marketer_token: str
):
    context = browser.new_context(base_url=served.url)
    page = context.new_page()
    page.goto("/console/journeys")
    assert page.url.endswith("/console/sign-in")
    page.get_by_label("API token").fill(marketer_token)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Home")).to_be_visible()
    expect(page.locator("#journey-gates")).to_be_visible()
    shot(page, "20-home-journey-gates")
    page.get_by_role("link", name="Journeys").click()
    shot(page, "21-journeys")
    page.get_by_role("link", name=IDLE).first.click()
    assert page.locator("p.meta .stage").inner_text() == "whitelist"
    page.keyboard.press("Tab")  # the skip link first: keyboard reachable
    page.get_by_role("button", name="Promote to pilot").focus()
    page.keyboard.press("Enter")
    alert = page.get_by_role("alert")
    assert "refused at gate whitelist_confirmed" in alert.inner_text()
    assert "wait for the channels' exposure events" in alert.inner_text()
    assert page.locator("p.meta .stage").inner_text() == "whitelist"
    shot(page, "22-journey-gate-refused")
    page.goto(f"/console/journeys/{PUSH}")
    expect(page.locator("table#flow tbody tr")).to_have_count(8)
    shot(page, "23-journey-flow")
    page.get_by_role("link", name="Open the readout").click()
    page.get_by_label("Read out as of").fill("2026-11-30")
    page.get_by_role("button", name="Read out").click()
    assert_images_loaded(page, 1)
    shot(page, "24-journey-readout")
    page.goto("/console/journeys/funnel?as_of=2026-11-30")
    expect(page.locator("table#funnel tbody tr").nth(0)).to_be_attached()
    shot(page, "25-journey-funnel")
    context.close()
