"""The vendor's side of a batch: users with raw phones -> keyed tag batch -> sealed file.

Salted mode (`build_batch`): raw phones are normalised and keyed-hashed with the agreed salt
epoch, then dropped; the batch holds only 32-byte keys and app/tag lists
(contracts.schemas.VENDOR_BATCH). OPRF mode (`build_oprf_batch`): each user becomes a 16-byte
label and its lists sealed under a key, both derived from F_k(phone) with the vendor's own OPRF
key of the epoch (contracts.schemas.VENDOR_OPRF_BATCH, matcher.oprf_match); the bank opens only
the rows of phones it had evaluated. OPRF batches are packed in the verifiable mode (VOPRF, RFC
9497 mode 0x01) by default: the manifest publishes the epoch's public key, signed with the
batch, and the vendor proves every later evaluation against it. Either batch travels in the same
sealed envelope, wrapped to the bank's current HPKE key or its newest key of a chosen suite.
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
from typing import TYPE_CHECKING

import polars as pl

from contracts.errors import ConfigError, ContractError, InputFileError
from contracts.input_files import read_parquet_input
from contracts.schemas import VENDOR_BATCH, VENDOR_OPRF_BATCH, MatchMode
from contracts.taxonomy import CURRENT_VERSION
from matcher.envelope import SealedInfo, seal
from matcher.identity import normalize_phones
from matcher.kem import Suite
from matcher.keyed_hash import SaltEpoch, keyed_hash
from matcher.keyring import Keyring
from matcher.manifest import BatchKeys, Manifest

if TYPE_CHECKING:
    from matcher.oprf import OprfMode, OprfServerKey

__all__ = [
    "PackOptions",
    "PackResult",
    "build_batch",
    "build_oprf_batch",
    "check_pack_output",
    "pack_users",
]

_LIST_COLUMNS = [c for c in VENDOR_BATCH.columns if c != "key"]


@dataclass(frozen=True)
class PackResult:
    """What the vendor tool reports: counts only, never a phone."""

    batch_id: str
    rows: int
    rejected: dict[str, int]
    duplicates_dropped: int
    salt_epoch: str  # the salt epoch (salted mode) or the OPRF epoch (oprf mode)
    sealed: SealedInfo | None = None
    mode: MatchMode = MatchMode.SALTED


def _unique_users(users: pl.DataFrame) -> tuple[pl.DataFrame, dict[str, int], int]:
    """Return (users with a normalised phone, one row per phone; rejects by reason; dropped)."""
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
    frame = (
        users.select(_LIST_COLUMNS)
        .with_columns(phone=normalised.values)
        .filter(pl.col("phone").is_not_null())
    )
    unique = frame.unique(subset="phone", keep="first", maintain_order=True)
    return unique, normalised.reason_counts(), frame.height - unique.height


def build_batch(users: pl.DataFrame, epoch: SaltEpoch) -> tuple[pl.DataFrame, dict[str, int], int]:
    """Return (batch, rejects by reason, duplicates dropped) for a vendor users frame.

    Args:
        users: a `phone` String column and the VENDOR_BATCH list columns.
        epoch: the salt epoch agreed with the bank.
    """
    unique, rejected, duplicates = _unique_users(users)
    frame = unique.with_columns(key=keyed_hash(unique["phone"], epoch, domain="mobile"))
    batch = frame.select(pl.col(name).cast(dtype) for name, dtype in VENDOR_BATCH.columns.items())
    return batch, rejected, duplicates


def build_oprf_batch(
    users: pl.DataFrame,
    key: OprfServerKey,
    *,
    mode: OprfMode | None = None,
    workers: int | None = None,
) -> tuple[pl.DataFrame, dict[str, int], int, dict[str, int]]:
    """Return (OPRF batch, rejects by reason, duplicates dropped, list entry counts).

    Args:
        users: a `phone` String column and the VENDOR_BATCH list columns.
        key: the vendor's OPRF key of the epoch (never leaves the vendor).
        mode: RFC 9497 mode of the rows (default: base OPRF).
        workers: threads for the OPRF evaluation; every core by default.
    """
    from matcher.oprf import OprfMode  # loads libsodium: OPRF mode only
    from matcher.oprf_match import encode_lists, seal_rows

    unique, rejected, duplicates = _unique_users(users)
    rows = seal_rows(
        key,
        [phone.encode("ascii") for phone in unique["phone"]],
        encode_lists(unique),
        mode=mode or OprfMode.OPRF,
        workers=workers,
    )
    batch = pl.DataFrame(
        {"label": [label for label, _ in rows], "sealed": [sealed for _, sealed in rows]},
        schema=VENDOR_OPRF_BATCH.polars_schema,
    )
    counts = {
        "app_entries": int(unique["app_ids"].list.len().sum()),
        "tag_entries": int(unique["tag_ids"].list.len().sum()),
    }
    return batch, rejected, duplicates, counts


@dataclass(frozen=True, kw_only=True)
class PackOptions:
    """What a vendor seldom changes when packing: the bank key, taxonomy, batch id, sizes."""

    recipient_kid: str | None = None  # the bank HPKE key to seal to (default: the current one)
    taxonomy_version: str = CURRENT_VERSION
    batch_id: str | None = None  # default: a fresh uuid4
    chunk_size: int | None = None  # plaintext bytes per AES-GCM chunk (default: the envelope's)
    workers: int | None = None  # threads for the OPRF evaluation (default: every core)
    suite: Suite | str | None = None  # seal to the bank's newest key of this suite
    verifiable: bool = True  # OPRF mode: VOPRF rows, the epoch's public key in the manifest


def _build(
    users: pl.DataFrame,
    keyring: Keyring,
    mode: MatchMode,
    epoch_id: str | None,
    options: PackOptions,
) -> tuple[pl.DataFrame, dict[str, int], int, dict[str, int], str, str, bytes | None]:
    """Return (batch, rejects, duplicates dropped, list entry counts, epoch id, contract, the
    epoch's VOPRF public key or None)."""
    if mode is MatchMode.OPRF:
        from matcher.oprf import OprfMode

        epoch = epoch_id or keyring.current_oprf_epoch()
        key = keyring.oprf_key(epoch)
        oprf_mode = OprfMode.VOPRF if options.verifiable else OprfMode.OPRF
        batch, rejected, duplicates, counts = build_oprf_batch(
            users, key, mode=oprf_mode, workers=options.workers
        )
        public = key.public_key() if options.verifiable else None
        return batch, rejected, duplicates, counts, epoch, VENDOR_OPRF_BATCH.contract, public
    salt = keyring.salt(epoch_id) if epoch_id else keyring.current_salt()
    batch, rejected, duplicates = build_batch(users, salt)
    counts = {
        "app_entries": int(batch["app_ids"].list.len().sum()),
        "tag_entries": int(batch["tag_ids"].list.len().sum()),
    }
    return batch, rejected, duplicates, counts, salt.epoch_id, VENDOR_BATCH.contract, None


def check_pack_output(users_path: Path, out: Path, *, overwrite: bool = True) -> None:
    """Raise ConfigError unless `out` can take a sealed batch without replacing what it must not.

    Never the users file itself (the vendor's raw data) nor a folder; an existing file only
    with `overwrite` (an unsent batch is there). Creates `out`'s folder when missing.
    """
    users_path, out = Path(users_path), Path(out)
    if out.is_dir():
        raise ConfigError(
            f"the sealed batch's output is a folder ({out}); name a file in it, e.g. "
            f"{out / 'batch.sealed'}",
            setting="out",
        )
    if out.exists() and users_path.exists() and out.samefile(users_path):
        raise ConfigError(
            f"the sealed batch's output is the users file it is packed from ({out}); sealing "
            "over it would replace the vendor's raw data: name another output file",
            setting="out",
        )
    if out.exists() and not overwrite:
        raise ConfigError(
            f"the sealed batch's output already exists ({out}: a batch not yet sent?); write "
            "the new batch to another file, or allow replacing it (fusion vendor pack --force)",
            setting="out",
        )
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(
            f"the sealed batch's output cannot be written: its folder cannot be made "
            f"({out.parent}: {error.strerror}); name an output file in a folder you can write to",
            setting="out",
        ) from error


def pack_users(
    users_path: Path,
    out: Path,
    *,
    keyring: Keyring,
    now: datetime,
    epoch_id: str | None = None,
    mode: MatchMode | str = MatchMode.SALTED,
    options: PackOptions | None = None,
    overwrite: bool = True,
) -> PackResult:
    """Build a batch from a vendor users file, seal it for the bank and return the counts.

    `mode` "salted" keyed-hashes with salt epoch `epoch_id` (default: current); "oprf" seals
    rows under the vendor's OPRF key of epoch `epoch_id` (default: its current OPRF epoch), in
    the verifiable mode unless `options.verifiable` is False. The data key is wrapped to
    `options.recipient_kid`, else the bank's newest key of `options.suite`, else its newest. The
    plaintext batch exists only as a 0600 temp file next to `out` while it is sealed. `out` is
    checked first (`check_pack_output`): never the users file or a folder, and an existing file
    only with `overwrite`.
    """
    if mode not in tuple(MatchMode):
        raise ConfigError(
            f"mode must be one of {', '.join(MatchMode)}, got {mode!r}", setting="mode"
        )
    mode = MatchMode(mode)
    check_pack_output(users_path, out, overwrite=overwrite)
    options = options or PackOptions()
    users = read_parquet_input(
        users_path,
        what="vendor's users",
        columns=("phone", *_LIST_COLUMNS),
        hint="one row per user: phone (text) and the app and tag lists",
    )
    if users.schema["phone"] != pl.String:
        raise InputFileError(
            f"{users_path}: phone is {users.schema['phone']}, not text; write it as a String "
            "column (a number loses a leading '+' or '0' and every formatting the bank's side "
            "normalises the same way)",
            path=str(users_path),
        )
    built = _build(users, keyring, mode, epoch_id, options)
    batch, rejected, duplicates, counts, epoch, contract, oprf_public_key = built
    if batch.height == 0:  # a batch of nobody would load, match nobody, and say nothing
        reasons = ", ".join(f"{n:,} {why}" for why, n in sorted(rejected.items())) or "none"
        raise InputFileError(
            f"{users_path}: no user has a valid mobile phone ({users.height:,} rows; rejected: "
            f"{reasons}); nothing sealed: check the phone column",
            path=str(users_path),
        )
    batch_id = options.batch_id or str(uuid.uuid4())
    signer_kid, signer = keyring.current_signer()
    recipient_kid = options.recipient_kid
    kid, recipient = (
        (recipient_kid, keyring.recipient_public(recipient_kid))
        if recipient_kid
        else keyring.current_recipient_public(options.suite)
    )
    fd, tmp_name = tempfile.mkstemp(prefix=".batch-", suffix=".parquet", dir=out.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        os.chmod(tmp, 0o600)
        batch.write_parquet(tmp, compression="zstd", statistics=False)
        manifest = Manifest.new(
            batch_id=batch_id,
            keys=BatchKeys(
                vendor_id=keyring.vendor_id,
                signing_kid=signer_kid,
                recipient_kid=kid,
                salt_epoch=epoch,
            ),
            created_at=now,
            rows=batch.height,
            taxonomy_version=options.taxonomy_version,
            contract=contract,
            counts=counts,
            mode=mode,
            oprf_public_key=oprf_public_key,
        )
        chunking = {} if options.chunk_size is None else {"chunk_size": options.chunk_size}
        sealed = seal(tmp, out, manifest=manifest, recipient=recipient, signer=signer, **chunking)
    finally:
        tmp.unlink(missing_ok=True)
    return PackResult(
        batch_id=batch_id,
        rows=batch.height,
        rejected=rejected,
        duplicates_dropped=duplicates,
        salt_epoch=epoch,
        sealed=sealed,
        mode=mode,
    )
