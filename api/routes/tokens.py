"""DELETE /v1/tokens/{token_id}: an admin revokes a token; the running service drops it at once.

`fusion token revoke` cannot open the store while the service holds it (DuckDB has one
writer), so this route is how a token stops working without a restart. The token id is the
16 hex digits after `bf_` (`fusion token list` shows it); the secret is never needed.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path, Request, Response, status

from api.deps import ServiceDep, audit, require
from fusion.tokens import Principal

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["tokens"])


@router.delete("/tokens/{token_id}", status_code=status.HTTP_204_NO_CONTENT, name="revoke")
def _revoke(
    token_id: Annotated[str, Path(pattern=r"^[0-9a-f]{16}$", description="as in `bf_<id>_...`")],
    request: Request,
    service: ServiceDep,
    _: Annotated[Principal, Depends(require("admin"))],
) -> Response:
    """Revoke a token by its id: its next request gets 401."""
    audit(request, detail=f"revoke {token_id}")
    if not service.tokens.revoke(token_id):
        raise HTTPException(
            status_code=status.HTTP_404_NOT_FOUND,
            detail=f"no live token {token_id}; `fusion token list` shows ids and revocations",
        )
    return Response(status_code=status.HTTP_204_NO_CONTENT)
