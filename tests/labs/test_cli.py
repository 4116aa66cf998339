"""The `fusion` command end to end on a small world: demo, sql, ingest again, rotate, publish."""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from distributed import LocalCluster
from typer.testing import CliRunner

from fusion.registry import Registry
from fusion.runfolder import RunFolder
from fusion.store import Store
from labs.cli import app
from labs.world import WorldFiles
from matcher.identity import normalize_phones
from matcher.keyring import Keyring
from tests.support.shared_runs import copy_of, small_demo

pytestmark = pytest.mark.slow  # demo runs, LocalClusters, models trained twice

runner = CliRunner()


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> tuple[Path, str]:
    """A copy of the shared 3k demo run (these tests change it) and the demo's output."""
    shared, output = small_demo(tmp_path_factory, worker_id)
    return copy_of(shared, tmp_path_factory.mktemp("cli") / "run"), output


@pytest.fixture(scope="module")
def scheduler() -> Iterator[str]:
    """`--cluster` for the module's cluster runs: one LocalCluster of two worker processes on
    127.0.0.1, joined by every run as tcp://127.0.0.1:PORT (a cluster start per run cost more
    than the run); `--cluster local:2`, which starts its own, is run once, by the match test."""
    with LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
        scheduler_kwargs={"dashboard": False, "dashboard_address": "127.0.0.1:0"},
        silence_logs=logging.ERROR,
    ) as cluster:
        # No client of the test's own: xgboost.dask would take it, the process's default, for
        # the CLI's, and wait on data that client never holds.
        cluster.wait_for_workers(2, timeout=120)
        yield cluster.scheduler_address


def test_demo_prints_world_and_ingest_summary(demo_run: tuple[Path, str]):
    run, output = demo_run
    assert "bank customers" in output and "3,000" in output and "loaded" in output
    summary = json.loads((run / "demo-summary.json").read_text())
    assert summary["ledger"]["loaded"]["batches"] == 1
    assert summary["batches"][0]["rows"] > 6_000
    assert (run / "bank" / "fusion.duckdb").exists()
    truth = pl.read_parquet(WorldFiles(run / "world").intersection)
    assert summary["match"]["matched"] == truth.height
    assert "customers (" in output and "shared phones" in output


def test_no_raw_phone_in_cli_output(demo_run: tuple[Path, str]):
    run, output = demo_run
    users = pl.read_parquet(WorldFiles(run / "world").vendor_users)
    phones = normalize_phones(users["phone"]).values.drop_nulls().to_list()
    flat = output.replace("\n", "")
    assert not [p for p in phones if p in flat]


def test_sql_reads_the_store_read_only(demo_run: tuple[Path, str]):
    run, _ = demo_run
    result = runner.invoke(app, ["sql", "SELECT status, rows FROM batches", "--run", str(run)])
    assert result.exit_code == 0, result.output
    assert "loaded" in result.output
    refused = runner.invoke(app, ["sql", "DELETE FROM batches", "--run", str(run)])
    assert refused.exit_code == 2 and "query failed" in refused.output
    again = runner.invoke(app, ["sql", "SELECT count(*) FROM batches", "--run", str(run)])
    assert "1" in again.output


def test_same_sealed_file_ingested_again_is_a_duplicate(demo_run: tuple[Path, str]):
    run, _ = demo_run
    archived = next((run / "bank" / "archive").glob("*.sealed"))
    result = runner.invoke(app, ["ingest", str(archived), "--run", str(run)])
    assert result.exit_code == 0, result.output
    assert "duplicate" in result.output


def test_match_command_rekeys_under_a_new_epoch(demo_run: tuple[Path, str]):
    run, _ = demo_run
    customers = str(WorldFiles(run / "world").customers)
    args = ["match", "--extract", customers, "--snapshot", "2026-09-30", "--run", str(run)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "of 3,000 customers" in result.output
    bad = runner.invoke(
        app, ["match", "--extract", customers, "--snapshot", "30/09", "--run", str(run)]
    )
    assert bad.exit_code == 2 and "2026-09-30" in bad.output


def test_demo_writes_features_and_the_command_rebuilds_them(demo_run: tuple[Path, str]):
    run, output = demo_run
    table = pl.read_parquet(run / "features" / "2026-09-30" / "features.parquet")
    assert table.height == 3_000 and "fused columns" in output
    result = runner.invoke(app, ["features", "--snapshot", "2026-09-30", "--run", str(run)])
    assert result.exit_code == 0, result.output
    assert "3,000 customers" in result.output


def test_demo_and_report_command_write_the_match_report(demo_run: tuple[Path, str]):
    run, output = demo_run
    assert "match_report.html" in output.replace("\n", "")
    result = runner.invoke(
        app, ["report", "--snapshot", "2026-09-30", "-k", "25", "--run", str(run)]
    )
    assert result.exit_code == 0, result.output
    pages = list((run / "reports").rglob("match_report.html"))
    assert pages and b"<img" in pages[0].read_bytes()


def test_a_tampered_file_is_refused_with_its_cause_in_the_bank_log(demo_run: tuple[Path, str]):
    run, _ = demo_run
    archived = next((run / "bank" / "archive").glob("*.sealed"))
    data = bytearray(archived.read_bytes())
    data[len(data) // 2] ^= 1
    tampered = run / "tampered.sealed"
    tampered.write_bytes(bytes(data))
    result = runner.invoke(
        app, ["--log-level", "WARNING", "ingest", str(tampered), "--run", str(run)]
    )
    assert result.exit_code == 1, result.output  # done, with a finding: the batch was refused
    assert "refused" in result.output and "cause=" in result.output


def test_rotate_and_publish(demo_run: tuple[Path, str], tmp_path: Path):
    # On a copy: after a salt rotation the demo's snapshot is matched under the old epoch only,
    # so a match or a feature build under the new one is refused (and later tests use the run).
    run = tmp_path / "run"
    shutil.copytree(demo_run[0], run, symlinks=True)
    rotated = runner.invoke(app, ["keys", "rotate", "--what", "salt", "--run", str(run)])
    assert rotated.exit_code == 0 and "new id" in rotated.output
    published = runner.invoke(app, ["publish", "--run", str(run)])
    assert published.exit_code == 0, published.output
    assert (run / "snapshots" / "head_office.duckdb").exists()


def test_platform_errors_exit_2_with_advice(tmp_path: Path):
    result = runner.invoke(app, ["ingest", "--run", str(tmp_path / "nowhere")])
    assert result.exit_code == 2
    assert "error:" in result.output


def test_demo_trains_scores_and_reports(demo_run: tuple[Path, str]):
    run, output = demo_run
    flat = " ".join(output.split())
    assert "acquisition AUC (held out): in-bank" in flat and "fused" in flat
    assert "rescue: top" in flat and "uplift (" in flat and "list mobile-banking" in flat
    summary = json.loads((run / "demo-summary.json").read_text())
    assert set(summary["models"]["models"]) == {
        "acquisition",
        "acquisition-in-bank",
        "rescue",
        "campaign-response",
        "uplift",
    }
    assert (run / "reports" / "models-2026-09-30" / "model_report.html").exists()
    assert (run / "scores" / "acquisition.parquet").exists()
    assert any((run / "lists" / "mobile-banking").glob("*.csv"))


def test_score_rewrites_lists_with_the_current_models(demo_run: tuple[Path, str]):
    run, _ = demo_run
    before = sorted(p.name for p in (run / "lists" / "rescue").iterdir())
    result = runner.invoke(app, ["score", "--run", str(run)])
    assert result.exit_code == 0, result.output
    assert "scored" in result.output and "list rescue" in " ".join(result.output.split())
    assert sorted(p.name for p in (run / "lists" / "rescue").iterdir()) == before


def test_train_without_features_or_campaign_says_what_to_do(tmp_path: Path):
    result = runner.invoke(app, ["train", "--run", str(tmp_path / "empty")])
    assert result.exit_code == 2
    assert "run `fusion features` first" in " ".join(result.output.split())


def test_token_create_prints_the_secret_once_and_list_never_does(demo_run: tuple[Path, str]):
    run, _ = demo_run
    made = runner.invoke(
        app, ["token", "create", "--role", "analyst", "--branches", "B001", "--run", str(run)]
    )
    assert made.exit_code == 0, made.output
    secret = made.stdout.strip().splitlines()[-1]
    assert secret.startswith("bf_")
    listed = runner.invoke(app, ["token", "list", "--run", str(run)])
    assert listed.exit_code == 0 and "analyst" in listed.output and secret not in listed.output
    token_id = secret.split("_")[1]
    revoked = runner.invoke(app, ["token", "revoke", token_id, "--run", str(run)])
    assert "revoked" in revoked.output
    bad = runner.invoke(app, ["token", "create", "--role", "root", "--run", str(run)])
    message = " ".join(bad.output.replace("│", " ").split())
    assert bad.exit_code == 2 and "'root' is not one of 'vendor'" in message


def test_an_all_branch_analyst_needs_head_office_said_outright(demo_run: tuple[Path, str]):
    run, _ = demo_run
    create = ["token", "create", "--role", "analyst", "--run", str(run)]
    silent = runner.invoke(app, create)
    assert silent.exit_code == 2 and not silent.stdout.strip()
    assert "--branches B001,B002" in silent.output and "--head-office" in silent.output
    both = runner.invoke(app, [*create, "--head-office", "--branches", "B001"])
    assert both.exit_code == 2 and "without --branches" in " ".join(both.output.split())
    made = runner.invoke(app, [*create, "--head-office"])
    assert made.exit_code == 0 and "all branches" in made.output, made.output
    assert made.stdout.strip().splitlines()[-1].startswith("bf_")


def test_token_revoke_while_the_store_is_held_points_at_the_service_route(
    demo_run: tuple[Path, str],
):
    run, _ = demo_run
    folder = RunFolder(run)
    keyring = Keyring.open(folder.bank_keys)
    with Store.open(folder.store, key=keyring.store_key()):  # as `fusion serve` holds it
        held = runner.invoke(app, ["token", "revoke", "0123456789abcdef", "--run", str(run)])
    assert held.exit_code == 2
    assert "DELETE /v1/tokens/0123456789abcdef" in " ".join(held.output.split())


def test_oprf_mode_through_the_cli_request_answer_finish(demo_run: tuple[Path, str]):
    run, _ = demo_run
    world = WorldFiles(run / "world")
    batch, request, answer = run / "oprf.sealed", run / "req.oprf", run / "ans.oprf"
    base = ["--run", str(run)]
    pack = ["vendor", "pack", "--users", str(world.vendor_users), "--mode", "oprf"]
    packed = runner.invoke(app, [*pack, "--out", str(batch), *base])
    assert packed.exit_code == 0 and "(oprf)" in packed.output, packed.output
    ingested = runner.invoke(app, ["ingest", str(batch), *base])
    assert ingested.exit_code == 0 and "loaded" in ingested.output, ingested.output

    # The vendor's batch is dated now, so the snapshot it can serve is today's.
    match = ["match", "--mode", "oprf", "--extract", str(world.customers)]
    match += ["--snapshot", datetime.now(UTC).date().isoformat(), *base]
    asked = runner.invoke(app, [*match, "--request-out", str(request)])
    assert asked.exit_code == 0 and "fusion vendor evaluate" in asked.output, asked.output
    undeclared = runner.invoke(
        app, ["vendor", "evaluate", "--request", str(request), "--out", str(answer), *base]
    )
    assert undeclared.exit_code == 2 and "--declared-customers" in undeclared.output
    evaluate = ["vendor", "evaluate", "--request", str(request), "--out", str(answer)]
    evaluated = runner.invoke(app, [*evaluate, "--declared-customers", "9000", *base])
    assert evaluated.exit_code == 0 and "of 10,900 used" in evaluated.output, evaluated.output

    finished = runner.invoke(app, [*match, "--answer", str(answer)])
    assert finished.exit_code == 0, finished.output
    truth = pl.read_parquet(world.intersection).height
    flat = " ".join(finished.output.split())
    assert f"{truth:,} of 3,000 customers" in flat and f"opened {truth:,}" in flat
    again = runner.invoke(app, [*match, "--answer", str(answer)])
    assert again.exit_code == 2 and "already answered and used" in " ".join(again.output.split())
    salted = runner.invoke(app, ["match", "--extract", str(world.customers), "--answer", "x"])
    assert salted.exit_code == 2
    rotated = runner.invoke(app, ["vendor", "rotate", "--what", "oprf", *base])
    assert rotated.exit_code == 0 and "new id o" in rotated.output, rotated.output
    wrong = runner.invoke(app, ["vendor", "rotate", "--what", "hpke", *base])
    message = " ".join(wrong.output.replace("│", " ").split())  # rich boxes typer's error
    assert wrong.exit_code == 2 and "'hpke' is not one of 'signing', 'oprf'" in message


def test_oprf_match_on_a_local_cluster_opens_the_true_intersection(
    demo_run: tuple[Path, str], scheduler: str
):
    run, _ = demo_run
    world = WorldFiles(run / "world")
    batch, base = run / "oprf-cluster.sealed", ["--run", str(run)]
    pack = ["vendor", "pack", "--users", str(world.vendor_users), "--mode", "oprf"]
    assert runner.invoke(app, [*pack, "--out", str(batch), *base]).exit_code == 0
    assert runner.invoke(app, ["ingest", str(batch), *base]).exit_code == 0
    match = ["match", "--mode", "oprf", "--extract", str(world.customers), "--local-vendor"]
    match += ["--snapshot", datetime.now(UTC).date().isoformat(), *base]
    done = runner.invoke(app, [*match, "--cluster", scheduler])
    assert done.exit_code == 0, done.output
    truth = pl.read_parquet(world.intersection).height
    flat = " ".join(done.output.split())
    assert f"{truth:,} of 3,000 customers" in flat and f"opened {truth:,}" in flat
    assert not (run / "jobs").exists() or not any((run / "jobs").iterdir())


def test_demo_runs_in_oprf_mode(tmp_path: Path):
    run = tmp_path / "run"
    result = runner.invoke(
        app,
        [
            "demo",
            "--out",
            str(run),
            "--customers",
            "3000",
            "--seed",
            "5",
            "--mode",
            "oprf",
            "--no-campaigns",
        ],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads((run / "demo-summary.json").read_text())
    truth = pl.read_parquet(WorldFiles(run / "world").intersection).height
    assert summary["match"]["matched"] == summary["oprf"]["opened"] == truth
    assert summary["oprf"]["dropped_unopened"] == summary["oprf"]["vendor_rows"] - truth
    assert "dropped" in result.output and summary["models"]


def test_match_on_a_local_cluster_gives_the_same_match(demo_run: tuple[Path, str]):
    run, _ = demo_run
    world = WorldFiles(run / "world")
    args = ["match", "--extract", str(world.customers), "--snapshot", "2026-09-30"]
    args += ["--run", str(run)]
    here = runner.invoke(app, args)
    there = runner.invoke(app, [*args, "--cluster", "local:2"])
    assert here.exit_code == 0 and there.exit_code == 0, there.output
    found = [" ".join(r.output.split()).split("match 2026-09-30")[-1] for r in (here, there)]
    assert found[0] == found[1] and "of 3,000 customers" in found[1]
    assert not (run / "jobs").exists() or not any((run / "jobs").iterdir())  # no key files left
    refused = runner.invoke(app, [*args, "--cluster", "tcp://10.0.0.1:8786"])
    assert refused.exit_code == 2 and "tls://" in refused.output


def test_train_on_a_local_cluster_registers_dask_trained_models(
    demo_run: tuple[Path, str], scheduler: str
):
    run, _ = demo_run
    # One scenario's two models (every model kind on Dask: tests/fusion/test_distributed_training).
    args = ["train", "--scenario", "mb-activation", "--cluster", scheduler, "--run", str(run)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    for name in ("mb-activation", "mb-activation-in-bank"):
        # A retraining registers challengers: the newest version, CURRENT still the demo's.
        version = Registry(run / "models").versions(name)[-1]
        assert version != Registry(run / "models").current(name)
        meta = json.loads((run / "models" / name / version / "model.json").read_text())
        assert "dask: 2 workers" in json.dumps(meta), name
    assert "mb-activation" in result.output and "challenger" in result.output
    assert "fusion models promote" in result.output


def test_features_on_a_local_cluster_equal_the_in_process_build(
    demo_run: tuple[Path, str], scheduler: str, tmp_path: Path
):
    run, _ = demo_run
    folder = run / "features" / "2026-09-30"
    # Other tests of the module rotate and re-match, so a rebuild may differ from what the
    # models were trained on: the demo's features are put back afterwards.
    shutil.copytree(folder, tmp_path / "kept")
    try:
        args = ["features", "--snapshot", "2026-09-30", "--run", str(run)]
        here = runner.invoke(app, args)
        assert here.exit_code == 0, here.output
        table = pl.read_parquet(folder / "features.parquet")
        there = runner.invoke(app, [*args, "--cluster", scheduler])
        assert there.exit_code == 0 and "buckets" in there.output, there.output
        assert pl.read_parquet(folder / "features.parquet").equals(table)
    finally:
        shutil.rmtree(folder)
        shutil.copytree(tmp_path / "kept", folder)


def test_score_on_a_local_cluster_writes_the_same_scores(
    demo_run: tuple[Path, str], scheduler: str
):
    run, _ = demo_run
    here = runner.invoke(app, ["score", "--run", str(run)])
    assert here.exit_code == 0, here.output
    scores = run / "scores" / "acquisition.parquet"
    local = pl.read_parquet(scores).sort("customer_id")
    there = runner.invoke(app, ["score", "--cluster", scheduler, "--run", str(run)])
    assert there.exit_code == 0, there.output
    remote = pl.read_parquet(scores).sort("customer_id")
    assert remote.drop("score").equals(local.drop("score"))
    assert np.allclose(remote["score"].to_numpy(), local["score"].to_numpy(), atol=1e-6)
    assert "list mobile-banking" in there.output
