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

Several identifiers: when the users file also has `id_number` and/or `device_id` columns (or
`PackOptions.identifiers` names them), each row is keyed by its user's composite key, one key
per identifier type in a fixed order with random bytes where the user lacks one (contract
`vendor_batch/v2`; OPRF: `vendor_oprf_batch/v2`, `matcher.oprf_match.seal_rows_by_identifier`),
so one user stays one row of lists whichever identifier the bank matches it by. An ID number or
device id that does not normalise is left out of its row, and one two users share is left out
of both rows (it could not say which user it is): both counted in the manifest
(`<type>_unusable`, `<type>_shared`), beside the keys of each type (`<type>_keys`). The
manifest declares the batch's identifier types (`identifiers`).
"""

from __future__ import annotations

import os
import tempfile
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl

from contracts.errors import ConfigError, ContractError, InputFileError
from contracts.input_files import read_parquet_input
from contracts.schemas import (
    IDENTIFIER_COLUMNS,
    VENDOR_BATCH,
    VENDOR_BATCH_V2,
    VENDOR_OPRF_BATCH,
    VENDOR_OPRF_BATCH_V2,
    MatchMode,
)
from contracts.taxonomy import CURRENT_VERSION
from matcher.envelope import SealedInfo, seal
from matcher.identity import normalize, normalize_phones
from matcher.kem import Suite
from matcher.keyed_hash import KEY_BYTES, SaltEpoch, compose_keys, keyed_hash
from matcher.keyring import Keyring
from matcher.manifest import BatchKeys, Manifest
from matcher.psi import usable_priority

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
    identifiers: tuple[str, ...] = ("mobile",)
    identifier_counts: dict[str, int] = field(default_factory=dict)  # <type>_keys, ...


def _unique_users(
    users: pl.DataFrame, identifiers: tuple[str, ...] = ("mobile",)
) -> tuple[pl.DataFrame, dict[str, int], int]:
    """Return (users with a normalised phone, one row per phone; rejects by reason; dropped).

    The other identifier types of `identifiers` come normalised in their own columns (null
    where unusable or shared by two kept users), with `_identifier_counts` of what was left out.
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
    extra = [kind for kind in identifiers if kind != "mobile"]
    frame = (
        users.select(*_LIST_COLUMNS, *(IDENTIFIER_COLUMNS[k] for k in extra))
        .with_columns(phone=normalised.values)
        .filter(pl.col("phone").is_not_null())
    )
    unique = frame.unique(subset="phone", keep="first", maintain_order=True)
    return unique, normalised.reason_counts(), frame.height - unique.height


def _identifier_values(
    unique: pl.DataFrame, identifiers: tuple[str, ...]
) -> tuple[dict[str, pl.Series], dict[str, int]]:
    """Return each type's normalised values (null where unusable or shared) and their counts."""
    values, counts = {"mobile": unique["phone"]}, {"mobile_keys": unique.height}
    for kind in identifiers:
        if kind == "mobile":
            continue
        found = normalize(kind, unique[IDENTIFIER_COLUMNS[kind]].cast(pl.String)).values
        shared = found.is_not_null() & found.is_duplicated()
        values[kind] = found.set(shared, None)
        counts[f"{kind}_keys"] = int(values[kind].is_not_null().sum())
        counts[f"{kind}_shared"] = int(shared.sum())
        counts[f"{kind}_unusable"] = int(found.is_null().sum())
    return values, counts


def build_batch(
    users: pl.DataFrame, epoch: SaltEpoch, *, identifiers: tuple[str, ...] = ("mobile",)
) -> tuple[pl.DataFrame, dict[str, int], int]:
    """Return (batch, rejects by reason, duplicates dropped) for a vendor users frame.

    Args:
        users: a `phone` String column and the VENDOR_BATCH list columns (and the columns of
            the other `identifiers`).
        epoch: the salt epoch agreed with the bank.
        identifiers: the identifier types to key rows by; more than the mobile number gives
            composite keys (VENDOR_BATCH_V2).
    """
    batch, rejected, duplicates, _ = _salted_batch(users, epoch, identifiers)
    return batch, rejected, duplicates


def _salted_batch(
    users: pl.DataFrame, epoch: SaltEpoch, identifiers: tuple[str, ...]
) -> tuple[pl.DataFrame, dict[str, int], int, dict[str, int]]:
    """Return (batch, rejects, duplicates dropped, identifier counts)."""
    unique, rejected, duplicates = _unique_users(users, identifiers)
    values, counts = _identifier_values(unique, identifiers)
    keys = {kind: keyed_hash(values[kind], epoch, domain=kind) for kind in identifiers}
    key = (
        keys["mobile"]
        if identifiers == ("mobile",)
        else compose_keys(keys, KEY_BYTES, random_fill=True)
    )
    frame = unique.with_columns(key=key)
    batch = frame.select(pl.col(name).cast(dtype) for name, dtype in VENDOR_BATCH.columns.items())
    return batch, rejected, duplicates, counts


def build_oprf_batch(
    users: pl.DataFrame,
    key: OprfServerKey,
    *,
    mode: OprfMode | None = None,
    workers: int | None = None,
    identifiers: tuple[str, ...] = ("mobile",),
) -> tuple[pl.DataFrame, dict[str, int], int, dict[str, int]]:
    """Return (OPRF batch, rejects by reason, duplicates dropped, list entry counts).

    Args:
        users: a `phone` String column and the VENDOR_BATCH list columns.
        key: the vendor's OPRF key of the epoch (never leaves the vendor).
        mode: RFC 9497 mode of the rows (default: base OPRF).
        workers: threads for the OPRF evaluation; every core by default.
        identifiers: the identifier types to seal rows under (more than the mobile number:
            VENDOR_OPRF_BATCH_V2); the counts then hold each type's keys too.
    """
    from matcher.oprf import OprfMode  # loads libsodium: OPRF mode only
    from matcher.oprf_match import encode_lists, seal_rows, seal_rows_by_identifier

    unique, rejected, duplicates = _unique_users(users, identifiers)
    payloads = encode_lists(unique)
    counts = {
        "app_entries": int(unique["app_ids"].list.len().sum()),
        "tag_entries": int(unique["tag_ids"].list.len().sum()),
    }
    if identifiers == ("mobile",):
        rows = seal_rows(
            key,
            [phone.encode("ascii") for phone in unique["phone"]],
            payloads,
            mode=mode or OprfMode.OPRF,
            workers=workers,
        )
    else:
        values, id_counts = _identifier_values(unique, identifiers)
        counts |= id_counts
        rows = seal_rows_by_identifier(
            key, values, payloads, mode=mode or OprfMode.OPRF, workers=workers
        )
    batch = pl.DataFrame(
        {"label": [label for label, _ in rows], "sealed": [sealed for _, sealed in rows]},
        schema=VENDOR_OPRF_BATCH.polars_schema,
    )
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
    # Identifier types to key rows by (None: the mobile number and every other type the users
    # file has a column for); the order is irrelevant here, the bank declares its priority.
    identifiers: tuple[str, ...] | None = None


@dataclass(frozen=True)
class _Built:
    """A batch built for sealing, and what its manifest says of it."""

    batch: pl.DataFrame
    rejected: dict[str, int]
    duplicates: int
    counts: dict[str, int]
    epoch: str
    contract: str
    identifiers: tuple[str, ...]
    oprf_public_key: bytes | None = None


def _build(
    users: pl.DataFrame,
    keyring: Keyring,
    mode: MatchMode,
    epoch_id: str | None,
    options: PackOptions,
) -> _Built:
    """Return the batch of `users` in `mode`, with its counts, epoch, contract and VOPRF key."""
    identifiers = usable_priority(users.columns, options.identifiers)
    if "mobile" not in identifiers:
        raise ConfigError(
            "a vendor batch keys every row by its user's mobile number; declare 'mobile' among "
            "the identifiers",
            setting="identifiers",
        )
    several = identifiers != ("mobile",)
    if mode is MatchMode.OPRF:
        from matcher.oprf import OprfMode

        epoch = epoch_id or keyring.current_oprf_epoch()
        key = keyring.oprf_key(epoch)
        oprf_mode = OprfMode.VOPRF if options.verifiable else OprfMode.OPRF
        batch, rejected, duplicates, counts = build_oprf_batch(
            users, key, mode=oprf_mode, workers=options.workers, identifiers=identifiers
        )
        contract = (VENDOR_OPRF_BATCH_V2 if several else VENDOR_OPRF_BATCH).contract
        public = key.public_key() if options.verifiable else None
        return _Built(batch, rejected, duplicates, counts, epoch, contract, identifiers, public)
    salt = keyring.salt(epoch_id) if epoch_id else keyring.current_salt()
    batch, rejected, duplicates, id_counts = _salted_batch(users, salt, identifiers)
    counts = {
        "app_entries": int(batch["app_ids"].list.len().sum()),
        "tag_entries": int(batch["tag_ids"].list.len().sum()),
    }
    if several:
        counts |= id_counts
    contract = (VENDOR_BATCH_V2 if several else VENDOR_BATCH).contract
    return _Built(batch, rejected, duplicates, counts, salt.epoch_id, contract, identifiers)


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
    users = _read_users(users_path)
    built = _build(users, keyring, mode, epoch_id, options)
    batch, rejected = built.batch, built.rejected
    if batch.height == 0:  # a batch of nobody would load, match nobody, and say nothing
        reasons = ", ".join(f"{n:,} {why}" for why, n in sorted(rejected.items())) or "none"
        raise InputFileError(
            f"{users_path}: no user has a valid mobile phone ({users.height:,} rows; rejected: "
            f"{reasons}); nothing sealed: check the phone column",
            path=str(users_path),
        )
    batch_id = options.batch_id or str(uuid.uuid4())
    sealed = _seal_batch(built, out, batch_id, keyring=keyring, now=now, mode=mode, options=options)
    return PackResult(
        batch_id=batch_id,
        rows=batch.height,
        rejected=rejected,
        duplicates_dropped=built.duplicates,
        salt_epoch=built.epoch,
        sealed=sealed,
        mode=mode,
        identifiers=built.identifiers,
        identifier_counts={k: v for k, v in built.counts.items() if not k.endswith("_entries")},
    )


def _read_users(users_path: Path) -> pl.DataFrame:
    """Return the vendor's users file (phone and the list columns), its phone column text."""
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
    return users


def _seal_batch(
    built: _Built,
    out: Path,
    batch_id: str,
    *,
    keyring: Keyring,
    now: datetime,
    mode: MatchMode,
    options: PackOptions,
) -> SealedInfo:
    """Seal `built`'s batch to `out` for the bank, signed; the plaintext only in a 0600 temp."""
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
        built.batch.write_parquet(tmp, compression="zstd", statistics=False)
        manifest = Manifest.new(
            batch_id=batch_id,
            keys=BatchKeys(
                vendor_id=keyring.vendor_id,
                signing_kid=signer_kid,
                recipient_kid=kid,
                salt_epoch=built.epoch,
            ),
            created_at=now,
            rows=built.batch.height,
            taxonomy_version=options.taxonomy_version,
            contract=built.contract,
            counts=built.counts,
            mode=mode,
            oprf_public_key=built.oprf_public_key,
            identifiers=None if built.identifiers == ("mobile",) else built.identifiers,
        )
        chunking = {} if options.chunk_size is None else {"chunk_size": options.chunk_size}
        return seal(tmp, out, manifest=manifest, recipient=recipient, signer=signer, **chunking)
    finally:
        tmp.unlink(missing_ok=True)
