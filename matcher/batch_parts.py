"""A batch of per-item work cut into parts, run in order on threads or on worker processes.

Per-item crypto here (libsodium through ctypes) cannot be batched by the library, and each call
drops the interpreter lock, so threads already spread a batch over the cores; the Python around
each call does not, so from `PROCESS_ITEMS` items on a batch's parts run on processes forked
from a forkserver that preloaded the caller's module (each part holds its own interpreter lock).
Processes are not used in a daemonic process (a Dask worker may not have children), where the
platform has no forkserver (Windows), or in a script a child would run again on importing it
(`main_reimport_is_safe`). Whatever runs them, the parts are joined in order and the first part
(in order) that fails raises, so an error names the lowest bad index.

Parts shrink as the batch goes (guided self-scheduling: each part takes a fixed share of the
rows still left, down to `MIN_CHUNK`), so the first parts are long and cheap to hand out, and the
last ones short: when one worker finishes, the others are at most a short part from done, so no
core waits long at the end of a step (C. D. Polychronopoulos and D. J. Kuck, "Guided
self-scheduling", IEEE Trans. Computers 36(12), 1987).

A process pool pickles each part's columns to its worker and the part's result back; a list of
a million byte strings is a million objects to pickle and unpickle on either side. `PackedRows`
holds such a column as one buffer and its row ends, so a part travels as two copies; a part may
return its rows packed too, and `iter_parts` hands the caller each part's result as it comes, to
unpack while later parts still run.

Batches reuse one pool of worker processes (`_REUSED`), as joblib's loky reuses its executor: a
worker starts by importing the parent's main module (a `fusion` command imports the whole CLI,
a second or more; Python 3.11's forkserver does not preload it, whatever its preload list says)
and the part's module, and a match runs several batches in a row (seal, blind, evaluate,
finalise). The pool closes after `IDLE_SECONDS` unused, and at exit; its workers leave when
the process that started them is gone, even killed (`_follow`).
"""

from __future__ import annotations

import functools
import multiprocessing
import multiprocessing.context
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, TypeVar, overload

import numpy as np

from contracts.errors import ConfigError

__all__ = [
    "CHUNKS_PER_WORKER",
    "IDLE_SECONDS",
    "MIN_CHUNK",
    "PROCESS_ITEMS",
    "PackedRows",
    "Part",
    "iter_parts",
    "main_reimport_is_safe",
    "map_parts",
    "run_chunks",
    "start_processes",
    "worker_count",
]

MIN_CHUNK = 512  # below two of these a batch runs on the calling thread; the smallest part
CHUNKS_PER_WORKER = 4  # a part takes 1 / (this x workers) of the rows still left
PROCESS_ITEMS = 20_000  # from this many items a batch runs on processes (when workers > 1)
IDLE_SECONDS = 60.0  # the reused process pool closes after this long without a batch

T = TypeVar("T")
R = TypeVar("R")

# One part of a batch, as a module-level function a process pool can run:
# part(first index, the part's aligned columns, fixed arguments) -> its result (for `map_parts`,
# one item per row).
Part = Callable[[int, tuple[Sequence[Any], ...], Any], R]


class PackedRows(Sequence[bytes]):
    """Byte strings laid end to end in one buffer, with each one's end offset.

    A sequence of bytes like a list, which a batch cuts into parts (a slice is one copy of its
    bytes and of its ends) and a process pool pickles as two buffers instead of an object per row.
    """

    __slots__ = ("data", "ends")

    def __init__(self, data: bytes, ends: np.ndarray) -> None:
        self.data, self.ends = data, ends

    @classmethod
    def of(cls, items: Sequence[bytes]) -> PackedRows:
        """Return the items packed (each must be bytes)."""
        ends = np.cumsum(np.fromiter(map(len, items), np.int64, len(items)))
        return cls(b"".join(items), ends)

    @classmethod
    def fixed(cls, data: bytes, width: int) -> PackedRows:
        """Return `data` cut into rows of `width` bytes (its length a multiple of `width`)."""
        if width < 1 or len(data) % width:
            raise ConfigError(
                f"{len(data)} bytes do not make whole rows of {width}", setting="width"
            )
        return cls(data, np.arange(width, len(data) + 1, width, dtype=np.int64))

    def __len__(self) -> int:
        return len(self.ends)

    @overload
    def __getitem__(self, index: int) -> bytes: ...
    @overload
    def __getitem__(self, index: slice) -> PackedRows: ...
    def __getitem__(self, index: int | slice) -> bytes | PackedRows:
        if isinstance(index, slice):
            start, stop, step = index.indices(len(self))
            if step != 1:
                raise ValueError("packed rows are cut into runs (step 1)")
            stop = max(start, stop)
            low = self._start(start)
            return PackedRows(self.data[low : self._start(stop)], self.ends[start:stop] - low)
        if not -len(self) <= index < len(self):
            raise IndexError(f"row {index} of {len(self)}")
        index %= len(self)
        return self.data[self._start(index) : int(self.ends[index])]

    def __iter__(self) -> Iterator[bytes]:
        data, low = self.data, 0
        for high in self.ends.tolist():
            yield data[low:high]
            low = high

    def __reduce__(self) -> tuple[type[PackedRows], tuple[bytes, np.ndarray]]:
        return PackedRows, (self.data, self.ends)

    def _start(self, index: int) -> int:
        return int(self.ends[index - 1]) if index else 0


def worker_count(workers: int | None) -> int:
    """Return the number of workers asked for: every core when None."""
    count = (os.cpu_count() or 1) if workers is None else workers
    if not isinstance(count, int) or count < 1:
        raise ConfigError(f"workers must be a positive integer, got {workers!r}", setting="workers")
    return count


def run_chunks(work: Callable[[int, int], list[T]], n: int, workers: int | None) -> list[T]:
    """Return work(0, n), computed as chunks [start, stop) on a thread pool and joined in order."""
    threads = worker_count(workers)
    if threads == 1 or n < 2 * MIN_CHUNK:
        return work(0, n)
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="batch-part") as pool:
        return _joined([pool.submit(work, i, j) for i, j in _cuts(n, threads)])


def map_parts(
    part: Part[list[T]],
    columns: tuple[Sequence[Any], ...],
    args: object,
    workers: int | None,
    *,
    preload: str,
) -> list[T]:
    """Return part(0, columns, args), computed in parts on worker processes or threads.

    Args:
        part: a module-level function (a process pool pickles it by name).
        columns: aligned sequences, cut at the same indices for every part.
        args: fixed arguments every part gets (picklable).
        workers: processes or threads; every core when None.
        preload: the module the forkserver imports once (the one `part` lives in), so a pool
            starts in milliseconds with its libraries loaded.
    """
    return [
        item
        for items in iter_parts(part, columns, args, workers, preload=preload)
        for item in items
    ]


def iter_parts(
    part: Part[R],
    columns: tuple[Sequence[Any], ...],
    args: object,
    workers: int | None,
    *,
    preload: str,
) -> Iterator[R]:
    """Yield each part's result in order, as `map_parts` runs them: the caller uses one part's
    result while later parts still run. The arguments are `map_parts`'."""
    n, count = len(columns[0]), worker_count(workers)
    if count == 1 or n < 2 * MIN_CHUNK:
        return iter([part(0, columns, args)])
    return _run_parts(part, columns, args, count, preload)


def _run_parts(
    part: Part[R], columns: tuple[Sequence[Any], ...], args: object, count: int, preload: str
) -> Iterator[R]:
    """Yield the parts' results in order from `count` processes (or threads)."""
    n = len(columns[0])
    with _executor(count, preload, processes=n >= PROCESS_ITEMS) as running:
        futures = [
            running.submit(part, i, tuple(c[i:j] for c in columns), args)
            for i, j in _cuts(n, count)
        ]
        try:
            for future in futures:
                yield future.result()
        finally:  # a failed part (or a caller that stopped early) leaves the rest unrun
            for future in futures:
                future.cancel()


def _cuts(n: int, workers: int) -> list[tuple[int, int]]:
    """Return the parts [start, stop) of n rows: each 1 / (CHUNKS_PER_WORKER x workers) of the
    rows left, at least MIN_CHUNK (guided self-scheduling: long parts first, short ones last)."""
    cuts, start, share = [], 0, CHUNKS_PER_WORKER * workers
    while start < n:
        stop = min(n, start + max(MIN_CHUNK, -(-(n - start) // share)))
        cuts.append((start, stop))
        start = stop
    return cuts


def start_processes(items: int, workers: int | None, *, preload: str) -> None:
    """Start the worker processes a batch of `items` would run on, and return once each has
    answered (a benchmark starts its clock on ready workers); nothing where it runs on threads."""
    count = worker_count(workers)
    context = _forkserver(preload) if count > 1 and items >= PROCESS_ITEMS else None
    if context is None:
        return
    with _REUSED.borrow(count, context) as pool:
        seen: set[int] = set()
        for _ in range(100):  # a ready worker takes the next task: ask until every one answered
            seen.update(pool.map(_pid_after, [0.02] * count))
            if len(seen) >= count:
                return


def _pid_after(seconds: float) -> int:
    """Return this process's id after `seconds`: keeps a ready worker busy while another starts."""
    time.sleep(seconds)
    return os.getpid()


def _executor(count: int, preload: str, *, processes: bool) -> AbstractContextManager[Executor]:
    """Return (as a context) the reused process pool, or where none may run a thread pool."""
    context = _forkserver(preload) if processes else None
    if context is None:
        return ThreadPoolExecutor(max_workers=count, thread_name_prefix="batch-part")
    return _REUSED.borrow(count, context)


class _ReusedPool:
    """The process pool batches share: workers start (and import) once, not once a batch.

    A caller borrows it for a batch; after `IDLE_SECONDS` with no borrower it shuts down. A
    caller that wants another size while it is lent gets a pool of its own for the batch, and
    a broken pool (a worker killed) is dropped, so the next batch starts a new one.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pool: ProcessPoolExecutor | None = None
        self._workers = 0
        self._borrowers = 0
        self._idle: threading.Timer | None = None

    def borrow(
        self, workers: int, context: multiprocessing.context.BaseContext
    ) -> AbstractContextManager[Executor]:
        with self._lock:
            if self._idle is not None:
                self._idle.cancel()
                self._idle = None
            if self._pool is not None and self._workers != workers:
                if self._borrowers:
                    return _new_pool(workers, context)
                self._pool.shutdown(wait=False)
                self._pool = None
            if self._pool is None:
                self._pool = _new_pool(workers, context)
                self._workers = workers
            self._borrowers += 1
            return self._lent(self._pool)

    @contextmanager
    def _lent(self, pool: ProcessPoolExecutor) -> Iterator[Executor]:
        try:
            yield pool
        except BrokenProcessPool:
            with self._lock:
                if self._pool is pool:
                    self._pool = None
            raise
        finally:
            with self._lock:
                self._borrowers -= 1
                if not self._borrowers and self._pool is pool:
                    self._idle = threading.Timer(IDLE_SECONDS, self._close, (pool,))
                    self._idle.daemon = True
                    self._idle.start()

    def _close(self, pool: ProcessPoolExecutor) -> None:
        with self._lock:
            if self._pool is not pool or self._borrowers:
                return
            self._pool = None
        pool.shutdown(wait=False)


_REUSED = _ReusedPool()


def _new_pool(workers: int, context: multiprocessing.context.BaseContext) -> ProcessPoolExecutor:
    """Return a pool whose workers leave when this process is gone (even killed)."""
    return ProcessPoolExecutor(
        max_workers=workers, mp_context=context, initializer=_follow, initargs=(os.getpid(),)
    )


def _follow(parent: int) -> None:
    """In a worker: exit once `parent` has ended. A forkserver worker is the server's child,
    and an idle one waits for work forever, so nothing else would end it."""

    def watch() -> None:
        while True:
            time.sleep(1.0)
            try:
                os.kill(parent, 0)
            except (ProcessLookupError, PermissionError):  # gone (its pid maybe reused)
                os._exit(1)

    threading.Thread(target=watch, name="batch-part-parent", daemon=True).start()


def _forkserver(preload: str) -> multiprocessing.context.ForkServerContext | None:
    """Return the forkserver context (asking it to preload `preload`), or None where a batch
    may not use processes."""
    if multiprocessing.current_process().daemon or not main_reimport_is_safe():
        return None
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return None
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([preload])
    return context


@functools.cache
def main_reimport_is_safe() -> bool:
    """Return whether a child process may import `__main__` without running the program again.

    Multiprocessing children (forkserver, spawn) import the main module as `__mp_main__`: safe
    for an interactive session, `python -c`, a notebook and `python -m pkg` (no file, or a
    package's `__main__`, which is skipped), and for a script whose program sits under
    `if __name__ == "__main__":` (console scripts such as `fusion` do). Any other script runs
    on threads instead: slower on CPython, never wrong.
    """
    main = sys.modules.get("__main__")
    name = getattr(getattr(main, "__spec__", None), "name", None)
    path = getattr(main, "__file__", None)
    if name is not None:
        return name == "__main__" or name.endswith(".__main__") or _guarded(path)
    return path is None or _guarded(path)


def _guarded(path: str | None) -> bool:
    try:
        source = Path(path).read_text(encoding="utf-8") if path else ""
    except (OSError, UnicodeDecodeError):
        return False
    return re.search(r"^if __name__ == ['\"]__main__['\"]\s*:", source, re.MULTILINE) is not None


def _joined(futures: list[Future[list[T]]]) -> list[T]:
    """Return the futures' items in order; on the first failure cancel the rest and raise it."""
    try:
        return [item for future in futures for item in future.result()]
    except BaseException:
        for future in futures:
            future.cancel()
        raise
