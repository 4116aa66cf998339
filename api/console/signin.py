"""Signing in with an API token, and signing out.

The sign-in page sets a random value in a cookie and in its form (double submit), so another
site cannot sign a browser in under a token of its choosing. A valid token (the API's own check)
of any role but vendor starts a fresh session (`api.console.sessions`): a new cookie every time,
so a session id planted before sign-in is worth nothing. The token travels once, in the POST
body, and is never put in a URL, a page or a log. Signing out ends the session on the server.
An address that sent too many invalid tokens is refused for a while (`api.console.throttle`).
"""

from __future__ import annotations

import hmac
import secrets

from fastapi import APIRouter, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from api.console.access import (
    SESSION_COOKIE,
    SIGN_IN_COOKIE,
    ConsoleRefusal,
    Form,
    check_csrf,
    cookie_name,
    secure_cookies,
    signed_in,
)
from api.console.pages import render
from api.console.sessions import SessionBook
from api.console.throttle import SignInLimit
from api.service import Service

__all__ = ["router"]

router = APIRouter(prefix="/console", include_in_schema=False)

_MAX_TOKEN = 200  # characters; a token is 64
_SIGN_IN_SECONDS = 3600  # how long a sign-in page's form may wait


def _set_cookie(request: Request, response: Response, name: str, value: str,
                max_age: int | None = None) -> None:  # fmt: skip
    response.set_cookie(
        cookie_name(request, name), value, max_age=max_age, path="/",
        secure=secure_cookies(request), httponly=True, samesite="strict",
    )  # fmt: skip


def _form_page(request: Request, *, status_code: int = 200, error: str | None = None,
               notice: str | None = None) -> HTMLResponse:  # fmt: skip
    nonce = secrets.token_urlsafe(32)
    page = render(request, "sign_in.html", status=status_code, title="Sign in", nonce=nonce,
                  error=error, notice=notice)  # fmt: skip
    _set_cookie(request, page, SIGN_IN_COOKIE, nonce, max_age=_SIGN_IN_SECONDS)
    return page


@router.get("/sign-in", name="console_sign_in_page")
def _sign_in_page(request: Request, done: str | None = None) -> Response:
    """The sign-in form (a signed-in visitor goes home)."""
    try:
        signed_in(request)
    except ConsoleRefusal:
        notice = "You are signed out." if done == "signed-out" else None
        return _form_page(request, notice=notice)
    return RedirectResponse("/console", status_code=status.HTTP_303_SEE_OTHER)


@router.post("/sign-in", name="console_sign_in")
def _sign_in(request: Request, form: Form) -> Response:
    """Exchange an API token for a session cookie."""
    expected = request.cookies.get(cookie_name(request, SIGN_IN_COOKIE), "")
    sent = form.get("nonce", "")
    if not (expected and hmac.compare_digest(expected.encode(), sent.encode("utf-8", "replace"))):
        raise ConsoleRefusal(
            status.HTTP_403_FORBIDDEN,
            "Form refused",
            "this sign-in form did not come from this console, or waited too long; open the "
            "sign-in page again",
        )
    limit: SignInLimit = request.app.state.console_sign_in_limit
    address = request.client.host if request.client else "unknown"
    wait = limit.retry_after(address)
    if wait is not None:
        refused = _form_page(
            request,
            status_code=status.HTTP_429_TOO_MANY_REQUESTS,
            error=f"Too many invalid tokens were sent from your address; try again in {wait} "
            "seconds, with the whole token `fusion token create` printed.",
        )
        refused.headers["Retry-After"] = str(wait)
        return refused
    service: Service = request.app.state.service
    token = form.get("token", "").strip()
    principal = service.tokens.authenticate(token if len(token) <= _MAX_TOKEN else None)
    if principal is None:
        limit.failed(address)
        return _form_page(
            request,
            status_code=status.HTTP_401_UNAUTHORIZED,
            error="That token is not valid (or was revoked). Paste the whole token "
            "`fusion token create` printed, starting bf_.",
        )
    request.state.principal = principal  # audited as the token's holder
    if principal.role == "vendor":
        return _form_page(
            request,
            status_code=status.HTTP_403_FORBIDDEN,
            error="Vendor tokens have no console: a vendor pushes batches with `fusion vendor "
            "push` and reads their receipts through the API.",
        )
    book: SessionBook = request.app.state.console_sessions
    session_id, _ = book.start(token)
    answer = RedirectResponse("/console", status_code=status.HTTP_303_SEE_OTHER)
    _set_cookie(request, answer, SESSION_COOKIE, session_id)
    answer.delete_cookie(cookie_name(request, SIGN_IN_COOKIE), path="/")
    return answer


@router.post("/sign-out", name="console_sign_out")
def _sign_out(request: Request, form: Form) -> RedirectResponse:
    """End the session on the server and forget its cookie."""
    visitor = signed_in(request)
    check_csrf(visitor, form)
    book: SessionBook = request.app.state.console_sessions
    book.end(request.cookies.get(cookie_name(request)))
    answer = RedirectResponse(
        "/console/sign-in?done=signed-out", status_code=status.HTTP_303_SEE_OTHER
    )
    answer.delete_cookie(cookie_name(request), path="/")
    return answer
