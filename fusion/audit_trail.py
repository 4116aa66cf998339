"""The service's request trail: every API request's audit record, in sealed segment files.

Layout: `<run>/bank/audit/<UTC start>-<pid>-<random>.trail`, folder 0700, files 0600. Each
service process writes segments of its own (so two processes never share a file), starting a
new one at start, past `segment_bytes` and at each new UTC day. One write is one frame of
`matcher.sealed_log` (AES-256-GCM under a key derived from the store key): the records as JSON
lines. `read_audit_trail` opens every segment and returns one table.

Why files and not a table in the store: appending a few hundred rows at a time to a DuckDB
table inside the long-running service grew the process without bound (README, benchmarks:
DuckDB's allocator kept memory for every appended row past each checkpoint), while the same
records appended to a file cost nothing that stays. Operator actions that change the store
(a snapshot grant) are still audited in the store's `audit_log`, in the transaction of the change.

`archive_audit_trail` moves the final segments of past days (no writer holds them) to another
folder (the bank's archive storage), each checked before it moves and copied before its original
goes, so a killed archive run loses nothing and a rerun finishes it; `read_audit_trail` reads an
archive folder as it reads the trail.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import polars as pl

from contracts.errors import ConfigError
from matcher.atomic import atomic_path, fsync_dir
from matcher.sealed_log import SealedLogWriter, read_sealed_log

__all__ = [
    "AUDIT_SCHEMA",
    "ArchivedTrail",
    "AuditRecord",
    "AuditTrail",
    "AuditTrailRead",
    "archive_audit_trail",
    "read_audit_trail",
]

AUDIT_SCHEMA: dict[str, pl.DataType] = {
    "at": pl.Datetime("us"),  # UTC
    "actor": pl.String(),
    "role": pl.String(),
    "action": pl.String(),
    "detail": pl.String(),
    "rows": pl.Int64(),
    "status": pl.String(),
}
_SUFFIX = ".trail"


@dataclass(frozen=True)
class AuditRecord:
    """One request: who, in which role, which route, what came back."""

    at: datetime
    actor: str
    role: str | None
    action: str
    detail: str | None
    rows: int | None
    status: str

    def to_json(self) -> str:
        """Return the record as one JSON line (time in UTC, microseconds)."""
        at = self.at.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds")
        return json.dumps(
            [at, self.actor, self.role, self.action, self.detail, self.rows, self.status],
            separators=(",", ":"),
        )


def _utc_now() -> datetime:
    return datetime.now(UTC)


class AuditTrail:
    """This process's segments of the trail in `folder`; `append` writes one frame.

    Not thread-safe: one thread appends (the service's audit thread).
    """

    def __init__(
        self,
        folder: Path,
        key: bytes,
        *,
        segment_bytes: int = 64 << 20,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        """Make `folder` (0700) if needed; the first segment is created on the first append."""
        self.folder = Path(folder)
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.folder.chmod(0o700)
        self._key = key
        self._segment_bytes = segment_bytes
        self._clock = clock
        self._writer: SealedLogWriter | None = None
        self._day: date | None = None
        self.written = 0  # records appended since start

    def append(self, records: Sequence[AuditRecord]) -> None:
        """Write `records` as one frame, flushed to disk; raises OSError when it cannot.

        A failed append writes nothing a reader would see; calling it again with the same
        records is the retry.
        """
        if not records:
            return
        writer = self._segment()
        writer.append("\n".join(record.to_json() for record in records).encode())
        self.written += len(records)

    def close(self) -> None:
        """Seal and close the current segment; a later append starts a new one.

        Raises OSError when the closing frame cannot be written: the segment is closed anyway
        and reads as not sealed.
        """
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()

    def _segment(self) -> SealedLogWriter:
        now = self._clock().astimezone(UTC)
        writer = self._writer
        if writer is not None and (writer.size >= self._segment_bytes or now.date() != self._day):
            self.close()
            writer = None
        if writer is None:
            name = f"{now:%Y%m%dT%H%M%S%fZ}-{os.getpid()}-{secrets.token_hex(3)}{_SUFFIX}"
            writer = self._writer = SealedLogWriter(self.folder / name, self._key)
            self._day = now.date()
        return writer


@dataclass(frozen=True)
class AuditTrailRead:
    """The trail as read: every record (oldest first); the segments whose last frame was torn
    by a killed writer (its records before the tear are in `records`); the segments a running
    service is writing (`writing`, not sealed yet); and the segments without their closing frame
    and without a writer (`unsealed`): left by a killed service, or cut short by whole frames."""

    records: pl.DataFrame
    segments: int
    torn: tuple[str, ...]
    unsealed: tuple[str, ...]
    writing: tuple[str, ...] = ()


def read_audit_trail(folder: Path, key: bytes) -> AuditTrailRead:
    """Return every record of the trail in `folder` (none when it does not exist yet).

    Raises SealedLogError when a segment is not one or a frame does not open (altered, or
    another key): an audit trail is read whole or not at all.
    """
    paths = _segments(Path(folder))
    rows: list[list[object]] = []
    torn: list[str] = []
    unsealed: list[str] = []
    writing: list[str] = []
    for path in paths:
        read = read_sealed_log(path, key)
        if read.torn_tail:
            torn.append(path.name)
        if read.writing:
            writing.append(path.name)
        elif not read.sealed:
            unsealed.append(path.name)
        for frame in read.frames:
            rows.extend(json.loads(line) for line in frame.decode().split("\n"))
    as_read = [(name, pl.String() if name == "at" else kind) for name, kind in AUDIT_SCHEMA.items()]
    records = pl.DataFrame(rows, schema=as_read, orient="row").with_columns(
        pl.col("at").str.to_datetime("%Y-%m-%dT%H:%M:%S%.f", time_unit="us")
    )
    return AuditTrailRead(
        records.sort("at", maintain_order=True),
        len(paths),
        tuple(torn),
        tuple(unsealed),
        tuple(writing),
    )


@dataclass(frozen=True)
class ArchivedTrail:
    """What `archive_audit_trail` did: the segments moved; those of them without their closing
    frame (a killed service's, or cut short: they move as they are, and read as not sealed in
    the archive too); and those of the same days left in place because a writer holds them."""

    moved: tuple[str, ...]
    unsealed: tuple[str, ...]
    writing: tuple[str, ...]


def archive_audit_trail(folder: Path, archive: Path, key: bytes, *, before: date) -> ArchivedTrail:
    """Move every final segment of `folder` started on a UTC day before `before` to `archive`.

    A segment is final when no writer holds it (its writer closed it, or died). Each is read
    first (every frame opens under `key`); it is copied to `archive` (0700, files 0600) and
    flushed to disk, and only then is the original removed. A run killed between the two leaves
    both copies, equal: the next run removes the original. A segment a live writer holds (a
    service with no request since midnight has not rotated yet) stays, named in the result.

    Raises SealedLogError when a segment does not read (nothing of it moves), ConfigError when
    `archive` is the trail's own folder or holds another file of a segment's name.
    """
    folder, archive = Path(folder), Path(archive)
    if archive.resolve() == folder.resolve():
        raise ConfigError(
            f"the archive must be another folder than the trail ({folder}); name one on the "
            "bank's archive storage",
            setting="archive",
        )
    moved: list[str] = []
    unsealed: list[str] = []
    writing: list[str] = []
    for path in _segments(folder):
        if _segment_day(path) >= before:
            continue
        read = read_sealed_log(path, key)
        if read.writing:
            writing.append(path.name)
            continue
        _move_segment(path, archive)
        moved.append(path.name)
        if not read.sealed:
            unsealed.append(path.name)
    return ArchivedTrail(tuple(moved), tuple(unsealed), tuple(writing))


def _segments(folder: Path) -> list[Path]:
    """Return the segment files in `folder` by name (oldest start first); none if no folder."""
    return sorted(folder.glob(f"*{_SUFFIX}")) if folder.is_dir() else []


def _segment_day(path: Path) -> date:
    """Return the UTC day a segment was started on, from its name (`AuditTrail._segment`)."""
    try:
        return datetime.strptime(path.name[:8], "%Y%m%d").date()
    except ValueError:
        raise ConfigError(
            f"{path} is not named as the trail names its segments (<UTC start>-<pid>-<random>"
            f"{_SUFFIX}); move it out of the trail folder",
            setting="archive",
        ) from None


def _move_segment(path: Path, archive: Path) -> None:
    """Copy `path` into `archive` durably, then remove it (a copy already there must be equal)."""
    archive.mkdir(mode=0o700, parents=True, exist_ok=True)
    target = archive / path.name
    data = path.read_bytes()
    if target.exists():
        if target.read_bytes() != data:
            raise ConfigError(
                f"{target} exists and differs from the segment of the same name in the trail; "
                "compare the two by reading each folder, and move the wrong one aside",
                setting="archive",
            )
    else:
        with atomic_path(target, mode=0o600) as temporary:
            temporary.write_bytes(data)
    path.unlink()
    fsync_dir(path.parent)
