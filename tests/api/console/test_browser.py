"""The console in a real browser: Debian's headless Chromium driven by Playwright, on a real
uvicorn server. A marketer signs in, sees a promotion refused at its gate with the reason, passes
gates, plans, delivers and opens a readout with its plots, reads the monitoring alerts and
report and downloads a branch's list; a branch analyst downloads its list and cannot reach
another branch's by editing the address; forged forms are refused. Each page is saved as a
screenshot under test-artifacts/console/ for review.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from fusion.pipeline.monitoring import MonitoringReport
from tests.support.browser import assert_images_loaded, chromium, shot
from tests.support.server import ServedRun, bearer

pytestmark = pytest.mark.slow

CAMPAIGN = "console-browser"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as launched:
        yield launched


def _signed_in(browser: Browser, served: ServedRun, token: str) -> tuple[BrowserContext, Page]:
    context = browser.new_context(base_url=served.url, accept_downloads=True)
    page = context.new_page()
    page.goto("/console/campaigns")  # not signed in: sent to the sign-in page
    assert page.url.endswith("/console/sign-in")
    page.get_by_label("API token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Home")).to_be_visible()
    assert page.url.endswith("/console")
    return context, page


def _stage(page: Page) -> str:
    return page.locator("p.meta .stage").inner_text()


def _delivered(served: ServedRun, customers: list[int]) -> None:
    """The call centre reports the whitelist delivered (through the API, as it does)."""
    at = datetime.now(UTC).isoformat()
    events = [{"campaign_id": CAMPAIGN, "customer_id": c, "event": "delivered",
               "occurred_at": at} for c in customers]  # fmt: skip
    answer = httpx.post(f"{served.url}/v1/outcomes", json={"events": events},
                        headers=bearer(served.tokens.campaign_tool), timeout=60)  # fmt: skip
    assert answer.status_code == 201 and answer.json()["recorded"] == len(customers), answer.text


def test_a_marketer_walks_a_campaign_through_its_gates_to_a_readout(
    served: ServedRun,
    browser: Browser,
    marketer_token: str,
    declare: Callable[[str, list[int]], None],
    customer_ids: list[int],
):
    whitelist = customer_ids[:3]
    declare(CAMPAIGN, whitelist)
    context, page = _signed_in(browser, served, marketer_token)
    shot(page, "01-home-marketer")
    page.get_by_role("link", name="Campaigns").click()
    shot(page, "02-campaigns")
    page.get_by_role("link", name=CAMPAIGN).first.click()
    assert _stage(page) == "draft"

    page.get_by_role("button", name="Promote to whitelist").click()
    assert _stage(page) == "whitelist" and "Promoted" in page.locator(".notice").inner_text()
    # The whitelist was not delivered: the gate refuses and the page says why.
    page.get_by_role("button", name="Promote to pilot").click()
    alert = page.get_by_role("alert")
    assert "refused at gate whitelist_delivered" in alert.inner_text()
    assert "deliver" in alert.inner_text() and _stage(page) == "whitelist"
    shot(page, "03-campaign-gate-refused")

    page.get_by_label("window starting on").fill("2029-01-08")
    page.get_by_role("button", name="Plan").click()
    assert "Planned" in page.locator(".notice").inner_text()
    page.get_by_role("button", name="Deliver the next version").click()
    expect(page.locator("#deliveries tbody tr").nth(0)).to_be_attached()
    _delivered(served, whitelist)
    page.get_by_role("button", name="Promote to pilot").click()
    assert _stage(page) == "pilot"
    page.get_by_label("window starting on").fill("2029-02-05")
    page.get_by_role("button", name="Plan").click()
    expect(page.get_by_role("rowheader", name="assigned", exact=True)).to_be_visible()
    expect(page.locator("#plans thead th")).to_have_count(3)  # the rules, then two windows
    shot(page, "04-campaign-pilot-planned")

    page.get_by_role("link", name="Open the readout").click()
    expect(page.get_by_role("heading", name=f"Readout of {CAMPAIGN}")).to_be_visible()
    expect(page.locator("table#adjusted, p.note").nth(0)).to_be_attached()
    assert_images_loaded(page, 3)  # each plot loaded from the console's own route
    shot(page, "05-readout")
    for kind in ("match", "models"):
        page.goto(f"/console/reports/{kind}")
        expect(page.locator("img").nth(0)).to_be_attached()
        shot(page, f"06-report-{kind}")
    context.close()


def test_forged_forms_are_refused(served: ServedRun, browser: Browser, marketer_token: str):
    context, page = _signed_in(browser, served, marketer_token)
    page.goto(f"/console/campaigns/{CAMPAIGN}")
    # A form of this page with its CSRF token taken out.
    page.eval_on_selector("form[action$='/close'] input[name=csrf]", "input => input.remove()")
    page.get_by_role("button", name="Close the campaign").click()
    expect(page.get_by_role("heading", name="Form refused")).to_be_visible()
    shot(page, "07-forged-form-refused")
    # The same form from another site: the SameSite=Strict cookie stays home.
    page.goto("about:blank")
    page.set_content(
        f'<form method="post" action="{served.url}/console/campaigns/{CAMPAIGN}/close">'
        '<button type="submit">win a prize</button></form>'
    )
    page.get_by_role("button", name="win a prize").click()
    assert page.url.endswith("/console/sign-in")
    page.goto(f"/console/campaigns/{CAMPAIGN}")
    assert _stage(page) == "pilot", "neither forged form closed the campaign"
    page.get_by_role("button", name="Sign out").click()
    assert "signed out" in page.locator(".notice").inner_text()
    page.goto("/console")
    assert page.url.endswith("/console/sign-in")
    context.close()


def test_a_branch_analyst_reads_its_branch_only(served: ServedRun, browser: Browser):
    context, page = _signed_in(browser, served, served.tokens.analyst)  # branch B001
    shot(page, "08-home-branch-analyst")
    page.get_by_role("link", name="Lists").click()
    assert page.locator("table#list-mobile-banking tbody th").all_inner_texts() == ["B001"]
    shot(page, "09-lists-branch-analyst")
    page.get_by_role("link", name="B001").first.click()
    with page.expect_download() as download:
        page.get_by_role("link", name="Download as CSV").click()
    saved = download.value.path()
    assert saved is not None and Path(saved).read_text().startswith("customer_id")
    shot(page, "10-list-B001")
    for address in ("/console/lists/mobile-banking/B002", "/console/lists/mobile-banking/B002/csv"):
        answer = page.goto(address)
        assert answer is not None and answer.status == 403
        expect(page.get_by_role("heading", name="Not your branch")).to_be_visible()
    shot(page, "11-other-branch-refused")
    for address in ("/console/campaigns", f"/console/campaigns/{CAMPAIGN}", "/console/reports"):
        answer = page.goto(address)
        assert answer is not None and answer.status == 403, address
    page.goto("/console")
    page.get_by_label("Campaign name").fill(CAMPAIGN)
    page.get_by_role("button", name="Open the readout").click()
    # The campaign the marketer's test (above: the module runs in order, `--dist loadscope`)
    # walked to a readout; its page, not an error page, must be what holds no other branch.
    expect(page.get_by_role("heading", name=f"Readout of {CAMPAIGN}")).to_be_visible()
    rows = page.locator("table#by_branch tbody th").all_inner_texts()
    assert set(rows) <= {"B001"} and page.locator("img").count() == 0
    shot(page, "12-readout-branch-analyst")
    context.close()


def test_admin_pages(served: ServedRun, browser: Browser):
    context, page = _signed_in(browser, served, served.tokens.admin)
    shot(page, "13-home-admin")
    page.get_by_role("link", name="Batches").click()
    expect(page.locator("table#ledger tbody tr").nth(0)).to_be_attached()
    shot(page, "14-batches")
    page.get_by_role("link", name="Tokens").click()
    expect(page.locator("table#tokens tbody tr").nth(5)).to_be_attached()
    assert served.tokens.admin not in page.content()
    shot(page, "15-tokens")
    context.close()


def test_a_marketer_reads_the_monitoring_alerts_and_downloads_a_list(
    served: ServedRun, browser: Browser, marketer_token: str, monitored: MonitoringReport
):
    context, page = _signed_in(browser, served, marketer_token)
    alerts = page.locator("#monitoring-alerts li")
    expect(alerts.first).to_contain_text("acquisition CSI of age")
    shot(page, "16-home-monitoring-alerts")
    page.get_by_role("link", name="Monitoring", exact=True).click()
    expect(page.get_by_role("heading", name="Monitoring")).to_be_visible()
    assert page.locator("#verdict").inner_text() == "alert"
    expect(page.locator("#scores tbody tr")).to_have_count(len(monitored.summary["models"]))
    assert len(monitored.plots) >= 1
    assert_images_loaded(page, len(monitored.plots))  # from the console's own route
    shot(page, "17-monitoring")
    page.get_by_role("link", name="Lists").click()
    page.locator("table#list-rescue").get_by_role("link", name="B002", exact=True).click()
    with page.expect_download() as download:
        page.get_by_role("link", name="Download as Parquet").click()
    saved = download.value.path()
    assert saved is not None and Path(saved).read_bytes()[:4] == b"PAR1"
    assert download.value.suggested_filename == "rescue-B002.parquet"
    shot(page, "18-list-marketer-B002")
    context.close()
