"""The vendor's side of a batch: users with raw phones -> keyed tag batch -> sealed file.

Raw phones are normalised and keyed-hashed with the agreed salt epoch, then dropped; the batch
that leaves the vendor holds only 32-byte keys and app/tag lists (contracts.schemas.VENDOR_BATCH).
Users whose phone does not normalise are counted by reason, and users sharing a phone keep one
row (the first: the vendor's own file order decides), so the batch's keys are unique.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import polars as pl

from contracts.errors import ConfigError, ContractError
from contracts.schemas import VENDOR_BATCH
from contracts.taxonomy import CURRENT_VERSION
from matcher.envelope import Manifest, SealedInfo, seal
from matcher.identity import normalize_phones
from matcher.keyed_hash import SaltEpoch, keyed_hash
from matcher.keyring import Keyring

__all__ = ["PackResult", "build_batch", "pack_users"]

_LIST_COLUMNS = [c for c in VENDOR_BATCH.columns if c != "key"]


@dataclass(frozen=True)
class PackResult:
    """What the vendor tool reports: counts only, never a phone."""

    batch_id: str
    rows: int
    rejected: dict[str, int]
    duplicates_dropped: int
    salt_epoch: str
    sealed: SealedInfo | None = None


def build_batch(users: pl.DataFrame, epoch: SaltEpoch) -> tuple[pl.DataFrame, dict[str, int], int]:
    """Return (batch, rejects by reason, duplicates dropped) for a vendor users frame.

    Args:
        users: a `phone` String column and the VENDOR_BATCH list columns.
        epoch: the salt epoch agreed with the bank.
    """
    if "phone" not in users.columns:
        raise ConfigError(
            "the users file needs a 'phone' column (String) with the users' mobile numbers",
            setting="users",
        )
    missing = [c for c in _LIST_COLUMNS if c not in users.columns]
    if missing:
        raise ContractError(
            f"the users file lacks {', '.join(missing)}; see contracts/schemas.py VENDOR_BATCH",
            contract=VENDOR_BATCH.contract,
            rules=("schema",),
        )
    normalised = normalize_phones(users["phone"].cast(pl.String))
    keys = keyed_hash(normalised.values, epoch, domain="mobile")
    frame = users.select(_LIST_COLUMNS).with_columns(key=keys).filter(pl.col("key").is_not_null())
    before = frame.height
    frame = frame.unique(subset="key", keep="first", maintain_order=True)
    batch = frame.select(pl.col(name).cast(dtype) for name, dtype in VENDOR_BATCH.columns.items())
    return batch, normalised.reason_counts(), before - frame.height


def pack_users(
    users_path: Path,
    out: Path,
    *,
    keyring: Keyring,
    now: datetime,
    epoch_id: str | None = None,
    recipient_kid: str | None = None,
    taxonomy_version: str = CURRENT_VERSION,
    batch_id: str | None = None,
    chunk_size: int | None = None,
) -> PackResult:
    """Normalise, keyed-hash and seal a vendor users file for the bank; return the counts.

    The plaintext batch exists only as a 0600 temp file next to `out` while it is sealed.
    """
    epoch = keyring.salt(epoch_id) if epoch_id else keyring.current_salt()
    users = pl.read_parquet(users_path)
    batch, rejected, duplicates = build_batch(users, epoch)
    batch_id = batch_id or str(uuid.uuid4())
    out.parent.mkdir(parents=True, exist_ok=True)
    signer_kid, signer = keyring.current_signer()
    kid, recipient = (
        (recipient_kid, keyring.recipient_public(recipient_kid))
        if recipient_kid
        else keyring.current_recipient_public()
    )
    fd, tmp_name = tempfile.mkstemp(prefix=".batch-", suffix=".parquet", dir=out.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        os.chmod(tmp, 0o600)
        batch.write_parquet(tmp, compression="zstd", statistics=False)
        manifest = Manifest.new(
            batch_id=batch_id,
            vendor_id=keyring.vendor_id,
            signing_kid=signer_kid,
            recipient_kid=kid,
            salt_epoch=epoch.epoch_id,
            created_at=now,
            rows=batch.height,
            taxonomy_version=taxonomy_version,
            contract=VENDOR_BATCH.contract,
            counts={
                "app_entries": int(batch["app_ids"].list.len().sum()),
                "tag_entries": int(batch["tag_ids"].list.len().sum()),
            },
        )
        kwargs = {} if chunk_size is None else {"chunk_size": chunk_size}
        sealed = seal(tmp, out, manifest=manifest, recipient=recipient, signer=signer, **kwargs)
    finally:
        tmp.unlink(missing_ok=True)
    return PackResult(
        batch_id=batch_id,
        rows=batch.height,
        rejected=rejected,
        duplicates_dropped=duplicates,
        salt_epoch=epoch.epoch_id,
        sealed=sealed,
    )
