"""The sign-in limit: failures per address in a sliding window, then 429 with Retry-After."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

from api.console.throttle import SignInLimit
from tests.support.server import ServedRun


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_an_address_is_refused_after_its_failures_until_the_oldest_ages_out():
    clock = Clock()
    limit = SignInLimit(attempts=3, window=60, clock=clock)
    for _ in range(2):
        limit.failed("10.0.0.1")
        clock.now += 10
    assert limit.retry_after("10.0.0.1") is None
    limit.failed("10.0.0.1")  # the third, at 1020
    assert limit.retry_after("10.0.0.1") == 40  # the first (at 1000) ages out at 1060
    assert limit.retry_after("10.0.0.2") is None, "another address is not refused"
    clock.now = 1059.5
    assert limit.retry_after("10.0.0.1") == 1
    clock.now = 1060
    assert limit.retry_after("10.0.0.1") is None
    limit.clear()
    assert limit.retry_after("10.0.0.1") is None


def test_the_book_is_bounded_and_nonsense_is_refused():
    limit = SignInLimit(attempts=1, window=60, addresses=2)
    for address in ("a", "b", "c"):
        limit.failed(address)
    assert limit.retry_after("a") is None and limit.retry_after("c") is not None
    with pytest.raises(ValueError, match="attempts and addresses"):
        SignInLimit(attempts=0)


def _attempt(client: httpx.Client, token: str) -> httpx.Response:
    page = client.get("/console/sign-in")
    nonce = re.search(r'name="nonce" value="([^"]+)"', page.text)
    assert nonce is not None
    return client.post("/console/sign-in", data={"nonce": nonce.group(1), "token": token})


@pytest.mark.slow
def test_the_console_refuses_an_address_that_sent_too_many_invalid_tokens(served: ServedRun):
    app: Any = served.running.server.config.app
    limit: SignInLimit = app.state.console_sign_in_limit
    limit.clear()
    wrong = "bf_0000000000000000_" + "A" * 43
    try:
        with httpx.Client(base_url=served.url, follow_redirects=False) as client:
            codes = [_attempt(client, wrong).status_code for _ in range(10)]
            assert codes == [401] * 10
            refused = _attempt(client, served.tokens.admin)  # even a valid token, for a while
            assert refused.status_code == 429 and "Too many invalid tokens" in refused.text
            assert 1 <= int(refused.headers["retry-after"]) <= 300
            assert "bf_console" not in client.cookies
    finally:
        limit.clear()
    with httpx.Client(base_url=served.url, follow_redirects=False) as client:
        assert _attempt(client, served.tokens.admin).status_code == 303
