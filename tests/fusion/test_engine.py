"""Bucketed jobs: the same rows in this process and on a LocalCluster, through a lost worker.

One small world and one LocalCluster (2 worker processes, TLS) serve the whole module. Each job
is checked against the single-process function it is built from (`customer_keys`, a plain
polars join, `score_base`), on both engines.
"""

from __future__ import annotations

import io
import os
import pickle
import signal
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dask.config
import numpy as np
import polars as pl
import pytest
import xgboost as xgb
from distributed.diagnostics.plugin import SchedulerPlugin, WorkerPlugin
from polars.testing import assert_frame_equal
from rich.console import Console

from contracts.errors import ConfigError, IdentifierError
from fusion import engine as engine_module
from fusion.engine import (
    ClusterEngine,
    Engine,
    InProcessEngine,
    KeyedCustomers,
    SecretRef,
    TlsFiles,
    bucket_of,
    join_keys,
    key_customers,
    parse_cluster,
    partition_by_key,
    score_features,
)
from fusion.features import FeatureSet
from fusion.models.classifier import ScoreModel, decile_edges
from fusion.models.design import DesignSpec, TagProfile, design_matrix, feature_labels
from fusion.models.distributed import cluster_workers
from fusion.registry import Registry
from fusion.scoring import score_base
from labs.world import WorldFiles
from matcher.identity import normalize_phones
from matcher.keyed_hash import SaltEpoch, domain_key
from matcher.oprf import OprfServerKey
from matcher.pack import build_batch
from matcher.psi import customer_keys
from tests.factories import world_features

BUCKETS = 16
CHUNK_ROWS = 700  # 3,000 customers in 5 chunks: shared phones span chunks
TRAINED_AT = datetime(2026, 10, 2, 8, 30, tzinfo=UTC)


@dataclass(frozen=True)
class EngineWorld:
    features: FeatureSet
    world: WorldFiles
    extract: pl.DataFrame
    epoch: SaltEpoch
    vendor: pl.DataFrame  # the vendor's batch rows: key and lists, plus batch_id
    registry: Registry


def _train(features: FeatureSet, registry: Registry) -> None:
    """Register a small acquisition model that reads table columns and a tag profile."""
    columns = tuple(features.feature_columns()[:25])
    profile = TagProfile.fit(features.tags, features.tag_ids, k=4, seed=1)
    spec = DesignSpec(columns, profile)
    x = design_matrix(features, spec)
    y = features.table["opened_mb"].fill_null(0).to_numpy()
    params = {"objective": "binary:logistic", "max_depth": 3, "eta": 0.3, "nthread": 1}
    booster = xgb.train(params, xgb.DMatrix(x, label=y, feature_names=spec.names), 15)
    model = ScoreModel(
        "acquisition", booster, spec, feature_labels(features.manifest, spec), np.zeros(9)
    )
    model.decile_edges = decile_edges(model.predict(x))
    registry.save(model, created_at=TRAINED_AT)


@pytest.fixture(scope="module")
def ew(tmp_path_factory: pytest.TempPathFactory) -> EngineWorld:
    """A 3,000-customer world through the real pipeline, its vendor batch and a model."""
    root = tmp_path_factory.mktemp("engine-world")
    features, world = world_features(root, customers=3_000, seed=5)
    epoch = SaltEpoch.generate("e-engine")
    users = pl.read_parquet(world.vendor_users)
    vendor, _, _ = build_batch(users, epoch)
    registry = Registry(root / "models")
    _train(features, registry)
    return EngineWorld(
        features=features,
        world=world,
        extract=pl.read_parquet(world.customers, columns=["customer_id", "phone"]),
        epoch=epoch,
        vendor=vendor.with_columns(batch_id=pl.lit("b-1")),
        registry=registry,
    )


def _by_id(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.sort("customer_id")


def _reference_keys(ew: EngineWorld) -> pl.DataFrame:
    return _by_id(customer_keys(ew.extract["customer_id"], ew.extract["phone"], ew.epoch).keys)


def test_public_surface():
    assert engine_module.__all__ == [
        "BLIND_BLOCK_ROWS",
        "DEFAULT_BUCKETS",
        "FEATURE_BUCKETS",
        "OPRF_CHUNK_ROWS",
        "ClusterEngine",
        "Engine",
        "FeatureBuckets",
        "InProcessEngine",
        "KeyedCustomers",
        "Partitions",
        "Parts",
        "SecretRef",
        "TlsFiles",
        "block_seed",
        "bucket_of",
        "build_feature_buckets",
        "join_keys",
        "key_customers",
        "oprf_blind",
        "oprf_evaluate",
        "oprf_finalize",
        "oprf_row_keys",
        "parse_cluster",
        "partition_by_key",
        "progress_bar",
        "replay_blinds",
        "score_features",
    ]


# -- buckets and settings -----------------------------------------------------------------------


def test_bucket_is_the_keys_first_bits():
    keys = pl.DataFrame({"key": [bytes([0x07, 0xC8]) + bytes(30), bytes([0xFF]) * 32, None]})
    assert keys.select(bucket_of("key", 256))["bucket"].to_list() == [0x07, 0xFF, None]
    assert keys.select(bucket_of("key", 16))["bucket"].to_list() == [0x0, 0xF, None]
    assert keys.select(bucket_of("key", 65536))["bucket"].to_list() == [0x07C8, 0xFFFF, None]
    assert keys.select(bucket_of("key", 1))["bucket"].to_list() == [0, 0, None]
    for bad in (0, 3, 100, 1 << 17):
        with pytest.raises(ConfigError, match="power of two"):
            bucket_of("key", bad)


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


def test_tls_needs_a_ca_and_client_certificate(tmp_path: Path):
    blank = {
        "distributed.comm.tls.ca-file": None,
        "distributed.comm.tls.client.cert": None,
        "distributed.comm.tls.client.key": None,
    }
    with dask.config.set(blank), pytest.raises(ConfigError, match="ca-file"):
        parse_cluster("tls://10.1.2.3:8786")
    missing = TlsFiles(ca_file=tmp_path / "ca.pem", cert_file=tmp_path / "c", key_file=tmp_path)
    with pytest.raises(ConfigError, match="ca_file") as caught:
        parse_cluster("tls://10.1.2.3:8786", tls=missing)
    assert caught.value.setting == "ca_file"


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


# -- job results: the same on both engines ----------------------------------------------------


def test_customer_keys_equal_the_single_process_keys(
    engine: Engine, ew: EngineWorld, tmp_path: Path
):
    keyed = key_customers(
        engine, ew.extract, ew.epoch, tmp_path / "keys", buckets=BUCKETS, chunk_rows=CHUNK_ROWS
    )
    reference = customer_keys(ew.extract["customer_id"], ew.extract["phone"], ew.epoch)
    assert_frame_equal(_by_id(keyed.read()), _by_id(reference.keys))
    assert (keyed.customers, keyed.invalid, keyed.duplicated, keyed.keyed) == (
        ew.extract.height,
        reference.invalid,
        reference.duplicated,
        reference.keyed,
    )
    assert keyed.reasons == reference.reasons
    assert not (tmp_path / "keys" / "_work").exists()
    # The rule that needed the buckets: some shared phones are held by customers in different
    # chunks, and they are still found.
    phones = normalize_phones(ew.extract["phone"]).values
    spans = (
        pl.DataFrame({"phone": phones, "chunk": np.arange(ew.extract.height) // CHUNK_ROWS})
        .drop_nulls("phone")
        .group_by("phone")
        .agg(pl.len(), pl.col("chunk").n_unique())
        .filter(pl.col("len") > 1)
    )
    assert reference.duplicated > 0 and (spans["chunk"] > 1).any()


def test_keys_from_a_parquet_extract_stream_in_chunks(ew: EngineWorld, tmp_path: Path):
    keyed = key_customers(
        InProcessEngine(), ew.world.customers, ew.epoch, tmp_path / "k", buckets=4, chunk_rows=1000
    )
    assert len(keyed.unkeyed) == 3
    assert_frame_equal(_by_id(keyed.read()), _reference_keys(ew))


def _reference_matches(ew: EngineWorld) -> pl.DataFrame:
    bank = _reference_keys(ew).filter(pl.col("key_status") == "ok").select("customer_id", "key")
    return _by_id(bank.join(ew.vendor.select("key", "batch_id"), on="key"))


def _match(engine: Engine, ew: EngineWorld, out: Path) -> tuple[KeyedCustomers, pl.DataFrame]:
    keyed = key_customers(
        engine, ew.extract, ew.epoch, out / "keys", buckets=BUCKETS, chunk_rows=CHUNK_ROWS
    )
    vendor = partition_by_key(
        ew.vendor, out / "vendor", columns=["batch_id"], buckets=BUCKETS, chunk_rows=2_000
    )
    assert vendor.rows == ew.vendor.height and len(vendor.files) == BUCKETS
    matches = join_keys(engine, keyed, vendor, out / "matches", columns=["batch_id"])
    return keyed, matches.read()


def test_psi_join_equals_the_single_process_join(engine: Engine, ew: EngineWorld, tmp_path: Path):
    _, matches = _match(engine, ew, tmp_path)
    reference = _reference_matches(ew)
    assert_frame_equal(_by_id(matches), reference)
    assert reference.height > 1_000
    # Identical on both engines row for row, not only as sets: bucket order, then input order.
    in_process = _match(InProcessEngine(), ew, tmp_path / "again")[1]
    assert_frame_equal(matches, in_process)


def test_scores_equal_score_base_within_1e6(engine: Engine, ew: EngineWorld, tmp_path: Path):
    parts = score_features(
        engine, ew.features, ew.registry, "acquisition", tmp_path / "scores", chunk_rows=900
    )
    assert len(parts.files) == 4 and parts.rows == ew.features.table.height
    scored = parts.read()
    model = ew.registry.load_score_model("acquisition")
    reference = pl.read_parquet(
        score_base(model, ew.features, tmp_path / "reference.parquet", chunk_rows=5_000).path
    )
    assert_frame_equal(scored.drop("score"), reference.drop("score"))
    assert np.abs(scored["score"].to_numpy() - reference["score"].to_numpy()).max() <= 1e-6
    assert scored["reason_1"].null_count() < scored.height
    assert not (tmp_path / "scores" / "_work").exists()


# -- failure ------------------------------------------------------------------------------------


class KillOnce(WorkerPlugin):
    """Kills its worker's process (SIGKILL, no goodbye) when a chosen task starts, once."""

    def __init__(self, marker: str, key_prefix: str) -> None:
        self.marker = marker
        self.key_prefix = key_prefix

    def transition(self, key: Any, start: str, finish: str, **kwargs: Any) -> None:
        if finish == "executing" and str(key).startswith(self.key_prefix):
            try:
                fd = os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                return
            os.write(fd, str(os.getpid()).encode())
            os.close(fd)
            os.kill(os.getpid(), signal.SIGKILL)


def test_a_worker_killed_mid_job_costs_a_retry_not_the_result(
    cluster: ClusterEngine, ew: EngineWorld, tmp_path: Path
):
    client = cluster.client
    client.wait_for_workers(2, timeout=30)
    before = set(client.run(os.getpid).values())
    marker = tmp_path / "killed.pid"
    # The third keying task needs the salt: the task is rerun on a worker that has it, the
    # restarted one included (the scheduler reinstalls the plugins).
    client.register_plugin(KillOnce(str(marker), "keyed-hash-00002-"), name="kill-once")
    try:
        keyed, matches = _match(cluster, ew, tmp_path)
    finally:
        client.unregister_worker_plugin("kill-once")
    assert int(marker.read_text()) in before
    assert_frame_equal(_by_id(keyed.read()), _reference_keys(ew))
    assert_frame_equal(_by_id(matches), _reference_matches(ew))
    client.wait_for_workers(2, timeout=30)
    after = set(client.run(os.getpid).values())
    assert int(marker.read_text()) not in after and len(after) == 2


def test_a_failing_task_raises_its_own_error_and_leaves_no_work_files(
    engine: Engine, ew: EngineWorld, tmp_path: Path
):
    numeric = ew.extract.with_columns(pl.col("customer_id").alias("phone"))
    with pytest.raises(IdentifierError, match="must be text"):
        key_customers(engine, numeric, ew.epoch, tmp_path / "bad", buckets=BUCKETS)
    assert not (tmp_path / "bad" / "_work").exists()


def test_partitions_refuse_what_is_not_a_key(tmp_path: Path):
    raw = pl.DataFrame({"key": [b"13800138000"]})
    with pytest.raises(IdentifierError, match="not 32 bytes"):
        partition_by_key(raw, tmp_path / "p")
    with pytest.raises(IdentifierError, match="Binary"):
        partition_by_key(pl.DataFrame({"key": ["ab"]}), tmp_path / "p")
    with pytest.raises(ConfigError, match="lacks column"):
        partition_by_key(pl.DataFrame({"k": [bytes(32)]}), tmp_path / "p")


def test_join_needs_the_same_buckets_and_the_columns_asked(ew: EngineWorld, tmp_path: Path):
    keyed = key_customers(InProcessEngine(), ew.extract.head(50), ew.epoch, tmp_path / "k")
    vendor = partition_by_key(ew.vendor.head(50), tmp_path / "v", buckets=16)
    with pytest.raises(ConfigError, match="same bucket count"):
        join_keys(InProcessEngine(), keyed, vendor, tmp_path / "m")
    vendor = partition_by_key(ew.vendor.head(50), tmp_path / "v256", columns=["batch_id"])
    with pytest.raises(ConfigError, match="lacks column"):
        join_keys(InProcessEngine(), keyed, vendor, tmp_path / "m", columns=["app_ids"])


# -- secrets ------------------------------------------------------------------------------------


class SpecRecorder(SchedulerPlugin):
    """Keeps, for every task the scheduler is given, its spec as repr and as pickle."""

    def __init__(self) -> None:
        self.specs: list[bytes] = []

    async def start(self, scheduler: Any) -> None:
        self.scheduler = scheduler

    def transition(self, key: Any, start: str, finish: str, *args: Any, **kwargs: Any) -> None:
        task = self.scheduler.tasks.get(key)
        if finish == "waiting" and task is not None and task.run_spec is not None:
            self.specs.append(repr(task.run_spec).encode() + pickle.dumps(task.run_spec))

    def __getstate__(self) -> dict[str, Any]:
        return {"specs": self.specs}


def _recorded(dask_scheduler: Any) -> list[bytes]:
    return dask_scheduler.plugins["spec-recorder"].specs


def _holds(secret_id: str) -> bool:
    return secret_id in engine_module._SECRETS


def test_the_salt_never_enters_the_task_graph(
    cluster: ClusterEngine, ew: EngineWorld, tmp_path: Path
):
    client = cluster.client
    client.register_plugin(SpecRecorder(), name="spec-recorder")
    try:
        key_customers(cluster, ew.extract, ew.epoch, tmp_path / "k", buckets=BUCKETS)
        specs = client.run_on_scheduler(_recorded)
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
        assert set(client.run(_holds, ref.secret_id).values()) == {True}
        assert key.scalar.hex() not in repr(ref) and key.scalar not in pickle.dumps(ref)
    assert set(client.run(_holds, ref.secret_id).values()) == {False}
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
    plugin = engine_module._SecretPlugin("bankfusion-secret-x", ew.epoch)
    assert ew.epoch.salt.hex() not in repr(plugin) and "hidden" in repr(plugin)


# -- progress -----------------------------------------------------------------------------------


def test_each_stage_draws_its_progress_bar(ew: EngineWorld, tmp_path: Path):
    out = io.StringIO()
    engine = InProcessEngine(console=Console(file=out, width=100, force_terminal=False))
    key_customers(engine, ew.extract, ew.epoch, tmp_path / "k", buckets=4, chunk_rows=1_500)
    text = out.getvalue()
    assert "keyed-hash" in text and "2/2" in text and "duplicates" in text and "4/4" in text
