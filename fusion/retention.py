"""How long, and how much of, the sealed files the ingest worker judged the bank keeps.

Refused and quarantined files go to `quarantine/`, loaded ones to `archive/`: each folder is
bounded in total size and in age, and the oldest entries go first when it is over. An entry is
one child of the folder (a refused file, a quarantined batch's folder with its report, an
archived file), dated by when the worker put it there. The batch ledger keeps its rows: only
the files are pruned. Kept files are 0600 and folders 0700: a sealed file is a vendor's
encrypted data, a report names rows of it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from contracts.errors import ConfigError

__all__ = ["FolderUsage", "Retention", "find_copy", "keep", "prune", "stamp", "tighten", "usage"]

_BLOCK = 8 << 20


@dataclass(frozen=True, kw_only=True)
class Retention:
    """The bound of one kept folder: its total size in bytes and its oldest entry's age.

    The defaults are the quarantine's (2 GiB, 30 days); the service sets both folders' bounds
    (`ApiSettings.quarantine_retention`, `archive_retention`, `fusion serve --quarantine-*`).
    """

    max_bytes: int = 2 << 30
    max_age: timedelta = timedelta(days=30)

    def __post_init__(self) -> None:
        size, age = self.max_bytes, self.max_age
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise ConfigError(
                f"a retention bound is >= 0: max_bytes must be a whole number of bytes >= 0, "
                f"got {size!r}",
                setting="max_bytes",
            )
        if not isinstance(age, timedelta) or age < timedelta(0):
            raise ConfigError(
                f"a retention bound is >= 0: max_age must be a timedelta >= 0, got {age!r}",
                setting="max_age",
            )


@dataclass(frozen=True)
class FolderUsage:
    """How full one kept folder is: bytes and files under it."""

    bytes: int
    files: int


def _files(entry: Path) -> Iterator[Path]:
    if entry.is_dir() and not entry.is_symlink():
        yield from (p for p in entry.rglob("*") if p.is_file() and not p.is_symlink())
    elif entry.is_file():
        yield entry


def _size(entry: Path) -> int:
    return sum(p.stat().st_size for p in _files(entry))


def usage(folder: Path) -> FolderUsage:
    """Return the bytes and files kept under `folder` (zero when it does not exist)."""
    sizes = [p.stat().st_size for p in _files(folder)] if folder.is_dir() else []
    return FolderUsage(bytes=sum(sizes), files=len(sizes))


def keep(path: Path, folder: Path, *, now: datetime) -> Path:
    """Return where `path` now is: moved into `folder` (0700), made 0600 and dated `now`."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    folder.chmod(0o700)
    target = folder / path.name
    if target.exists():
        target = folder / f"{path.stem}-{time.time_ns()}{path.suffix}"
    shutil.move(str(path), target)
    target.chmod(0o600)
    stamp(target, now=now)
    return target


def stamp(entry: Path, *, now: datetime) -> None:
    """Date `entry` `now`: the age of a kept entry counts from the worker's verdict."""
    # The worker's clock, not the upload's file time: a pinned clock (tests) ages entries
    # consistently with the `now` that prunes them.
    moment = now.timestamp()
    os.utime(entry, (moment, moment))


def find_copy(folder: Path, sealed: Path) -> Path | None:
    """Return a file under `folder` with the same bytes as `sealed`, or None.

    Only files of the same size are hashed (and `sealed` only when there is one): a replayed
    batch's kept copy, if any, is found without reading the rest of the folder.
    """
    if not folder.is_dir():
        return None
    size, itself = sealed.stat().st_size, sealed.resolve()
    digest: str | None = None
    for candidate in _files(folder):
        if candidate.suffix != sealed.suffix or candidate.stat().st_size != size:
            continue
        if candidate.resolve() == itself:
            continue
        digest = digest or _sha256(sealed)
        if _sha256(candidate) == digest:
            return candidate
    return None


def _sha256(path: Path) -> str:
    hasher = hashlib.sha256()
    with path.open("rb") as source:
        while block := source.read(_BLOCK):
            hasher.update(block)
    return hasher.hexdigest()


def prune(folder: Path, retention: Retention, *, now: datetime) -> list[Path]:
    """Return the entries of `folder` removed: those past the age bound, then the oldest until
    the rest fits the size bound."""
    if not folder.is_dir():
        return []
    entries = sorted(
        ((e.lstat().st_mtime, e.name, e, _size(e)) for e in folder.iterdir()),
        key=lambda item: (item[0], item[1]),
    )
    oldest = (now - retention.max_age).timestamp()
    total = sum(size for *_, size in entries)
    removed = []
    for mtime, _, entry, size in entries:
        if mtime >= oldest and total <= retention.max_bytes:
            break
        _remove(entry)
        total -= size
        removed.append(entry)
    return removed


def tighten(folder: Path) -> None:
    """Make `folder` and the folders under it 0700, its files 0600 (kept by older versions)."""
    if not folder.is_dir():
        return
    folder.chmod(0o700)
    for path in folder.rglob("*"):
        if path.is_symlink():
            continue
        path.chmod(0o700 if path.is_dir() else 0o600)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
