"""Who is at the console: the session cookie, the token behind it, roles, forms and CSRF.

Every page depends on `signed_in` (no session: a redirect to the sign-in page) and then on one
of the role rules below, which are the API's own: a page shows what the matching API route
answers, to the same roles and branches. Every POST carries a form (URL-encoded, parsed here)
whose `csrf` field must be the session's token; a form without it, or with another one, is
refused before anything runs. The principal is put on the request as the API's bearer check
does, so the audit log records console requests like API calls.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated
from urllib.parse import parse_qsl

from fastapi import Depends, Request, status

from api.console.sessions import Session, SessionBook, csrf_matches
from api.service import Service
from api.settings import ApiSettings
from fusion.tokens import Principal

__all__ = [
    "ADMINS",
    "CAMPAIGN_READERS",
    "LIST_READERS",
    "MARKETERS",
    "MONITORING_READERS",
    "READOUT_READERS",
    "SESSION_COOKIE",
    "SIGN_IN_COOKIE",
    "ConsoleRefusal",
    "Form",
    "Visitor",
    "allow",
    "check_csrf",
    "cookie_name",
    "is_head_office",
    "secure_cookies",
    "signed_in",
]

SESSION_COOKIE = "bf_console"
SIGN_IN_COOKIE = "bf_console_sign_in"  # the sign-in form's own CSRF value (double submit)
_MAX_FIELDS = 20  # no console form has more; a body with more is refused unparsed

# The API's rules (api/routes/campaigns.py, lists.py, tokens.py), by page.
MARKETERS = ("marketer", "admin")  # declare, plan, promote, deliver, close
CAMPAIGN_READERS = ("marketer", "admin", "analyst")  # analysts: head office only
READOUT_READERS = ("marketer", "admin", "analyst")  # branch analysts: their branches' rows
# Analysts: their branches. Marketer tokens carry no branch scope (`fusion.tokens`: only
# analysts have branches), so a marketer is head office and reads every branch's list.
LIST_READERS = ("campaign_tool", "marketer", "admin", "analyst")
# The monitoring report counts every branch: head office (analysts: head office only).
MONITORING_READERS = ("marketer", "admin", "analyst")
ADMINS = ("admin",)


class ConsoleRefusal(Exception):
    """A console request answered with a page that says why (or a redirect to `location`)."""

    def __init__(
        self, status_code: int, title: str, message: str, *, location: str | None = None
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.title = title
        self.message = message
        self.location = location


@dataclass(frozen=True)
class Visitor:
    """A signed-in console user: the token's principal and the browser's session."""

    principal: Principal
    session: Session

    @property
    def role(self) -> str:
        return self.principal.role

    @property
    def branches(self) -> frozenset[str] | None:
        """The analyst's branches; None for every other role and for head office."""
        return self.principal.branches if self.principal.role == "analyst" else None


def is_head_office(principal: Principal) -> bool:
    """Return whether the principal reads the whole bank (not an analyst tied to branches)."""
    return not (principal.role == "analyst" and principal.branches is not None)


def secure_cookies(request: Request) -> bool:
    """Return whether cookies are marked Secure: the setting, else whether TLS carried this."""
    settings: ApiSettings = request.app.state.settings
    chosen = settings.console_secure_cookies
    return chosen if chosen is not None else request.url.scheme == "https"


def cookie_name(request: Request, name: str = SESSION_COOKIE) -> str:
    """Return a cookie's name: `__Host-` prefixed when Secure (bound to this host and path /)."""
    return f"__Host-{name}" if secure_cookies(request) else name


def signed_in(request: Request) -> Visitor:
    """Return the signed-in visitor; without a live session, a redirect to the sign-in page.

    The session's token is checked by the service's token gate on every request, as a bearer
    token is: a revoked token's session ends here.
    """
    book: SessionBook = request.app.state.console_sessions
    service: Service = request.app.state.service
    cookie = request.cookies.get(cookie_name(request))
    session = book.get(cookie)
    principal = service.tokens.authenticate(session.token) if session is not None else None
    if session is None or principal is None:
        book.end(cookie)
        raise ConsoleRefusal(
            status.HTTP_303_SEE_OTHER,
            "Sign in",
            "sign in to use the console",
            location="/console/sign-in",
        )
    request.state.principal = principal  # the audit log's actor and role
    visitor = Visitor(principal, session)
    request.state.console_visitor = visitor
    return visitor


SignedIn = Annotated[Visitor, Depends(signed_in)]


def allow(*roles: str, head_office: bool = False) -> Callable[[Visitor], Visitor]:
    """Return a dependency admitting visitors in `roles` (others get a 403 page).

    `head_office=True` also refuses an analyst tied to branches, as the API's campaign reads do.
    """

    def check(visitor: SignedIn) -> Visitor:
        if visitor.role not in roles:
            raise ConsoleRefusal(
                status.HTTP_403_FORBIDDEN,
                "Not for this role",
                f"this page is for {', '.join(roles)}; you are signed in as {visitor.role}",
            )
        if head_office and not is_head_office(visitor.principal):
            raise ConsoleRefusal(
                status.HTTP_403_FORBIDDEN,
                "Head office only",
                "this page is read by head office; a branch analyst reads its branches' lists "
                "and its branches' rows of a campaign readout",
            )
        return visitor

    return check


async def _form(request: Request) -> dict[str, str]:
    """Return a POSTed URL-encoded form's fields; 400/415 pages for anything else."""
    kind = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        raise ConsoleRefusal(
            status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
            "Not a console form",
            "console forms are sent URL-encoded (application/x-www-form-urlencoded); send the "
            "form from its page",
        )
    body = await request.body()  # the service's body cap already bounds it
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, max_num_fields=_MAX_FIELDS)
    except (UnicodeDecodeError, ValueError):
        raise _bad_form() from None
    fields: dict[str, str] = {}
    for key, value in pairs:
        if key in fields:  # one value a field: two would leave which one counts to chance
            raise _bad_form()
        fields[key] = value
    return fields


def _bad_form() -> ConsoleRefusal:
    return ConsoleRefusal(
        status.HTTP_400_BAD_REQUEST,
        "Unreadable form",
        f"a console form is UTF-8 text with at most {_MAX_FIELDS} fields, each given once; "
        "send the form from its page",
    )


Form = Annotated[dict[str, str], Depends(_form)]


def check_csrf(visitor: Visitor, form: dict[str, str]) -> None:
    """Refuse (403 page) a form whose `csrf` field is not the visitor's session's token."""
    if not csrf_matches(visitor.session, form.get("csrf")):
        raise ConsoleRefusal(
            status.HTTP_403_FORBIDDEN,
            "Form refused",
            "this form did not come from your console session (its security token is missing "
            "or stale); open the page again and send the form from there",
        )
