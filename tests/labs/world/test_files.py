"""A world's files: a folder without all of them is refused with the command that makes one."""

from __future__ import annotations

from pathlib import Path

import pytest

from labs.world import WorldError, load_world


def test_load_world_names_missing_files(tmp_path: Path):
    with pytest.raises(WorldError, match="fusion world --out"):
        load_world(tmp_path)
