"""The request trail: records read back as written, across segments a writer rotates and
writers that share the folder; the files hold no plaintext."""

from __future__ import annotations

import signal
import stat
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path

import polars as pl
import pytest

from contracts.errors import ConfigError, SealedLogError
from fusion.audit_trail import (
    AUDIT_SCHEMA,
    AuditRecord,
    AuditTrail,
    archive_audit_trail,
    read_audit_trail,
)

KEY = bytes(range(32))
T0 = datetime(2026, 12, 7, 23, 59, 58, 123456, tzinfo=UTC)


def _record(i: int, at: datetime = T0) -> AuditRecord:
    return AuditRecord(
        at=at + timedelta(microseconds=i),
        actor=f"tok{i % 3}",
        role=None if i % 4 == 0 else "campaign_tool",
        action="POST /v1/scores",
        detail=None if i % 2 else f"campaign-{i}",
        rows=None if i % 5 == 0 else i,
        status="200",
    )


def test_records_read_back_as_written_in_utc(tmp_path: Path):
    shanghai = timezone(timedelta(hours=8))
    records = [_record(i) for i in range(7)] + [_record(7, T0.astimezone(shanghai))]
    trail = AuditTrail(tmp_path / "audit", KEY)
    trail.append(records[:3])
    trail.append([])
    trail.append(records[3:])
    trail.close()
    read = read_audit_trail(tmp_path / "audit", KEY)
    assert trail.written == 8 and read.segments == 1 and read.torn == read.unsealed == ()
    assert dict(read.records.schema) == AUDIT_SCHEMA
    expected = [
        (r.at.astimezone(UTC).replace(tzinfo=None), r.actor, r.role, r.action, r.detail, r.rows,
         r.status)
        for r in records
    ]  # fmt: skip
    assert read.records.rows() == sorted(expected, key=lambda row: row[0])
    assert stat.S_IMODE((tmp_path / "audit").stat().st_mode) == 0o700
    for path in (tmp_path / "audit").iterdir():
        assert b"campaign-" not in path.read_bytes() and b"tok1" not in path.read_bytes()


def test_segments_rotate_by_size_and_day_and_two_writers_never_share_one(tmp_path: Path):
    now = [T0]
    trail = AuditTrail(tmp_path, KEY, segment_bytes=600, clock=lambda: now[0])
    for i in range(6):
        trail.append([_record(i)])  # ~200 bytes a frame: a new segment every few frames
    now[0] = T0 + timedelta(seconds=3)  # the next UTC day
    trail.append([_record(6, now[0])])
    other = AuditTrail(tmp_path, KEY, clock=lambda: T0)
    other.append([_record(7)])
    trail.close()
    other.close()
    names = sorted(p.name for p in tmp_path.glob("*.trail"))
    assert len(names) == len(set(names)) >= 4
    assert any(name.startswith("20261208T") for name in names)
    read = read_audit_trail(tmp_path, KEY)
    assert read.records.height == 8 and read.segments == len(names)
    assert read.records["at"].is_sorted()


def test_an_empty_or_missing_trail_reads_as_no_records(tmp_path: Path):
    read = read_audit_trail(tmp_path / "never-written", KEY)
    assert read.records.height == 0 and dict(read.records.schema) == AUDIT_SCHEMA


def test_a_torn_segment_is_named_and_an_altered_one_refuses_the_whole_trail(tmp_path: Path):
    trail = AuditTrail(tmp_path, KEY)
    trail.append([_record(0)])
    trail.append([_record(1)])
    (path,) = tmp_path.glob("*.trail")
    assert read_audit_trail(tmp_path, KEY).writing == (path.name,)  # still written
    trail.close()
    path.write_bytes(path.read_bytes()[:-40])  # the seal and the end of the second frame
    read = read_audit_trail(tmp_path, KEY)
    assert read.records.height == 1 and read.torn == read.unsealed == (path.name,)
    with pytest.raises(SealedLogError, match="does not open"):
        read_audit_trail(tmp_path, bytes(32))
    assert pl.Series(read.records["actor"]).to_list() == ["tok0"]


_KILLED_WRITER = """
import os, signal, sys
from datetime import UTC, datetime
from fusion.audit_trail import AuditRecord, AuditTrail
at = datetime(2026, 12, 6, 13, tzinfo=UTC)
trail = AuditTrail(sys.argv[1], bytes(range(32)), clock=lambda: at)
trail.append([AuditRecord(at, "killed", None, "GET /v1/lists", None, 1, "200")])
os.kill(os.getpid(), signal.SIGKILL)
"""


def _three_days(folder: Path) -> AuditTrail:
    """Sealed segments of 2026-12-06, 12-07 and 12-08, one a killed service left on 12-06, and
    one a live writer still holds, started on 12-07 (returned: the caller closes it)."""
    for day in (6, 7, 8):
        at = datetime(2026, 12, day, 12, tzinfo=UTC)
        trail = AuditTrail(folder, KEY, clock=lambda at=at: at)
        trail.append([_record(day, at)])
        trail.close()
    killed = subprocess.run(
        [sys.executable, "-c", _KILLED_WRITER, str(folder)], check=False, timeout=120
    )
    assert killed.returncode == -signal.SIGKILL
    at = datetime(2026, 12, 7, 18, tzinfo=UTC)
    live = AuditTrail(folder, KEY, clock=lambda: at)
    live.append([_record(9, at)])
    return live


def _name(folder: Path, start: str) -> str:
    (path,) = folder.glob(f"{start}*.trail")
    return path.name


def test_finished_segments_of_past_days_move_to_the_archive_and_read_back_there(tmp_path: Path):
    trail, archive = tmp_path / "audit", tmp_path / "archive"
    live = _three_days(trail)
    killed, writing = _name(trail, "20261206T13"), _name(trail, "20261207T18")
    read = read_audit_trail(trail, KEY)
    assert read.unsealed == (killed,) and read.writing == (writing,)
    done = archive_audit_trail(trail, archive, KEY, before=date(2026, 12, 8))
    assert [n[:11] for n in done.moved] == ["20261206T12", "20261206T13", "20261207T12"]
    assert done.unsealed == (killed,) and done.writing == (writing,)
    assert sorted(p.name[:11] for p in trail.glob("*.trail")) == ["20261207T18", "20261208T12"]
    assert stat.S_IMODE(archive.stat().st_mode) == 0o700
    assert {stat.S_IMODE(p.stat().st_mode) for p in archive.iterdir()} == {0o600}
    archived = read_audit_trail(archive, KEY)
    assert archived.unsealed == (killed,) and archived.writing == ()
    both = pl.concat([archived.records, read_audit_trail(trail, KEY).records])
    assert both.sort("at").equals(read.records)
    again = archive_audit_trail(trail, archive, KEY, before=date(2026, 12, 8))
    assert again.moved == () and again.writing == (writing,)
    live.close()  # now sealed: the next run moves it
    assert archive_audit_trail(trail, archive, KEY, before=date(2026, 12, 8)).moved == (writing,)


def test_an_archive_run_killed_after_its_copy_is_finished_by_the_next(tmp_path: Path):
    trail, archive = tmp_path / "audit", tmp_path / "archive"
    _three_days(trail).close()
    first = min(trail.glob("*.trail"))
    archive.mkdir()
    (archive / first.name).write_bytes(first.read_bytes())  # copied; the original not yet gone
    (archive / f".{first.name}.1a2b.tmp").write_bytes(b"half a copy")  # a copy cut short
    done = archive_audit_trail(trail, archive, KEY, before=date(2026, 12, 7))
    assert done.moved[0] == first.name and len(done.moved) == 2 and not first.exists()
    assert read_audit_trail(archive, KEY).records.height == 2


def test_nothing_moves_over_a_different_file_an_altered_segment_or_into_the_trail(tmp_path: Path):
    trail, archive = tmp_path / "audit", tmp_path / "archive"
    _three_days(trail).close()
    first = min(trail.glob("*.trail"))
    archive.mkdir()
    (archive / first.name).write_bytes(b"another file")
    with pytest.raises(ConfigError, match="differs"):
        archive_audit_trail(trail, archive, KEY, before=date(2026, 12, 7))
    assert first.exists()
    with pytest.raises(ConfigError, match="another folder"):
        archive_audit_trail(trail, trail / ".." / "audit", KEY, before=date(2026, 12, 9))
    (archive / first.name).unlink()
    data = bytearray(first.read_bytes())
    data[40] ^= 1
    first.write_bytes(bytes(data))
    with pytest.raises(SealedLogError, match="does not open"):
        archive_audit_trail(trail, archive, KEY, before=date(2026, 12, 7))
    assert first.exists() and not (archive / first.name).exists()
