"""One way to write a file or a folder so that readers see the old one or the new one, whole.

`atomic_path(final)` yields a temporary path beside `final` (same folder, so the rename cannot
cross a file system); when the block ends without an error the temporary file is flushed to disk,
renamed over `final`, and the folder entry is flushed too. When the block raises, the temporary
file or folder is removed and `final` is as it was. `write_atomic` is the one-call form for bytes
or text. Key files pass `mode=0o600`, so a secret never exists on disk with looser permissions.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_path", "fsync_dir", "fsync_file", "temp_name", "write_atomic"]


def temp_name(final: Path) -> Path:
    """Return a fresh hidden temporary path beside `final`: `.<name>.<random>.tmp`."""
    return final.with_name(f".{final.name}.{uuid.uuid4().hex[:12]}.tmp")


def fsync_file(path: Path) -> None:
    """Flush a file's contents (every file below it, for a folder) to disk."""
    if path.is_dir():
        for child in sorted(path.rglob("*")):
            if child.is_file():
                fsync_file(child)
        fsync_dir(path)
        return
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(folder: Path) -> None:
    """Flush a folder's entries (a rename into it) to disk."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


@contextmanager
def atomic_path(
    final: Path | str, *, mode: int | None = None, durable: bool = True, make_parent: bool = True
) -> Iterator[Path]:
    """Yield a temporary path that replaces `final` when the block succeeds.

    Args:
        final: the file or folder to write.
        mode: when given, the temporary file is created empty with these permissions before the
            block writes it (a secret is never readable by others, not even for a moment).
        durable: flush the data and the rename to disk (off only for scratch files).
        make_parent: create the parent folder when missing (off for a keyring, whose folder
            must exist with its own 0700 permissions: a missing one is an error, not made anew).
    """
    final = Path(final)
    if make_parent:
        final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(final)
    if mode is not None:
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode))
    try:
        yield tmp
        if durable:
            fsync_file(tmp)
        os.replace(tmp, final)
    except BaseException:
        _remove(tmp)
        raise
    if durable:
        fsync_dir(final.parent)


def write_atomic(
    final: Path | str,
    data: bytes | str,
    *,
    mode: int | None = None,
    durable: bool = True,
    make_parent: bool = True,
) -> Path:
    """Write `data` (text as UTF-8) to `final` through `atomic_path`; return `final`."""
    body = data.encode("utf-8") if isinstance(data, str) else data
    with atomic_path(final, mode=mode, durable=durable, make_parent=make_parent) as tmp:
        tmp.write_bytes(body)
    return Path(final)
