"""`fusion audit`: the service's request trail read through the command, as an operator would,
whole or refused."""

from __future__ import annotations

import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl

from fusion.audit_trail import AuditRecord, AuditTrail
from fusion.runfolder import RunFolder
from matcher.keyring import Keyring
from tests.support.cli import first_line, fusion

T0 = datetime(2026, 12, 7, 9, 30, tzinfo=UTC)


def _run_with_trail(tmp_path: Path, records: int) -> RunFolder:
    folder = RunFolder(tmp_path / "run")
    keyring = Keyring.init(folder.bank_keys, role="bank", now=T0)
    trail = AuditTrail(folder.audit_trail, keyring.audit_trail_key(), clock=lambda: T0)
    for i in range(records):
        status = "200" if i % 3 else "403"
        trail.append(
            [AuditRecord(T0 + timedelta(seconds=i), f"tok{i}", "analyst", "POST /v1/query",
                         None, i, status)]
        )  # fmt: skip
    trail.close()
    return folder


def test_the_newest_records_print_and_the_whole_trail_exports(tmp_path: Path):
    folder = _run_with_trail(tmp_path, 5)
    out = tmp_path / "trail.parquet"
    result = fusion(folder.root, "audit", "--last", "2", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert first_line(result.output).startswith("5 audit records in 1 segment(s)")
    assert "tok4" in result.output and "tok3" in result.output and "tok2" not in result.output
    exported = pl.read_parquet(out)
    assert exported["actor"].to_list() == [f"tok{i}" for i in range(5)]
    assert stat.S_IMODE(out.stat().st_mode) == 0o600


def test_an_altered_segment_is_refused_with_exit_2_and_the_file_named(tmp_path: Path):
    folder = _run_with_trail(tmp_path, 3)
    (segment,) = folder.audit_trail.glob("*.trail")
    data = bytearray(segment.read_bytes())
    data[40] ^= 1
    segment.write_bytes(bytes(data))
    result = fusion(folder.root, "audit")
    assert result.exit_code == 2
    assert "does not open" in result.output and segment.name in " ".join(result.output.split())


def test_past_days_move_to_an_archive_that_reads_as_the_trail_did(tmp_path: Path):
    folder = _run_with_trail(tmp_path, 4)  # one sealed segment started on 2026-12-07
    archive = tmp_path / "archive"
    kept = fusion(folder.root, "audit", "--archive-to", str(archive), "--before", "2026-12-07")
    assert kept.exit_code == 0, kept.output
    assert first_line(kept.output).startswith("moved 0 segment(s)")
    moved = fusion(folder.root, "audit", "--archive-to", str(archive), "--before", "2026-12-08")
    assert moved.exit_code == 0, moved.output
    assert first_line(moved.output).startswith("moved 1 segment(s) of days before 2026-12-08")
    assert not list(folder.audit_trail.glob("*.trail"))
    read = fusion(folder.root, "audit", "--trail", str(archive), "--last", "4")
    assert read.exit_code == 0, read.output
    assert first_line(read.output).startswith("4 audit records in 1 segment(s)")
    assert all(f"tok{i}" in read.output for i in range(4))
    bad = fusion(folder.root, "audit", "--archive-to", str(archive), "--before", "07/12/2026")
    assert bad.exit_code == 2 and "--before" in bad.output


def test_options_of_the_other_mode_are_refused_and_nothing_moves(tmp_path: Path):
    folder = _run_with_trail(tmp_path, 2)
    archive = tmp_path / "archive"
    before = sorted(p.name for p in folder.audit_trail.iterdir())
    for args, named in (
        (("--before", "2026-12-08"), "--before only goes with --archive-to"),
        (("--archive-to", str(archive), "--last", "5"), "--last goes only with reading"),
        (("--archive-to", str(archive), "--trail", str(archive), "--out", "x.parquet"),
         "--trail and --out go only with reading"),
    ):  # fmt: skip
        result = fusion(folder.root, "audit", *args)
        assert result.exit_code == 2, result.output
        assert named in " ".join(result.output.split())
    assert sorted(p.name for p in folder.audit_trail.iterdir()) == before
    assert not archive.exists()
