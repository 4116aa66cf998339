"""A batch of per-item work cut into parts, run in order on threads or on worker processes.

Per-item crypto here (libsodium through ctypes) cannot be batched by the library, and each call
drops the interpreter lock, so threads already spread a batch over the cores; the Python around
each call does not, so from `PROCESS_ITEMS` items on a batch's parts run on processes forked
from a forkserver that preloaded the caller's module (each part holds its own interpreter lock).
Processes are not used in a daemonic process (a Dask worker may not have children), where the
platform has no forkserver (Windows), or in a script a child would run again on importing it
(`main_reimport_is_safe`). Whatever runs them, the parts are joined in order and the first part
(in order) that fails raises, so an error names the lowest bad index.
"""

from __future__ import annotations

import functools
import multiprocessing
import os
import re
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

from contracts.errors import ConfigError

__all__ = [
    "CHUNKS_PER_WORKER",
    "MIN_CHUNK",
    "PROCESS_ITEMS",
    "Part",
    "main_reimport_is_safe",
    "map_parts",
    "run_chunks",
    "worker_count",
]

MIN_CHUNK = 512  # below two of these a batch runs on the calling thread
CHUNKS_PER_WORKER = 4  # a few chunks per worker even out their finishing times
PROCESS_ITEMS = 20_000  # from this many items a batch runs on processes (when workers > 1)

# One part of a batch, as a module-level function a process pool can run:
# part(first index, the part's aligned columns, fixed arguments) -> one item per row.
Part = Callable[[int, tuple[Sequence[bytes], ...], object], list[bytes]]


def worker_count(workers: int | None) -> int:
    """Return the number of workers asked for: every core when None."""
    count = (os.cpu_count() or 1) if workers is None else workers
    if not isinstance(count, int) or count < 1:
        raise ConfigError(f"workers must be a positive integer, got {workers!r}", setting="workers")
    return count


def run_chunks(work: Callable[[int, int], list[bytes]], n: int, workers: int | None) -> list[bytes]:
    """Return work(0, n), computed as chunks [start, stop) on a thread pool and joined in order."""
    threads = worker_count(workers)
    if threads == 1 or n < 2 * MIN_CHUNK:
        return work(0, n)
    step = max(MIN_CHUNK, -(-n // (threads * CHUNKS_PER_WORKER)))
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="batch-part") as pool:
        return _joined([pool.submit(work, i, min(i + step, n)) for i in range(0, n, step)])


def map_parts(
    part: Part,
    columns: tuple[Sequence[bytes], ...],
    args: object,
    workers: int | None,
    *,
    preload: str,
) -> list[bytes]:
    """Return part(0, columns, args), computed in parts on worker processes or threads.

    Args:
        part: a module-level function (a process pool pickles it by name).
        columns: aligned sequences, cut at the same indices for every part.
        args: fixed arguments every part gets (picklable).
        workers: processes or threads; every core when None.
        preload: the module the forkserver imports once (the one `part` lives in), so a pool
            starts in milliseconds with its libraries loaded.
    """
    n, count = len(columns[0]), worker_count(workers)
    if count == 1 or n < 2 * MIN_CHUNK:
        return part(0, columns, args)
    step = max(MIN_CHUNK, -(-n // (count * CHUNKS_PER_WORKER)))
    parts = [(i, tuple(c[i : i + step] for c in columns)) for i in range(0, n, step)]
    pool: Executor | None = _process_pool(count, preload) if n >= PROCESS_ITEMS else None
    with pool or ThreadPoolExecutor(max_workers=count, thread_name_prefix="batch-part") as running:
        return _joined([running.submit(part, i, cols, args) for i, cols in parts])


def _process_pool(workers: int, preload: str) -> ProcessPoolExecutor | None:
    """Return a pool of `workers` forkserver processes, or None where none may start."""
    if multiprocessing.current_process().daemon or not main_reimport_is_safe():
        return None
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return None
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([preload])
    return ProcessPoolExecutor(max_workers=workers, mp_context=context)


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


def _joined(futures: list[Future[list[bytes]]]) -> list[bytes]:
    """Return the futures' items in order; on the first failure cancel the rest and raise it."""
    try:
        return [item for future in futures for item in future.result()]
    except BaseException:
        for future in futures:
            future.cancel()
        raise
