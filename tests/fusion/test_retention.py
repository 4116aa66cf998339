"""The bounded quarantine and archive: size and age bounds, oldest first, 0600 files."""

from __future__ import annotations

import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from contracts.errors import ConfigError
from fusion.retention import Retention, find_copy, keep, prune, stamp, tighten, usage

NOW = datetime(2026, 10, 1, 9, 30, tzinfo=UTC)


def _kept(folder: Path, name: str, size: int, *, age: timedelta) -> Path:
    folder.parent.mkdir(parents=True, exist_ok=True)
    source = folder.parent / f"incoming-{name}"
    source.write_bytes(b"x" * size)
    return keep(source, folder, now=NOW - age)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_kept_files_are_0600_in_a_0700_folder(tmp_path: Path):
    kept = _kept(tmp_path / "quarantine", "a.sealed", 10, age=timedelta(0))
    assert _mode(kept) == 0o600 and _mode(kept.parent) == 0o700
    assert usage(kept.parent).bytes == 10 and usage(kept.parent).files == 1


def test_past_the_size_bound_the_oldest_entries_go_first(tmp_path: Path):
    folder = tmp_path / "quarantine"
    old = _kept(folder, "old.sealed", 400, age=timedelta(hours=3))
    middle = _kept(folder, "middle.sealed", 400, age=timedelta(hours=2))
    new = _kept(folder, "new.sealed", 400, age=timedelta(hours=1))
    assert prune(folder, Retention(max_bytes=1000), now=NOW) == [old]
    assert sorted(folder.iterdir()) == sorted([middle, new])
    assert usage(folder).bytes == 800


def test_entries_past_the_age_bound_go_whatever_their_size(tmp_path: Path):
    folder = tmp_path / "archive"
    stale = _kept(folder, "stale.sealed", 1, age=timedelta(days=31))
    fresh = _kept(folder, "fresh.sealed", 1, age=timedelta(days=29))
    assert prune(folder, Retention(max_age=timedelta(days=30)), now=NOW) == [stale]
    assert list(folder.iterdir()) == [fresh]


def test_a_quarantined_batch_folder_is_one_entry(tmp_path: Path):
    folder = tmp_path / "quarantine"
    batch = folder / "batch-1"
    _kept(batch, "b.sealed", 300, age=timedelta(hours=2))
    (batch / "report.json").write_bytes(b"{}" * 100)
    stamp(batch, now=NOW - timedelta(hours=2))  # as ingest dates a quarantined batch's folder
    newer = _kept(folder, "c.sealed", 300, age=timedelta(hours=1))
    assert usage(folder) == usage(folder).__class__(bytes=800, files=3)
    assert prune(folder, Retention(max_bytes=500), now=NOW) == [batch]
    assert list(folder.iterdir()) == [newer]


def test_a_copy_is_found_by_its_bytes_not_its_name(tmp_path: Path):
    folder = tmp_path / "archive"
    kept = _kept(folder, "one.sealed", 64, age=timedelta(0))
    replay = tmp_path / "replay.sealed"
    replay.write_bytes(b"x" * 64)
    other = tmp_path / "other.sealed"
    other.write_bytes(b"y" * 64)
    assert find_copy(folder, replay) == kept
    assert find_copy(folder, other) is None


def test_tighten_fixes_what_older_versions_kept_0644(tmp_path: Path):
    folder = tmp_path / "quarantine"
    (folder / "batch").mkdir(parents=True)
    loose = folder / "batch" / "report.txt"
    loose.write_text("r")
    loose.chmod(0o644)
    tighten(folder)
    assert _mode(loose) == 0o600 and _mode(folder / "batch") == 0o700


@pytest.mark.parametrize(
    ("bound", "setting"),
    [
        ({"max_bytes": -1}, "max_bytes"),
        ({"max_bytes": True}, "max_bytes"),
        ({"max_bytes": 1.5}, "max_bytes"),
        ({"max_age": timedelta(seconds=-1)}, "max_age"),
        ({"max_age": 30}, "max_age"),
    ],
)
def test_a_negative_or_mistyped_bound_is_refused(bound: dict[str, object], setting: str):
    with pytest.raises(ConfigError, match="retention bound") as refused:
        Retention(**bound)  # type: ignore[arg-type]
    assert refused.value.setting == setting
