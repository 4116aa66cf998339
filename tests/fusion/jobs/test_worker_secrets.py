"""Secrets reach the workers in plugins, never in the task graph, and leave with their block."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from contracts.errors import ConfigError
from fusion.jobs.keying import key_customers
from fusion.jobs.runner import ClusterEngine, InProcessEngine
from fusion.jobs.worker_secrets import SecretPlugin, SecretRef, is_held
from fusion.models.distributed import cluster_workers
from matcher.keyed_hash import domain_key
from matcher.oprf import OprfServerKey
from tests.support.cluster import SpecRecorder, recorded_specs
from tests.support.job_worlds import BUCKETS, EngineWorld


def test_the_salt_never_enters_the_task_graph(
    cluster: ClusterEngine, ew: EngineWorld, tmp_path: Path
):
    client = cluster.client
    client.register_plugin(SpecRecorder(), name="spec-recorder")
    try:
        key_customers(cluster, ew.extract, ew.epoch, tmp_path / "k", buckets=BUCKETS)
        specs = client.run_on_scheduler(recorded_specs)
    finally:
        client.unregister_scheduler_plugin("spec-recorder")
    assert any(b"_hash_chunk" in spec and b"bankfusion-secret-" in spec for spec in specs)
    forms = (
        ew.epoch.salt,
        ew.epoch.salt.hex().encode(),
        domain_key(ew.epoch, "mobile").encode(),
    )
    assert not [spec for spec in specs for form in forms if form in spec]


def test_shared_secrets_reach_restarted_workers_and_leave_with_the_block(
    cluster: ClusterEngine,
):
    client = cluster.client
    key = OprfServerKey.generate()
    with cluster.shared(key) as ref:
        client.wait_for_workers(2, timeout=30)
        first = sorted(cluster_workers(client))[0]
        client.restart_workers([first])
        client.wait_for_workers(2, timeout=30)
        assert set(client.run(is_held, ref.secret_id).values()) == {True}
        assert key.scalar.hex() not in repr(ref) and key.scalar not in pickle.dumps(ref)
    assert set(client.run(is_held, ref.secret_id).values()) == {False}
    with pytest.raises(ConfigError, match="never shared"):
        ref.resolve()


def test_in_process_secrets_resolve_only_inside_the_block(ew: EngineWorld):
    engine = InProcessEngine()
    with engine.shared(ew.epoch) as ref:
        assert ref.resolve() is ew.epoch
    with pytest.raises(ConfigError, match="never shared"):
        ref.resolve()
    with pytest.raises(ConfigError):
        SecretRef("bankfusion-secret-unknown").resolve()


def test_the_secret_plugin_never_prints_its_secret(ew: EngineWorld):
    plugin = SecretPlugin("bankfusion-secret-x", ew.epoch)
    assert ew.epoch.salt.hex() not in repr(plugin) and "hidden" in repr(plugin)
