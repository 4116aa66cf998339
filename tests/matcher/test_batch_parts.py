"""A batch's parts: packed columns, guided part sizes, order, the lowest failure, reuse."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from contracts.errors import ConfigError
from matcher import batch_parts
from matcher.batch_parts import MIN_CHUNK, PackedRows, iter_parts, map_parts, start_processes

Span = tuple[int, int, bytes]


def _spans(first: int, columns: tuple[Sequence[bytes], ...], args: object) -> list[Span]:
    """A part that returns (its first row, its row count, its rows joined) once."""
    rows = columns[0]
    if isinstance(args, frozenset) and any(row in args for row in rows):
        raise ValueError(f"bad row in the part from {first}")
    return [(first, len(rows), b"".join(rows))]


def _pid(first: int, columns: tuple[Sequence[bytes], ...], args: object) -> list[int]:
    """A part that returns the process it ran in, once."""
    return [os.getpid()]


def _rows(n: int) -> list[bytes]:
    return [str(i).encode() for i in range(n)]


def test_packed_rows_behave_as_the_list_they_pack():
    items = [b"", b"a", b"bc", b"", b"def", b"g"]
    packed = PackedRows.of(items)
    assert list(packed) == items and len(packed) == len(items)
    assert [packed[i] for i in range(-len(items), len(items))] == items + items
    for start, stop in ((0, 6), (1, 4), (3, 3), (4, 99), (5, 2)):
        assert list(packed[start:stop]) == items[start:stop]
        assert list(packed[start:stop][1:]) == items[start:stop][1:]
    assert list(pickle.loads(pickle.dumps(packed[2:5]))) == items[2:5]
    assert list(PackedRows.of([])) == [] and list(PackedRows.of([])[0:3]) == []
    with pytest.raises(IndexError):
        packed[6]
    with pytest.raises(ValueError, match="step 1"):
        packed[::2]


def test_fixed_rows_cut_a_buffer_by_width():
    assert list(PackedRows.fixed(b"abcdef", 2)) == [b"ab", b"cd", b"ef"]
    assert list(PackedRows.fixed(b"", 12)) == []
    with pytest.raises(ConfigError, match="whole rows"):
        PackedRows.fixed(b"abcde", 2)


def test_parts_shrink_cover_the_batch_in_order_and_keep_min_chunk():
    n = 40 * MIN_CHUNK + 7
    parts = map_parts(_spans, (PackedRows.of(_rows(n)),), None, 2, preload=__name__)
    firsts = [first for first, _, _ in parts]
    sizes = [size for _, size, _ in parts]
    assert firsts == list(np.cumsum([0, *sizes[:-1]])) and sum(sizes) == n
    assert sizes == sorted(sizes, reverse=True)  # long parts first, short ones last
    assert sizes[0] == -(-n // (batch_parts.CHUNKS_PER_WORKER * 2))
    assert min(sizes[:-1]) == MIN_CHUNK and sizes[-1] <= MIN_CHUNK
    assert b"".join(joined for _, _, joined in parts) == b"".join(_rows(n))


def test_iter_parts_yields_each_part_in_order_before_the_batch_ends():
    n = 6 * MIN_CHUNK
    parts = iter_parts(_spans, (_rows(n),), None, 2, preload=__name__)
    ((first, size, joined),) = next(parts)  # the first part, while later ones may still run
    assert first == 0 and joined == b"".join(_rows(size))
    rest = [span for (span,) in parts]
    assert [f for f, _, _ in rest] == list(np.cumsum([size] + [s for _, s, _ in rest[:-1]]))
    assert size + sum(s for _, s, _ in rest) == n
    assert list(iter_parts(_spans, (_rows(5),), None, 2, preload=__name__)) == [[(0, 5, b"01234")]]


def test_processes_run_the_same_parts_and_raise_the_lowest_failure(
    monkeypatch: pytest.MonkeyPatch,
):
    rows = PackedRows.of(_rows(3 * MIN_CHUNK))
    on_threads = map_parts(_spans, (rows,), None, 2, preload=__name__)
    monkeypatch.setattr(batch_parts, "PROCESS_ITEMS", 1_000)  # big batches only, in production
    start_processes(len(rows), 2, preload=__name__)  # the server starts while the batch waits
    assert map_parts(_spans, (rows,), None, 2, preload=__name__) == on_threads
    assert len(on_threads) == 3
    bad = frozenset({rows[2 * MIN_CHUNK + 5], rows[MIN_CHUNK + 1]})
    with pytest.raises(ValueError, match=f"part from {MIN_CHUNK}$"):
        map_parts(_spans, (rows,), bad, 2, preload=__name__)


def test_batches_reuse_worker_processes_until_the_pool_idles(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(batch_parts, "PROCESS_ITEMS", 1_000)
    monkeypatch.setattr(batch_parts, "IDLE_SECONDS", 0.1)
    rows = _rows(4 * MIN_CHUNK)
    start_processes(len(rows), 2, preload=__name__)
    used = set(map_parts(_pid, (rows,), None, 2, preload=__name__))
    used |= set(map_parts(_pid, (rows,), None, 2, preload=__name__))
    assert os.getpid() not in used and len(used) <= 2  # two batches, the same two workers
    time.sleep(1.0)  # idle: the pool closed, its workers left
    assert set(map_parts(_pid, (rows,), None, 2, preload=__name__)).isdisjoint(used)


_ORPHAN = """
import os, sys, time
from matcher import batch_parts
from tests.matcher.test_batch_parts import _pid, _rows
if __name__ == "__main__":
    batch_parts.PROCESS_ITEMS = 1_000
    here = "tests.matcher.test_batch_parts"
    pids = set(batch_parts.map_parts(_pid, (_rows(4_096),), None, 2, preload=here))
    print(" ".join(map(str, pids)), flush=True)
    time.sleep(60)
"""


@pytest.mark.slow  # a child process started, killed, and its workers waited for
def test_workers_leave_when_their_process_is_killed(tmp_path: Path):
    script = tmp_path / "orphan.py"
    script.write_text(_ORPHAN)
    env = os.environ | {"PYTHONPATH": os.getcwd()}
    # stderr: the killed child's resource tracker reports the semaphores its pool left behind
    run = [sys.executable, str(script)]
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.DEVNULL}
    with subprocess.Popen(run, env=env, **pipes) as child:
        try:
            assert child.stdout is not None
            workers = [int(pid) for pid in child.stdout.readline().split()]
            assert workers and child.pid not in workers
        finally:
            child.send_signal(signal.SIGKILL)
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(_alive(pid) for pid in workers)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:  # a zombie has ended, only its parent not reaped it
        return stat.read().split(") ")[-1][:1] != "Z"
