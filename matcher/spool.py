"""Streaming a file through fixed buffers: exact reads, whole writes, hashing on a worker thread.

The sealed-batch envelope (`matcher.envelope`) reads and writes payloads of any size through a
few buffers of one chunk each; `Spool` writes each buffer as it is filled and, when asked, hashes
it on a worker thread (hashlib releases the GIL), so the hash overlaps the next read and the
AES-GCM of the next chunk.
"""

from __future__ import annotations

import hashlib
import io
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

__all__ = ["Spool", "hash_file", "read_into", "write_all"]


def read_into(source: io.FileIO, view: memoryview) -> int:
    """Fill `view` from `source`; return how many bytes arrived (fewer only at end of file)."""
    filled = 0
    while filled < len(view):
        got = source.readinto(view[filled:])
        if not got:
            break
        filled += got
    return filled


def write_all(sink: io.FileIO, view: memoryview) -> None:
    """Write all of `view` to `sink`, however many writes it takes."""
    while view:
        view = view[sink.write(view) :]


class Spool:
    """Writes buffers to a file at once and, optionally, hashes them on a worker thread.

    The caller fills a buffer and hands it over: the write happens on the caller's thread (the
    write is a copy into the page cache, cheapest on the core whose cache holds the buffer; a
    writer thread would only add a hand-over), and the
    SHA-256 runs on the worker (hashlib releases the GIL), overlapping the caller's next read,
    AES-GCM and write. While hashing, two buffers alternate, and one is handed out again only
    when its hash is done.
    """

    def __init__(self, sink: io.FileIO, size: int, *, digest: bool) -> None:
        self._sink = sink
        self._digest = hashlib.sha256() if digest else None
        self._buffers = tuple(memoryview(bytearray(size)) for _ in range(2 if digest else 1))
        self._jobs: list[Future[None] | None] = [None] * len(self._buffers)
        self._turn = 0
        self._hasher = (
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="envelope-hash")
            if digest
            else None
        )

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._hasher is not None:
            self._hasher.shutdown(wait=True, cancel_futures=True)

    def buffer(self) -> memoryview:
        """Return the next free buffer, once the hash that last read it has finished."""
        job = self._jobs[self._turn]
        if job is not None:
            job.result()
        return self._buffers[self._turn]

    def submit(self, filled: memoryview) -> None:
        """Write `filled` (a slice of the last buffer handed out); hash it in the background."""
        self._jobs[self._turn] = self.append(filled)
        self._turn = (self._turn + 1) % len(self._buffers)

    def append(self, data: bytes | memoryview) -> Future[None] | None:
        """Write `data`; return the job hashing it after every earlier one, if hashing."""
        view = memoryview(data)
        write_all(self._sink, view)
        if self._hasher is None or self._digest is None:
            return None
        return self._hasher.submit(self._digest.update, view)

    def finish(self) -> bytes:
        """Return the SHA-256 of everything written (b"" if not hashing), once it is hashed."""
        if self._hasher is None or self._digest is None:
            return b""
        self._hasher.submit(lambda: None).result()  # one worker: runs after every queued job
        return self._digest.digest()


def hash_file(path: Path, buffer: memoryview) -> tuple[int, str]:
    """Return the size and SHA-256 (hex) of the file at `path`, read through `buffer`."""
    digest, size = hashlib.sha256(), 0
    with path.open("rb", buffering=0) as source:
        while got := read_into(source, buffer):
            digest.update(buffer[:got])
            size += got
    return size, digest.hexdigest()
