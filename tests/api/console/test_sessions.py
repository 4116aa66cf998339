"""The console's session book: idle expiry, lifetime, sign-out, the cap, CSRF comparison."""

from __future__ import annotations

import pytest

from api.console.sessions import SessionBook, csrf_matches


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_session_lives_while_used_and_ends_when_idle_or_old():
    clock = Clock()
    book = SessionBook(idle=60, lifetime=300, clock=clock)
    cookie, session = book.start("bf_token")
    assert book.get(cookie) is session and "bf_token" not in repr(session)
    for _ in range(4):  # used every 59 s: alive, until its lifetime is over
        clock.now += 59
        assert book.get(cookie) is session
    clock.now += 59  # 295 s after sign-in
    assert book.get(cookie) is session
    clock.now += 6
    assert book.get(cookie) is None and len(book) == 0

    cookie, _ = book.start("bf_token")
    clock.now += 61
    assert book.get(cookie) is None, "idle for longer than `idle` seconds"


def test_sign_out_unknown_cookies_and_the_cap():
    book = SessionBook(idle=60, lifetime=300, limit=2)
    first, _ = book.start("a")
    second, _ = book.start("b")
    assert first != second and len(first) >= 43
    for cookie in (None, "", "not-a-session", first.upper()):
        assert book.get(cookie) is None
    third, _ = book.start("c")
    assert book.get(first) is None and book.get(second) and book.get(third)  # oldest went
    book.end(second)
    book.end(None)
    assert book.get(second) is None and len(book) == 1


def test_csrf_tokens_compare_exactly():
    book = SessionBook(idle=60, lifetime=300)
    _, session = book.start("a")
    _, other = book.start("b")
    assert csrf_matches(session, session.csrf)
    for sent in (None, "", other.csrf, session.csrf + "x", session.csrf[:-1], "é" * 43):
        assert not csrf_matches(session, sent)


@pytest.mark.parametrize(("idle", "lifetime", "limit"), [(0, 1, 1), (1, 0, 1), (1, 1, 0)])
def test_nonsense_bounds_are_refused(idle: float, lifetime: float, limit: int):
    with pytest.raises(ValueError, match="idle and lifetime"):
        SessionBook(idle=idle, lifetime=lifetime, limit=limit)
