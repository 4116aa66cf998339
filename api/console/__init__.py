"""The console: server-rendered pages for marketers, analysts and admins, under /console.

Sign in with an API token (exchanged for a session cookie), then read campaigns, their gates,
plans, deliveries and readouts, journey strategies (their flows, gates, dry runs and readouts)
and the new customers' funnel, branch lists, the match and model reports, the latest
monitoring result, and (admins) the batch ledger and tokens; marketers plan, deliver, promote
and close campaigns, and promote and close strategies. Every page is scoped by role and
branch exactly as the matching API route, calls the same `fusion` function, and is audited
like an API call. No JavaScript: forms post, pages print
(docs/console.md).

`install(app)` adds the routes, the session book, the sign-in limit and the page for a refused
request.
"""

from __future__ import annotations

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from api.console import admin, campaigns, home, journeys, lists, monitoring, reports, signin
from api.console.access import ConsoleRefusal
from api.console.pages import SECURITY_HEADERS, render
from api.console.sessions import SessionBook
from api.console.throttle import SignInLimit
from api.settings import ApiSettings

__all__ = ["install", "router"]

router = APIRouter(include_in_schema=False)
for _part in (home, signin, campaigns, journeys, lists, reports, monitoring, admin):
    # The routes themselves, not an included router: the audit names a route by its path.
    router.routes.extend(_part.router.routes)


def install(app: FastAPI, settings: ApiSettings) -> None:
    """Give `app` the console's session book, its sign-in limit and its answer to a refused
    console request."""
    app.state.console_sessions = SessionBook(
        idle=settings.console_idle_timeout.total_seconds(),
        lifetime=settings.console_session_lifetime.total_seconds(),
    )
    app.state.console_sign_in_limit = SignInLimit()

    @app.exception_handler(ConsoleRefusal)
    async def refused(request: Request, refusal: ConsoleRefusal) -> Response:
        if refusal.location is not None:
            return RedirectResponse(
                refusal.location, status_code=refusal.status_code, headers=SECURITY_HEADERS
            )
        page: HTMLResponse = render(
            request,
            "refused.html",
            status=refusal.status_code,
            title=refusal.title,
            message=refusal.message,
        )
        return page
