"""The API's security tests, over the console's pages: roles and branch scope (the same answers
as the API routes), no 5xx on hostile paths and form bodies, CSRF, sign-in and sign-out, cookie
flags, revocation, headers and the audit log."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from api.console.access import LIST_READERS
from fusion.pipeline.monitoring import MonitoringReport
from fusion.tokens import create_token
from tests.support.audit import AuditTrailQuery
from tests.support.polling import eventually
from tests.support.server import NOW, ServedRun, settings_changed

pytestmark = pytest.mark.slow

CAMPAIGN = "console-matrix"
HEAD_OFFICE = {"marketer", "admin", "head_office"}
LISTS = {"campaign_tool", "marketer", "admin", "analyst", "head_office"}
ROLES = ("analyst", "head_office", "campaign_tool", "marketer", "admin")


@pytest.fixture(scope="module")
def clients(
    served: ServedRun,
    marketer_token: str,
    sign_in: Callable[[str], httpx.Client],
    declare: Callable[[str, list[int]], None],
    customer_ids: list[int],
    monitored: MonitoringReport,
) -> dict[str, httpx.Client]:
    declare(CAMPAIGN, customer_ids[:2])
    tokens = {role: getattr(served.tokens, role, marketer_token) for role in ROLES}
    return {role: sign_in(token) for role, token in tokens.items()}


def _pages() -> list[tuple[str, set[str]]]:
    """(page, roles that may open it): the API's rule for the same data."""
    lists = "/console/lists/mobile-banking"
    return [
        ("/console", set(ROLES)),
        ("/console/campaigns", HEAD_OFFICE),
        (f"/console/campaigns/{CAMPAIGN}", HEAD_OFFICE),
        (f"/console/campaigns/{CAMPAIGN}/readout", HEAD_OFFICE | {"analyst"}),
        ("/console/reports", HEAD_OFFICE),
        ("/console/reports/match", HEAD_OFFICE),
        ("/console/reports/models", HEAD_OFFICE),
        ("/console/monitoring", HEAD_OFFICE),
        ("/console/monitoring/plots/scores.png", HEAD_OFFICE),
        ("/console/lists", LISTS),
        (f"{lists}/B001", LISTS),
        (f"{lists}/B001/csv", LISTS),
        (f"{lists}/B002", LISTS - {"analyst"}),  # the analyst reads B001 only
        (f"{lists}/B002/parquet", LISTS - {"analyst"}),
        ("/console/dictionary", HEAD_OFFICE | {"analyst"}),  # meanings, no data: every analyst
        ("/console/batches", {"admin"}),
        ("/console/tokens", {"admin"}),
    ]


def test_every_role_opens_its_pages_and_gets_403_elsewhere(
    served: ServedRun, clients: dict[str, httpx.Client]
):
    assert {r for r in ROLES if r in LIST_READERS} | {"head_office"} == LISTS
    with httpx.Client(base_url=served.url, follow_redirects=False) as anonymous:
        for path, allowed in _pages():
            answer = anonymous.get(path)
            assert answer.status_code == 303, path
            assert answer.headers["location"] == "/console/sign-in"
            for role, client in clients.items():
                answer = client.get(path)
                # A draft has no readout yet: 409 with the reason, past the role check.
                expected = 409 if path.endswith("/readout") else 200
                assert answer.status_code == (expected if role in allowed else 403), (path, role)
                assert served.tokens.admin not in answer.text


def test_the_branch_analysts_readout_holds_its_branch_only(
    served: ServedRun, clients: dict[str, httpx.Client]
):
    readout = clients["analyst"].get(f"/console/campaigns/{CAMPAIGN}/readout")
    assert readout.status_code == 409  # a draft: nothing to read out, for any role
    assert "B002" not in clients["analyst"].get("/console/lists").text


_HOSTILE_PATHS = (
    "/console/campaigns/..%2f..%2fkeys", "/console/campaigns/%00",
    "/console/campaigns/" + "a" * 5000,
    "/console/campaigns/%C3%28/readout", "/console/campaigns/x/plots/..%2f..%2fkeys%2fbank",
    "/console/campaigns/console-matrix/plots/readout.json", "/console/lists/../../keys",
    "/console/lists/mobile-banking/B001%0A", "/console/lists/mobile-banking/..%2fB002/csv",
    "/console/lists/mobile-banking/B001/exe", "/console/lists/%F0%9F%92%A3/B001",
    "/console/reports/../keys", "/console/reports/match/plots/..%2f..%2fbank%2ffusion.duckdb",
    "/console/reports/nothing", "/console/readout?campaign=%00",
    "/console/monitoring/plots/..%2f..%2fbank%2ffusion.duckdb", "/console/monitoring/plots/%00.png",
    "/console/monitoring/plots/" + "p" * 300 + ".png",
    "/console/readout?campaign=" + "b" * 9000,
    "/console/tokens/zz/revoke", "/console/sign-in?done=" + "%FF" * 100,
)  # fmt: skip
_HOSTILE_BODIES: tuple[tuple[bytes, str], ...] = (
    (b"", "application/x-www-form-urlencoded"),
    (b"\xff\xfe\x00garbage", "application/x-www-form-urlencoded"),
    (b"csrf=a&csrf=b", "application/x-www-form-urlencoded"),
    (b"&".join(b"f%d=1" % i for i in range(500)), "application/x-www-form-urlencoded"),
    (b"window_start=" + b"9" * 100_000, "application/x-www-form-urlencoded"),
    (b"window_start=2028-02-30&to_stage=%00", "application/x-www-form-urlencoded"),
    (b'{"csrf": "x"}', "application/json"),
    (b"--b\r\nContent-Disposition: form-data; name=csrf\r\n\r\nx\r\n--b--", "multipart/form-data"),
    (b"token=" + b"bf_" * 30_000, "application/x-www-form-urlencoded"),
)
_POSTS = (
    f"/console/campaigns/{CAMPAIGN}/promote", f"/console/campaigns/{CAMPAIGN}/close",
    f"/console/campaigns/{CAMPAIGN}/deliveries", f"/console/campaigns/{CAMPAIGN}/plan",
    "/console/campaigns/nobody-here/plan", "/console/tokens/0000000000000000/revoke",
    "/console/sign-out", "/console/sign-in",
)  # fmt: skip


def test_hostile_paths_and_form_bodies_get_no_server_error(
    served: ServedRun, clients: dict[str, httpx.Client]
):
    for role in ("admin", "analyst"):
        client = clients[role]
        for path in _HOSTILE_PATHS:
            answer = client.get(path)
            assert answer.status_code < 500 and answer.status_code != 200, (role, path)
    admin = clients["admin"]
    for path in _POSTS:
        for body, kind in _HOSTILE_BODIES:
            answer = admin.post(path, content=body, headers={"Content-Type": kind})
            assert 400 <= answer.status_code < 500, (path, body[:40], answer.status_code)
    stage = admin.get(f"/console/campaigns/{CAMPAIGN}").text
    assert '<span class="stage">draft</span>' in stage, "no hostile form moved the campaign"


def test_forms_without_their_csrf_token_are_refused(
    clients: dict[str, httpx.Client],
    csrf_of: Callable[[httpx.Client, str], str],
    declare: Callable[[str, list[int]], None],
    customer_ids: list[int],
):
    declare("console-csrf", customer_ids[2:3])
    marketer, admin = clients["marketer"], clients["admin"]
    page = "/console/campaigns/console-csrf"
    theirs = csrf_of(admin, page)
    for fields in ({"to_stage": "whitelist"}, {"csrf": ""}, {"csrf": "x" * 43}, {"csrf": theirs}):
        answer = marketer.post(f"{page}/promote", data=fields)
        assert answer.status_code == 403 and "Form refused" in answer.text, fields
    assert '<span class="stage">draft</span>' in marketer.get(page).text
    mine = csrf_of(marketer, page)
    passed = marketer.post(f"{page}/promote", data={"csrf": mine, "to_stage": "whitelist"})
    assert passed.status_code == 303 and passed.headers["location"].endswith("done=promoted")
    # The page's next stage is sent along: a second press finds the stage moved on.
    again = marketer.post(f"{page}/promote", data={"csrf": mine, "to_stage": "whitelist"})
    assert again.status_code == 409 and "refused at gate order" in again.text


def _cookie_flags(answer: httpx.Response, name: str) -> dict[str, Any]:
    for header in answer.headers.get_list("set-cookie"):
        if header.startswith(f"{name}="):
            parts = [p.strip() for p in header.split(";")]
            return {p.split("=", 1)[0].lower(): p.partition("=")[2] for p in parts[1:]}
    raise AssertionError(f"no {name} cookie set: {answer.headers.get_list('set-cookie')}")


def _sign_in_answer(client: httpx.Client, token: str) -> httpx.Response:
    page = client.get("/console/sign-in")
    nonce = page.text.split('name="nonce" value="', 1)[1].split('"', 1)[0]
    assert "bf_console_sign_in" in client.cookies
    return client.post("/console/sign-in", data={"nonce": nonce, "token": token})


def test_sign_in_cookies_sign_out_and_revocation(
    served: ServedRun, clients: dict[str, httpx.Client], csrf_of: Callable[[httpx.Client, str], str]
):
    with httpx.Client(base_url=served.url, follow_redirects=False) as client:
        forged = client.post("/console/sign-in", data={"nonce": "x", "token": "y"})
        assert forged.status_code == 403, "no sign-in without the page's own nonce"
        bad = _sign_in_answer(client, "bf_0000000000000000_" + "A" * 43)
        assert bad.status_code == 401 and "not valid" in bad.text
        vendor = _sign_in_answer(client, served.tokens.vendor)
        assert vendor.status_code == 403 and "bf_console" not in client.cookies
        issued = create_token(served.service.cursor(), role="marketer", now=NOW, label="gone")

        def accepted() -> httpx.Response | None:
            answer = _sign_in_answer(client, issued.secret)
            return answer if answer.status_code == 303 else None

        answer = eventually(accepted, timeout=10, interval=0.2, what="the new token accepted")
        flags = _cookie_flags(answer, "bf_console")
        assert {"httponly", "path", "samesite"} <= set(flags) and "secure" not in flags
        assert flags["samesite"].lower() == "strict" and flags["path"] == "/"
        assert "max-age" not in flags and "expires" not in flags  # gone with the browser
        assert client.get("/console").status_code == 200
        stolen = dict(client.cookies)
        assert issued.secret not in str(stolen)

        # An admin revokes the token: its console session ends at once.
        admin = clients["admin"]
        token_id = issued.principal.token_id
        revoked = admin.post(
            f"/console/tokens/{token_id}/revoke", data={"csrf": csrf_of(admin, "/console/tokens")}
        )
        assert revoked.status_code == 303, revoked.text
        assert client.get("/console").headers["location"] == "/console/sign-in"

    with httpx.Client(base_url=served.url, follow_redirects=False) as client:
        _sign_in_answer(client, served.tokens.campaign_tool)
        cookie = client.cookies["bf_console"]
        signed_out = client.post("/console/sign-out", data={"csrf": csrf_of(client, "/console")})
        assert signed_out.status_code == 303
        replay = httpx.get(f"{served.url}/console", headers={"Cookie": f"bf_console={cookie}"})
        assert replay.status_code == 303, "a signed-out session's cookie is worth nothing"

    # Over TLS (or told so): Secure, and the __Host- prefix binds the cookie to this host.
    with settings_changed(served, console_secure_cookies=True):
        page = httpx.get(f"{served.url}/console/sign-in")
        name = "__Host-bf_console_sign_in"
        assert "secure" in _cookie_flags(page, name)
        nonce = page.text.split('name="nonce" value="', 1)[1].split('"', 1)[0]
        value = page.headers["set-cookie"].split(";")[0].split("=", 1)[1]
        answer = httpx.post(  # an http client keeps no Secure cookie: sent by hand
            f"{served.url}/console/sign-in",
            data={"nonce": nonce, "token": served.tokens.campaign_tool},
            headers={"Cookie": f"{name}={value}"},
        )
        assert answer.status_code == 303, answer.text
        flags = _cookie_flags(answer, "__Host-bf_console")
        assert "secure" in flags and flags["path"] == "/" and "domain" not in flags


def test_pages_carry_no_script_and_are_audited(served: ServedRun, clients: dict[str, httpx.Client]):
    analyst = clients["analyst"]
    page = analyst.get("/console/lists")
    policy = page.headers["content-security-policy"]
    assert "script-src" not in policy and "default-src 'none'" in policy
    assert page.headers["x-frame-options"] == "DENY" and page.headers["cache-control"] == "no-store"
    assert "<script" not in page.text.lower()
    download = analyst.get("/console/lists/mobile-banking/B001/csv")
    assert download.status_code == 200 and download.text.startswith("customer_id")
    cur = AuditTrailQuery(served.service)
    action = "GET /console/lists/{name}/{branch}/{file_format}"

    def audited() -> list[tuple[Any, ...]] | None:
        rows = cur.execute(
            "SELECT role, detail, rows, status FROM audit_log WHERE action = ? AND role = ?",
            [action, "analyst"],
        ).fetchall()
        return rows or None

    rows = eventually(audited, timeout=10, interval=0.05, what="the download audited")
    assert ("analyst", "mobile-banking/B001.csv", download.text.count("\n") - 1, "200") in rows
    details = cur.execute("SELECT coalesce(detail, '') FROM audit_log").fetchall()
    for token in (served.tokens.analyst, served.tokens.admin):
        assert not any(token in d for (d,) in details)


def test_the_dictionary_page_describes_every_analyst_column(clients: dict[str, httpx.Client]):
    from fusion.analyst_views import data_dictionary

    page = clients["analyst"].get("/console/dictionary")
    assert page.status_code == 200
    for view in data_dictionary():
        assert f"{view.schema}.{view.name}" in page.text
        assert all(f"<code>{c.name}</code>" in page.text for c in view.columns)
