"""Admin pages: the batch ledger and the API tokens (with revocation).

The ledger page shows the counts by status (`fusion.pipeline.bank.ledger_counts`, as `/metrics`)
and the latest batches: vendor, status, rows, times; never a refusal's cause, which stays in the
bank's log. The token page lists every token as `fusion token list` does (id, role, scope,
label, created, revoked; never a secret or its hash) and revokes one as `DELETE /v1/tokens`
does: its next request, and every console session signed in with it, is refused at once.
"""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import APIRouter, Depends, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse

from api.console.access import ADMINS, ConsoleRefusal, Form, Visitor, allow, check_csrf
from api.console.pages import render
from api.deps import ServiceDep, audit
from fusion.pipeline.bank import ledger_counts
from fusion.tokens import list_tokens

__all__ = ["router"]

router = APIRouter(prefix="/console", include_in_schema=False)

_LATEST = 200  # batches the ledger page lists
_TOKEN_ID = re.compile(r"[0-9a-f]{16}")
_Admin = Annotated[Visitor, Depends(allow(*ADMINS))]


@router.get("/batches", name="console_batches")
def _batches(request: Request, service: ServiceDep, visitor: _Admin) -> HTMLResponse:
    """The batch ledger: counts by status and the latest batches."""
    with service.bank() as bank:
        counts = ledger_counts(bank.store)
        latest = bank.store.execute(
            "SELECT batch_id, vendor_id, status, rows, received_at, finished_at FROM batches "
            "ORDER BY received_at DESC, batch_id LIMIT ?",
            [_LATEST],
        ).fetchall()
    audit(request, rows=len(latest))
    return render(
        request, "batches.html", title="Batch ledger", counts=counts, latest=latest,
        limit=_LATEST,
    )  # fmt: skip


@router.get("/tokens", name="console_tokens")
def _tokens(
    request: Request, service: ServiceDep, visitor: _Admin, done: str | None = None
) -> HTMLResponse:
    """Every API token: id, role, scope, label, created, revoked."""
    with service.bank() as bank:
        tokens = list_tokens(bank.store)
    notice = "Revoked: the token's next request is refused." if done == "revoked" else None
    return render(request, "tokens.html", title="API tokens", tokens=tokens, notice=notice)


@router.post("/tokens/{token_id}/revoke", name="console_revoke")
def _revoke(
    token_id: str, request: Request, service: ServiceDep, visitor: _Admin, form: Form
) -> RedirectResponse:
    """Revoke a token at once (the API's DELETE /v1/tokens/{token_id})."""
    check_csrf(visitor, form)
    audit(request, detail=f"revoke {token_id[:16]}")
    if not (_TOKEN_ID.fullmatch(token_id) and service.tokens.revoke(token_id)):
        raise ConsoleRefusal(
            status.HTTP_404_NOT_FOUND,
            "No such live token",
            "there is no live token of that id; the tokens page lists ids and revocations",
        )
    return RedirectResponse("/console/tokens?done=revoked", status_code=status.HTTP_303_SEE_OTHER)
