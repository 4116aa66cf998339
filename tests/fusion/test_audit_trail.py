"""The request trail: records read back as written, across segments a writer rotates and
writers that share the folder; the files hold no plaintext."""

from __future__ import annotations

import stat
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import polars as pl
import pytest

from contracts.errors import SealedLogError
from fusion.audit_trail import AUDIT_SCHEMA, AuditRecord, AuditTrail, read_audit_trail

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
    assert read_audit_trail(tmp_path, KEY).unsealed == (path.name,)  # still written
    trail.close()
    path.write_bytes(path.read_bytes()[:-40])  # the seal and the end of the second frame
    read = read_audit_trail(tmp_path, KEY)
    assert read.records.height == 1 and read.torn == read.unsealed == (path.name,)
    with pytest.raises(SealedLogError, match="does not open"):
        read_audit_trail(tmp_path, bytes(32))
    assert pl.Series(read.records["actor"]).to_list() == ["tok0"]
