"""The run folder's job area: 0700, and what killed identifying jobs left is removed."""

from __future__ import annotations

import stat
from pathlib import Path

from fusion.runfolder import RunFolder


def test_jobs_are_private_and_identifying_leftovers_are_removed(tmp_path: Path):
    folder = RunFolder(tmp_path / "run")
    keys, oprf, scores = folder.new_job("keys"), folder.new_job("oprf"), folder.new_job("scores")
    for job in (keys, oprf, scores):
        (job / "part").mkdir(parents=True)
        (job / "part" / "chunk.parquet").write_bytes(b"13800138000")
    assert stat.S_IMODE(folder.jobs.stat().st_mode) == 0o700
    folder.jobs.chmod(0o755)
    assert stat.S_IMODE(folder.job_root().stat().st_mode) == 0o700  # tightened again

    removed = folder.remove_identifying_jobs()
    assert sorted(removed) == sorted([keys, oprf])
    assert not keys.exists() and not oprf.exists() and scores.exists()
