"""Engines: what `--cluster` asks for, task keys, retries through a lost worker, progress.

The package's LocalCluster (2 worker processes, TLS) and small world serve the module.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal
from rich.console import Console

from contracts.errors import ConfigError, IdentifierError
from fusion.jobs.keying import key_customers
from fusion.jobs.runner import ClusterEngine, Engine, InProcessEngine, parse_cluster
from tests.support.cluster import one_worker_killed
from tests.support.job_worlds import (
    BUCKETS,
    EngineWorld,
    by_customer,
    match_on,
    reference_keys,
    reference_matches,
)


@pytest.mark.parametrize("spec", [None, "", "local", " local "])
def test_in_process_is_the_default(spec: str | None):
    with parse_cluster(spec) as engine:
        assert isinstance(engine, InProcessEngine)
        assert engine.workers == 1


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("local:0", "worker count"),
        ("local:two", "worker count"),
        ("tcp://10.1.2.3:8786", "unencrypted"),
        ("tcp://scheduler.bank.internal:8786", "unencrypted"),
        ("http://10.1.2.3:8786", "tls://HOST:PORT"),
        ("tls://10.1.2.3", "tls://HOST:PORT"),
        ("10.1.2.3:8786", "tls://HOST:PORT"),
    ],
)
def test_cluster_specs_that_are_refused(spec: str, message: str):
    with pytest.raises(ConfigError, match=message) as caught:
        parse_cluster(spec)
    assert caught.value.setting == "cluster"


def test_no_scheduler_at_the_address_is_a_config_error():
    with pytest.raises(ConfigError, match="no Dask scheduler answered"):
        parse_cluster("tcp://127.0.0.1:9", timeout=1)


def test_connect_joins_a_running_scheduler_over_tls(cluster: ClusterEngine):
    assert cluster.cluster is not None
    address = cluster.cluster.scheduler_address
    assert address.startswith("tls://127.0.0.1:")
    joined = ClusterEngine.connect(address, security=cluster.cluster.security, timeout=10)
    try:
        assert joined.workers == 2
        assert joined.map_buckets(abs, [-1, -2, 3], stage="probe") == [1, 2, 3]
    finally:
        joined.close()


def test_stage_names_become_task_keys_and_are_checked():
    with pytest.raises(ConfigError, match="stage name"):
        InProcessEngine().map_buckets(abs, [1], stage="Keyed Hash")


def test_a_worker_killed_mid_job_costs_a_retry_not_the_result(
    cluster: ClusterEngine, ew: EngineWorld, tmp_path: Path
):
    client = cluster.client
    marker = tmp_path / "killed.pid"
    # The third keying task needs the salt: the task is rerun on a worker that has it, the
    # restarted one included (the scheduler reinstalls the plugins).
    with one_worker_killed(client, marker, "keyed-hash-00002-"):
        keyed, matches = match_on(cluster, ew, tmp_path)
    assert_frame_equal(by_customer(keyed.read()), reference_keys(ew))
    assert_frame_equal(by_customer(matches), reference_matches(ew))
    after = set(client.run(os.getpid).values())
    assert int(marker.read_text()) not in after and len(after) == 2


def test_a_failing_task_raises_its_own_error_and_leaves_no_work_files(
    engine: Engine, ew: EngineWorld, tmp_path: Path
):
    numeric = ew.extract.with_columns(pl.col("customer_id").alias("phone"))
    with pytest.raises(IdentifierError, match="must be text"):
        key_customers(engine, numeric, ew.epoch, tmp_path / "bad", buckets=BUCKETS)
    assert not (tmp_path / "bad" / "_work").exists()


def test_each_stage_draws_its_progress_bar(ew: EngineWorld, tmp_path: Path):
    out = io.StringIO()
    engine = InProcessEngine(console=Console(file=out, width=100, force_terminal=False))
    key_customers(engine, ew.extract, ew.epoch, tmp_path / "k", buckets=4, chunk_rows=1_500)
    text = out.getvalue()
    assert "keyed-hash" in text and "2/2" in text and "duplicates" in text and "4/4" in text
