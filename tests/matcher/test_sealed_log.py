"""Sealed logs: frames open in order with their key; anything altered, moved or keyed otherwise
is refused with the file named; a torn last frame is reported and skipped; a segment a live
writer holds reads as being written, one a killed writer left as final."""

from __future__ import annotations

import os
import secrets
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from contracts.errors import SealedLogError
from matcher.sealed_log import SealedLogRead, SealedLogWriter, read_sealed_log

KEY = bytes(range(32))


def _segment(path: Path, frames: list[bytes], key: bytes = KEY) -> Path:
    writer = SealedLogWriter(path, key)
    for frame in frames:
        writer.append(frame)
    writer.close()
    return path


def test_frames_read_back_in_order_and_the_file_holds_no_plaintext(tmp_path: Path):
    frames = [b"first record", b"", b"x" * 100_000, "caf\u00e9".encode()]
    path = _segment(tmp_path / "a.trail", frames)
    read = read_sealed_log(path, KEY)
    assert read.frames == frames and not read.torn_tail and read.sealed
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert b"first record" not in path.read_bytes()


def test_another_key_or_a_flipped_bit_is_refused_naming_the_file(tmp_path: Path):
    path = _segment(tmp_path / "a.trail", [b"one", b"two"])
    with pytest.raises(SealedLogError, match=r"frame 0 of .*a\.trail does not open"):
        read_sealed_log(path, secrets.token_bytes(32))
    data = bytearray(path.read_bytes())
    data[-1] ^= 1  # in the closing frame, after frames 0 and 1
    path.write_bytes(bytes(data))
    with pytest.raises(SealedLogError, match="frame 2 of") as caught:
        read_sealed_log(path, KEY)
    assert caught.value.path == str(path)


def test_frames_swapped_or_dropped_from_the_middle_or_moved_between_segments_are_refused(
    tmp_path: Path,
):
    path = _segment(tmp_path / "a.trail", [b"one", b"two", b"three"])
    data = path.read_bytes()
    header, body = data[:24], data[24:]
    sizes = []
    offset = 0
    while offset < len(body):
        size = 4 + int.from_bytes(body[offset : offset + 4], "big")
        sizes.append(body[offset : offset + size])
        offset += size
    one, two, three, seal = sizes
    for altered in (header + two + one + three + seal, header + one + three + seal):
        path.write_bytes(altered)
        with pytest.raises(SealedLogError, match="does not open"):
            read_sealed_log(path, KEY)
    other = _segment(tmp_path / "b.trail", [b"other"])
    other.write_bytes(other.read_bytes()[:24] + one)  # a frame of a.trail in b.trail's place 0
    with pytest.raises(SealedLogError, match=r"frame 0 of .*b\.trail"):
        read_sealed_log(other, KEY)


def _killed_writer(path: Path, frames: list[bytes]) -> None:
    """Write `frames` to a new segment in another process, then kill it (SIGKILL)."""
    code = (
        "import os, signal, sys\n"
        "from matcher.sealed_log import SealedLogWriter\n"
        "writer = SealedLogWriter(sys.argv[1], bytes(range(32)))\n"
        "for frame in sys.argv[2:]:\n"
        "    writer.append(frame.encode())\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    args = [sys.executable, "-c", code, str(path), *(f.decode() for f in frames)]
    assert subprocess.run(args, check=False, timeout=60).returncode == -signal.SIGKILL


def test_a_segment_being_written_reads_as_such_until_its_writer_closes_it(tmp_path: Path):
    writer = SealedLogWriter(tmp_path / "a.trail", KEY)
    writer.append(b"one")
    assert read_sealed_log(writer.path, KEY) == SealedLogRead([b"one"], False, writing=True)
    writer.close()
    assert read_sealed_log(writer.path, KEY) == SealedLogRead([b"one"], False, sealed=True)


def test_a_killed_writers_segment_is_final_and_a_torn_last_frame_is_skipped(tmp_path: Path):
    path = tmp_path / "a.trail"
    _killed_writer(path, [b"one", b"two"])
    full = path.read_bytes()
    assert read_sealed_log(path, KEY) == SealedLogRead([b"one", b"two"], False)  # no writer
    for cut in (1, 5, 20):
        path.write_bytes(full[:-cut])
        read = read_sealed_log(path, KEY)
        assert read.frames == [b"one"] and read.torn_tail and not read.sealed
    for start in (b"", full[:10]):  # killed before the header was whole
        path.write_bytes(start)
        assert read_sealed_log(path, KEY).torn_tail


def test_not_a_segment_an_existing_name_and_a_wrong_key_size_are_caller_errors(tmp_path: Path):
    path = tmp_path / "notes.trail"
    path.write_bytes(b"this is not a sealed log at all, just text")
    with pytest.raises(SealedLogError, match="not a sealed log segment"):
        read_sealed_log(path, KEY)
    with pytest.raises(SealedLogError, match="already exists"):
        SealedLogWriter(path, KEY)
    with pytest.raises(SealedLogError, match="must be 32 bytes"):
        SealedLogWriter(tmp_path / "new.trail", b"short")


def test_a_failed_append_leaves_no_torn_frame_and_the_retry_writes_the_same_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    writer = SealedLogWriter(tmp_path / "a.trail", KEY)
    writer.append(b"one")
    real_fdatasync = os.fdatasync
    calls = {"n": 0}

    def failing_once(fd: int) -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            raise OSError(28, "No space left on device (test)")
        real_fdatasync(fd)

    monkeypatch.setattr(os, "fdatasync", failing_once)
    with pytest.raises(OSError):
        writer.append(b"two")
    assert read_sealed_log(writer.path, KEY).frames == [b"one"]
    writer.append(b"two")
    writer.close()
    assert read_sealed_log(writer.path, KEY).frames == [b"one", b"two"]


def test_a_closed_segment_is_sealed_and_one_cut_by_whole_frames_or_extended_after_is_not(
    tmp_path: Path,
):
    path = _segment(tmp_path / "a.trail", [b"one", b"two"])
    full = path.read_bytes()
    seal_frame = 4 + 12 + 16  # length, nonce, tag of an empty frame
    path.write_bytes(full[:-seal_frame])  # the seal cut off: reads whole, but not sealed
    assert read_sealed_log(path, KEY) == SealedLogRead([b"one", b"two"], False, sealed=False)
    two = full[-seal_frame - (4 + 12 + 3 + 16) : -seal_frame]
    path.write_bytes(full + two)  # a frame after the seal
    with pytest.raises(SealedLogError, match="frame 2 of"):
        read_sealed_log(path, KEY)
    writer = SealedLogWriter(tmp_path / "b.trail", KEY)
    writer.close()
    writer.close()  # once only
    assert read_sealed_log(writer.path, KEY) == SealedLogRead([], False, sealed=True)
