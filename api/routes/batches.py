"""POST /v1/batches (vendors push sealed batches), GET /v1/batches/{id} (a batch's status) and
GET /v1/uploads/{upload_id} (what became of one upload).

An upload streams to a temporary file (0600) in the inbox under a size cap (413, nothing kept,
when the body or its Content-Length passes it), is renamed into the inbox whole, and queued for
the service's single ingest worker: 202 with an upload id, the batch id the manifest claims,
and a status_url for the upload's own verdict. That verdict is the upload's, not its batch's:
a file without a readable manifest, or a tampered re-upload of a loaded batch id, reads
"refused" there, while GET /v1/batches/{id} goes on saying what the batch itself is.
The batch is verified, opened, validated and loaded (or quarantined, refused, or reported as a
duplicate) by the worker exactly as `fusion ingest` does. A token pushes only batches whose
manifest names its own vendor (403 otherwise: a vendor cannot replay another's signed files).
A vendor sees only ledger rows of its own vendor id, else what became of its own uploads of
that id (from memory, or after a restart from the `uploads` table the worker writes); a
refusal says "refused" and nothing more. A vendor with `max_pending_uploads` uploads streaming
in or waiting for the worker gets 429 + Retry-After for the next, before any byte is written.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, BinaryIO

from fastapi import APIRouter, Depends, HTTPException, Request, status
from fastapi.concurrency import run_in_threadpool

from api.deps import ServiceDep, SettingsDep, audit, require
from api.schemas import BatchAccepted, BatchPublic
from api.service import Service
from api.settings import ApiSettings
from api.uploads import Upload
from contracts.errors import BatchRefused
from fusion.tokens import Principal
from matcher.atomic import atomic_path, fsync_dir
from matcher.envelope import read_manifest
from matcher.manifest import Manifest

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["batches"])
_CHUNK = 1 << 20  # the body is written, and synced, off the event loop in blocks this big


def _too_large(limit: int) -> HTTPException:
    return HTTPException(
        status_code=status.HTTP_413_CONTENT_TOO_LARGE,
        detail=f"a sealed batch may be at most {limit:,} bytes; split the vendor's data into "
        "several batches",
    )


@router.post(
    "/batches",
    status_code=status.HTTP_202_ACCEPTED,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
            },
        }
    },
    name="upload_batch",
)
async def _upload_batch(
    request: Request,
    service: ServiceDep,
    settings: SettingsDep,
    principal: Annotated[Principal, Depends(require("vendor"))],
) -> BatchAccepted:
    """Stream a sealed batch into the inbox and queue it for ingest; 202 with its ids."""
    limit = settings.max_upload_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    vendor = str(principal.vendor_id)  # a vendor token always names its vendor
    if not service.uploads.admit(vendor, settings.max_pending_uploads):
        raise HTTPException(
            status_code=status.HTTP_429_TOO_MANY_REQUESTS,
            headers={"Retry-After": "30"},
            detail=f"vendor {vendor} already has {settings.max_pending_uploads} "
            "uploads waiting for ingest; wait for their verdicts (GET /v1/uploads/{id}) and "
            "push again",
        )
    try:
        return await _receive(request, service, settings, principal)
    finally:
        service.uploads.release(vendor)


async def _receive(
    request: Request, service: Service, settings: ApiSettings, principal: Principal
) -> BatchAccepted:
    """Stream the body into the inbox, queue it, return its ids (room already reserved)."""
    upload_id = service.uploads.new_id()
    final = service.uploads.path_for(str(principal.vendor_id), upload_id)
    # Not durable here: the file is synced by `_finish` and its folder after the rename, both
    # off the event loop. A failure anywhere in the block leaves nothing behind.
    with atomic_path(final, mode=0o600, durable=False) as tmp:
        size = await _stream_to(tmp, request, limit=settings.max_upload_bytes)
        if size == 0:
            raise HTTPException(
                status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
                detail="the body is empty; send the sealed file as application/octet-stream",
            )
        try:
            manifest: Manifest | None = await run_in_threadpool(read_manifest, tmp)
        except BatchRefused:
            manifest = None  # the worker refuses and ledgers it; the sender learns only "refused"
        if manifest is not None and manifest.vendor_id != principal.vendor_id:
            # Only the named vendor's key makes such a file load: it is another vendor's batch
            # (or a forgery), never queued under this token.
            raise HTTPException(
                status_code=status.HTTP_403_FORBIDDEN,
                detail=f"a token of vendor {principal.vendor_id} may push only batches that "
                "vendor sealed; the manifest names another vendor",
            )
    await run_in_threadpool(fsync_dir, final.parent)
    claimed = manifest.batch_id if manifest is not None else None
    service.uploads.submit(
        Upload(
            upload_id=upload_id,
            token_id=principal.token_id,
            vendor_id=principal.vendor_id,
            path=final,
            claimed_batch_id=claimed,
            received_at=service.clock(),
        )
    )
    audit(request, detail=f"upload {upload_id} batch {claimed}")
    return BatchAccepted(
        upload_id=upload_id,
        batch_id=claimed,
        status_url=f"/v1/uploads/{upload_id}",
    )


async def _stream_to(path: Path, request: Request, *, limit: int) -> int:
    """Write the request body to `path`, synced; return its size (413 past `limit` bytes)."""
    size = 0
    with path.open("wb") as sink:
        block = bytearray()
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise _too_large(limit)
            block += chunk
            if len(block) >= _CHUNK:
                await run_in_threadpool(sink.write, block)
                block.clear()
        await run_in_threadpool(_finish, sink, block)
    return size


def _finish(sink: BinaryIO, block: bytearray) -> None:
    sink.write(block)
    sink.flush()
    os.fsync(sink.fileno())


@router.get("/batches/{batch_id}", name="batch_status")
def _batch_status(
    batch_id: str,
    request: Request,
    service: ServiceDep,
    principal: Annotated[Principal, Depends(require("vendor", "admin"))],
) -> BatchPublic:
    """Return a batch's status, row count and quarantine report (a vendor: its own only)."""
    admin = principal.role == "admin"
    mine = [
        u for u in service.uploads.claiming(batch_id) if admin or u.vendor_id == principal.vendor_id
    ]
    # Read before the ledger: the worker commits the ledger row before it sets the outcome, so an
    # outcome seen here is always matched by a visible row below (read after, a batch could show
    # "quarantined" without its row count).
    newest = mine[-1].outcome if mine else None
    found = (
        service.cursor()
        .execute(
            "SELECT batch_id, vendor_id, status, rows, received_at, finished_at, reasons, report "
            "FROM batches WHERE batch_id = ? AND status <> 'duplicate' "
            "ORDER BY received_at DESC LIMIT 1",
            [batch_id],
        )
        .fetchall()  # read to the end: an unread result keeps its transaction open
    )
    row = found[0] if found else None
    if not admin and row is not None and row[1] != principal.vendor_id:
        # Another vendor's batch, whose id this vendor's upload may merely have claimed (the
        # manifest is read unverified): that upload's own outcome is all it may learn.
        row = None
    # Uploads judged before the last restart: memory has forgotten them, the store has not.
    stored = (
        service.uploads.verdict(batch_id, None if admin else principal.vendor_id)
        if row is None and not mine
        else None
    )
    if row is None and not mine and stored is None:
        # The same answer for "not yours" and "unknown": ids of other vendors stay unconfirmed.
        raise HTTPException(
            status_code=status.HTTP_404_NOT_FOUND, detail=f"no batch {batch_id} of yours"
        )
    audit(request, detail=batch_id)
    if row is None:
        # Refused files are ledgered under their digest, not the id they claimed: the worker's
        # outcome says what happened to the newest upload claiming it.
        if stored is not None:
            return BatchPublic(batch_id=batch_id, status=stored)
        return BatchPublic(batch_id=batch_id, status=newest.status if newest else "received")
    _, _, state, rows, received, finished, reasons, report = row
    refused = state == "refused"
    return BatchPublic(
        batch_id=batch_id,
        status=state,
        rows=None if refused else rows,
        received_at=received,
        finished_at=finished,
        # A refusal's cause stays in the bank's log: the sender learns only that it was refused.
        reasons=[] if refused or not reasons else list(json.loads(reasons)),
        report=None if refused or not report else json.loads(report),
    )


@router.get("/uploads/{upload_id}", name="upload_status")
def _upload_status(
    upload_id: str,
    request: Request,
    service: ServiceDep,
    principal: Annotated[Principal, Depends(require("vendor", "admin"))],
) -> BatchAccepted:
    """Return one upload's own verdict (a vendor: its own uploads only; a refusal, no cause)."""
    admin = principal.role == "admin"
    found = service.uploads.status_of(upload_id, None if admin else principal.vendor_id)
    if found is None:
        # The same answer for "not yours" and "unknown".
        raise HTTPException(
            status_code=status.HTTP_404_NOT_FOUND, detail=f"no upload {upload_id} of yours"
        )
    audit(request, detail=f"upload {upload_id}")
    claimed, state = found
    return BatchAccepted(
        upload_id=upload_id,
        batch_id=claimed,
        status=state,
        status_url=f"/v1/uploads/{upload_id}",
    )
