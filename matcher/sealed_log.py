"""Append-only sealed logs: a segment file of AES-256-GCM frames, each bound to its place.

A segment is written by one process and only ever appended to. Its layout:

    MAGIC (8 bytes) | segment id (16 random bytes) | frame | frame | ...
    frame = length (4 bytes, big-endian, of nonce + ciphertext) | nonce (12) | ciphertext + tag

The additional data of frame i is `segment id || i` (8 bytes, big-endian), so a frame altered,
moved to another place or segment, or dropped from the middle fails to open, and the reader
says which file. A frame is written with one `write` and flushed to disk before `append`
returns; a process killed in the middle of one leaves a torn tail (a short last frame), which
the reader reports and skips: every frame before it opens. `close` seals the segment with an
empty last frame whose additional data ends in one more byte (0xFF), so a reader tells a segment
closed whole from one still written, left by a killed writer, or cut short by whole frames
(`SealedLogRead.sealed`); a frame after the seal does not open. The writer holds an exclusive
`flock` on its file from creation to close (the kernel drops it when the process dies, even
killed), so a reader also tells a segment still being written (`SealedLogRead.writing`) from one
whose writer is gone: only the latter is final.

The key is derived from the bank's store key (`Keyring.audit_trail_key`); nothing here writes it.
"""

from __future__ import annotations

import fcntl
import os
import secrets
import struct
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from contracts.errors import SealedLogError
from matcher.atomic import fsync_dir

__all__ = ["SealedLogRead", "SealedLogWriter", "read_sealed_log"]

MAGIC = b"BFLOG\x00\x01\n"
_ID_BYTES = 16
_NONCE_BYTES = 12
_LENGTH = struct.Struct(">I")
_INDEX = struct.Struct(">Q")
_HEADER_BYTES = len(MAGIC) + _ID_BYTES
_MAX_FRAME = 256 << 20  # a frame longer than this is a corrupt length, not a frame
_SEAL = b"\xff"  # the closing frame's additional data ends with it; a data frame's never does


def _check_key(key: bytes) -> None:
    if not isinstance(key, bytes) or len(key) != 32:
        raise SealedLogError(
            "a sealed log key must be 32 bytes (derive it with Keyring.audit_trail_key); got "
            f"{type(key).__name__} of length {len(key) if isinstance(key, bytes) else '-'}"
        )


class SealedLogWriter:
    """One segment being written: create it, `append` frames, `close` it.

    Not thread-safe: one thread appends (the service's audit thread).
    """

    def __init__(self, path: Path, key: bytes) -> None:
        """Create the segment at `path` (it must not exist), readable by its owner only."""
        _check_key(key)
        self.path = Path(path)
        self._aead = AESGCM(key)
        self._id = secrets.token_bytes(_ID_BYTES)
        self._index = 0
        try:
            self._fd = os.open(
                self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC, 0o600
            )
        except FileExistsError as err:
            raise SealedLogError(
                f"{self.path} already exists; a segment is written once: pick a new name",
                path=str(self.path),
            ) from err
        try:
            # Held until closed or killed. Blocking: a reader may hold a shared lock on the new,
            # still empty file for the moment it reads it.
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            self._write(MAGIC + self._id)
            fsync_dir(self.path.parent)
        except OSError:
            os.close(self._fd)
            self.path.unlink(missing_ok=True)
            raise
        self.size = _HEADER_BYTES

    @property
    def frames(self) -> int:
        """Return how many frames this segment holds."""
        return self._index

    def append(self, plaintext: bytes) -> None:
        """Seal `plaintext` as the next frame and flush it to disk; raises OSError on failure.

        A failed append leaves the segment as a reader sees it (at most a torn tail), and the
        next append goes to the same frame number, so a retry writes the same frame again.
        """
        self._frame(plaintext, b"")

    def close(self) -> None:
        """Seal the segment with its closing frame and close the file (once; later: nothing).

        The file is closed even when the closing frame cannot be written (the OSError is
        raised after): the segment then reads as not sealed, like one of a killed writer.
        """
        if self._fd < 0:
            return
        try:
            self._frame(b"", _SEAL)
        finally:
            os.close(self._fd)
            self._fd = -1

    def _frame(self, plaintext: bytes, end: bytes) -> None:
        nonce = secrets.token_bytes(_NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, plaintext, self._id + _INDEX.pack(self._index) + end)
        frame = _LENGTH.pack(len(nonce) + len(sealed)) + nonce + sealed
        self._write(frame)
        self._index += 1
        self.size += len(frame)

    def _write(self, data: bytes) -> None:
        start = os.lseek(self._fd, 0, os.SEEK_END)
        try:
            written = os.write(self._fd, data)
            if written != len(data):
                raise OSError(f"short write to {self.path}: {written} of {len(data)} bytes")
            os.fdatasync(self._fd)
        except OSError:
            os.ftruncate(self._fd, start)  # no torn frame left behind a failure we survive
            raise


@dataclass(frozen=True)
class SealedLogRead:
    """What one segment holds: its frames, opened; whether a torn last frame was skipped;
    whether it ends with its closing frame (False: still written, its writer killed, or cut);
    and whether a live writer held it when it was read (it may grow, and be sealed later)."""

    frames: list[bytes]
    torn_tail: bool
    sealed: bool = False
    writing: bool = False


def read_sealed_log(path: Path, key: bytes) -> SealedLogRead:
    """Return every frame of the segment at `path`, opened with `key`, in the order written.

    Raises SealedLogError when the file is not a sealed log, or a frame does not open (the
    segment was altered, reordered, or `key` is not the one it was written with).
    """
    _check_key(key)
    path = Path(path)
    writing, data = _read_noting_writer(path)
    read = _read_frames(path, data, key)
    return SealedLogRead(read.frames, read.torn_tail, read.sealed, writing=writing)


def _read_noting_writer(path: Path) -> tuple[bool, bytes]:
    """Return (whether a writer holds `path`, its bytes). Without a writer the bytes are read
    under a shared lock, so they are final: no writer can have taken the file meanwhile."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            writing = False
        except BlockingIOError:
            writing = True
        with os.fdopen(os.dup(fd), "rb") as file:
            return writing, file.read()
    finally:
        os.close(fd)  # drops the shared lock


def _read_frames(path: Path, data: bytes, key: bytes) -> SealedLogRead:
    """Return the frames of a segment's bytes (`read_sealed_log` without the writer check)."""
    if len(data) < _HEADER_BYTES and (MAGIC.startswith(data) or data.startswith(MAGIC)):
        return SealedLogRead([], torn_tail=True)  # killed before its header was whole
    if not data.startswith(MAGIC):
        raise SealedLogError(
            f"{path} is not a sealed log segment (no header); it was not written by this "
            "platform, or its start is damaged: restore it from backup",
            path=str(path),
        )
    segment_id = data[len(MAGIC) : _HEADER_BYTES]
    aead = AESGCM(key)
    frames: list[bytes] = []
    offset = _HEADER_BYTES
    while offset < len(data):
        if offset + _LENGTH.size > len(data):
            return SealedLogRead(frames, torn_tail=True)
        (length,) = _LENGTH.unpack_from(data, offset)
        body = data[offset + _LENGTH.size : offset + _LENGTH.size + length]
        if length > _MAX_FRAME or length <= _NONCE_BYTES:
            raise _unopened(path, len(frames))
        if len(body) < length:
            return SealedLogRead(frames, torn_tail=True)
        aad = segment_id + _INDEX.pack(len(frames))
        nonce, sealed = body[:_NONCE_BYTES], body[_NONCE_BYTES:]
        offset += _LENGTH.size + length
        try:
            frames.append(aead.decrypt(nonce, sealed, aad))
        except InvalidTag:
            if offset != len(data) or not _opens(aead, nonce, sealed, aad + _SEAL):
                raise _unopened(path, len(frames)) from None
            return SealedLogRead(frames, torn_tail=False, sealed=True)
    return SealedLogRead(frames, torn_tail=False)


def _opens(aead: AESGCM, nonce: bytes, sealed: bytes, aad: bytes) -> bool:
    """Return whether `sealed` is the empty closing frame under `aad`."""
    try:
        return aead.decrypt(nonce, sealed, aad) == b""
    except InvalidTag:
        return False


def _unopened(path: Path, index: int) -> SealedLogError:
    return SealedLogError(
        f"frame {index} of {path} does not open: the segment was altered or reordered, or the "
        "key is not the one it was written with. Keep the file as evidence; the frames before "
        "it are intact",
        path=str(path),
    )
