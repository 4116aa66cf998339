"""A world's parameters are checked before anything is written; WorldError names the bad one."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from contracts.errors import FusionError
from labs.world import WorldConfig, WorldError, generate_world


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"customers": 10}, "customers"),
        ({"coverage": 1.5}, "coverage"),
        ({"vendor_ratio": 0.5}, "vendor_ratio"),
        ({"seed": -1}, "seed"),
        ({"snapshot_date": "2026-09-30"}, "snapshot_date"),
        ({"taxonomy_version": "1999.1"}, "1999.1"),
    ],
)
def test_bad_parameters_raise_world_error(tmp_path: Path, change: dict, named: str):
    with pytest.raises(WorldError, match=named):
        generate_world(replace(WorldConfig(), **change), tmp_path)
    assert not (tmp_path / "bank").exists()


def test_world_error_is_a_platform_error_and_a_value_error():
    assert issubclass(WorldError, FusionError) and issubclass(WorldError, ValueError)
