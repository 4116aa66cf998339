"""Generation of a whole world: deterministic bytes, the promised summary, progress to the end."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import pytest

from labs.world import PERSONAS, WorldConfig, WorldFiles, WorldSummary, generate_world


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow  # generates three worlds
def test_same_seed_gives_the_same_bytes_and_another_seed_does_not(tmp_path: Path):
    config = WorldConfig(customers=2_000, seed=3)
    first = generate_world(config, tmp_path / "a")
    second = generate_world(config, tmp_path / "b")
    other = generate_world(replace(config, seed=4), tmp_path / "c")
    assert set(first.digests) == set(WorldFiles.PARQUET)
    for name in WorldFiles.PARQUET:
        assert (
            _sha256(tmp_path / "a" / name) == _sha256(tmp_path / "b" / name) == first.digests[name]
        )
        assert first.digests[name] == second.digests[name]
        assert other.digests[name] != first.digests[name], name
    manifest = json.loads((tmp_path / "a" / "world.json").read_text())
    assert manifest["config"]["seed"] == 3 and manifest["config"]["snapshot_date"] == "2026-09-30"
    assert manifest["summary"]["digests"] == first.digests


def test_summary_has_the_promised_shape(
    world: tuple[WorldFiles, WorldSummary], world_config: WorldConfig
):
    files, summary = world
    n = world_config.customers
    assert summary.bank_customers == n
    assert summary.vendor_users == 3 * n
    assert abs(summary.true_coverage - 0.65) <= 0.03
    assert 0.05 <= summary.label_rate <= 0.10
    assert 0.35 <= summary.registered_rate <= 0.45
    assert 0.005 * n <= summary.invalid_phones <= 0.02 * n
    assert 0.003 * n <= summary.duplicated_phones <= 0.01 * n
    assert 0.002 * n <= summary.bad_id_checksums <= 0.01 * n
    assert abs(summary.campaign_treated_share - 0.5) <= 0.05
    assert 0.02 <= summary.campaign_response_control <= 0.06
    assert summary.campaign_response_treatment > summary.campaign_response_control
    assert set(summary.persona_mix) == set(PERSONAS)
    assert sum(summary.persona_mix.values()) == pytest.approx(1.0)
    assert files.summary() == json.loads(json.dumps(summary.to_dict()))


def test_progress_reports_every_stage_to_completion(tmp_path: Path):
    seen: dict[str, list[float]] = {}
    generate_world(
        WorldConfig(customers=500), tmp_path, progress=lambda s, f: seen.setdefault(s, []).append(f)
    )
    assert list(seen) == ["bank customers", "vendor users", "files"]
    for fractions in seen.values():
        assert fractions[0] == 0.0 and fractions[-1] == 1.0
        assert fractions == sorted(fractions)
