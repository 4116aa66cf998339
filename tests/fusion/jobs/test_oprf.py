"""The bank's OPRF jobs: the same elements and labels in this process and on a LocalCluster.

5,000 phone numbers in chunks of 1,024 rows (5 tasks a stage) and the package's LocalCluster (2
worker processes, TLS). Every job is checked against the single-process functions of
`matcher.oprf` / `matcher.oprf_match` it is built from, and the labels against what the vendor
computes directly with its key. The vendor's answer is `blind_evaluate` in this process.
"""

from __future__ import annotations

import io
from pathlib import Path

import polars as pl
import pytest
from rich.console import Console

from contracts.errors import ConfigError, IdentifierError, OprfError
from fusion.jobs.oprf import oprf_blind, oprf_finalize, oprf_row_keys
from fusion.jobs.partitions import Parts
from fusion.jobs.runner import ClusterEngine, Engine, InProcessEngine
from matcher.oprf_match import (
    BLIND_BLOCK_ROWS,
    block_seed,
    replay_blinds,
    unblind_labels,
)
from tests.support.cluster import SpecRecorder, one_worker_killed, recorded_specs
from tests.support.oprf_inputs import INPUTS, OprfWorld, oprf_world

CHUNK_ROWS = BLIND_BLOCK_ROWS  # 5 chunks, the last one partial
_EVALUATED = {"evaluated": pl.Binary}


@pytest.fixture(scope="module")
def ow() -> OprfWorld:
    return oprf_world()


def _frame(ow: OprfWorld) -> pl.DataFrame:
    return pl.DataFrame({"input": ow.inputs}, schema={"input": pl.Binary})


def _column(parts: Parts, name: str) -> list[bytes]:
    return parts.read()[name].to_list()


def _answer_parts(evaluated: list[bytes], folder: Path, *, rows: int) -> Parts:
    """Return the vendor's answer written as Parquet files of `rows` elements each."""
    folder.mkdir(parents=True)
    files = []
    for index, start in enumerate(range(0, len(evaluated), rows)):
        files.append(str(folder / f"part-{index:05d}.parquet"))
        part = pl.DataFrame({"evaluated": evaluated[start : start + rows]}, schema=_EVALUATED)
        part.write_parquet(files[-1])
    return Parts(tuple(files), len(evaluated), pl.Schema(_EVALUATED))


# -- the three steps: the same on both engines ---------------------------------------------------


def test_each_step_equals_the_single_process_step(engine: Engine, ow: OprfWorld, tmp_path: Path):
    blinded = oprf_blind(engine, _frame(ow), ow.seed, tmp_path / "blinded", chunk_rows=CHUNK_ROWS)
    assert len(blinded.files) == 5 and blinded.rows == INPUTS
    assert _column(blinded, "blinded") == ow.blinded

    # The answer in files of another size than the chunks: finalising follows row positions.
    evaluated = _answer_parts(ow.evaluated, tmp_path / "evaluated", rows=1_500)
    assert len(evaluated.files) == 4 and evaluated.rows == INPUTS

    labels = oprf_finalize(
        engine, _frame(ow), evaluated, ow.seed, tmp_path / "labels", chunk_rows=CHUNK_ROWS
    )
    assert labels.rows == INPUTS and labels.read().columns == ["label"]
    assert _column(labels, "label") == ow.labels
    state = replay_blinds(ow.inputs, ow.seed)
    assert _column(labels, "label") == unblind_labels(state, ow.evaluated)[0]
    for step in ("blinded", "labels"):
        assert not (tmp_path / step / "_work").exists()
        assert sorted(p.name for p in (tmp_path / step).iterdir()) == [
            f"part-{i:05d}.parquet" for i in range(len(list((tmp_path / step).iterdir())))
        ]


def test_chunks_may_differ_between_steps_and_inputs_may_be_text_files(
    ow: OprfWorld, tmp_path: Path
):
    engine = InProcessEngine()
    source = tmp_path / "phones.parquet"
    pl.DataFrame({"phone": [x.decode() for x in ow.inputs]}).write_parquet(
        source, row_group_size=700
    )
    blinded = oprf_blind(engine, source, ow.seed, tmp_path / "b", column="phone", chunk_rows=2_048)
    assert len(blinded.files) == 3 and _column(blinded, "blinded") == ow.blinded
    answer = tmp_path / "answer.parquet"
    pl.DataFrame({"evaluated": ow.evaluated}).write_parquet(answer, row_group_size=333)
    labels = oprf_finalize(
        engine, source, answer, ow.seed, tmp_path / "l", column="phone", chunk_rows=3_072
    )
    assert len(labels.files) == 2 and _column(labels, "label") == ow.labels


def test_data_keys_of_matched_rows_are_rederived_in_process(ow: OprfWorld, tmp_path: Path):
    rows = [0, 1, 1_023, 1_024, 2_500, 4_096, INPUTS - 1]
    labels, data_keys = oprf_row_keys(
        _frame(ow), pl.DataFrame({"evaluated": ow.evaluated}), ow.seed, rows, chunk_rows=2_048
    )
    assert labels == [ow.labels[i] for i in rows]
    assert data_keys == [ow.data_keys[i] for i in rows]
    assert oprf_row_keys(_frame(ow), pl.DataFrame({"evaluated": ow.evaluated}), ow.seed, []) == (
        [],
        [],
    )
    for bad, message in (([3, 2], "ascending"), ([-1], "ascending"), ([INPUTS], "past")):
        with pytest.raises(ConfigError, match=message):
            oprf_row_keys(_frame(ow), pl.DataFrame({"evaluated": ow.evaluated}), ow.seed, bad)


def test_empty_inputs_give_one_empty_part(ow: OprfWorld, tmp_path: Path):
    empty = pl.DataFrame(schema={"input": pl.Binary})
    engine = InProcessEngine()
    blinded = oprf_blind(engine, empty, ow.seed, tmp_path / "b")
    evaluated = pl.DataFrame(schema=_EVALUATED)
    labels = oprf_finalize(engine, empty, evaluated, ow.seed, tmp_path / "l")
    assert (blinded.rows, evaluated.height, labels.rows) == (0, 0, 0)
    assert blinded.read()["blinded"].to_list() == []
    assert labels.read()["label"].to_list() == []


# -- refusals -----------------------------------------------------------------------------------


def test_an_invalid_element_names_its_row_on_both_engines(
    engine: Engine, ow: OprfWorld, tmp_path: Path
):
    answer = list(ow.evaluated)
    answer[3_000] = bytes(32)  # the identity
    with pytest.raises(OprfError, match="row 3000") as caught:
        oprf_finalize(
            engine,
            _frame(ow),
            pl.DataFrame({"evaluated": answer}),
            ow.seed,
            tmp_path / "l",
            chunk_rows=CHUNK_ROWS,
        )
    assert (caught.value.item, caught.value.index) == ("evaluated element", 3_000)
    assert not (tmp_path / "l" / "_work").exists()


def test_an_answer_of_another_length_is_refused(ow: OprfWorld, tmp_path: Path):
    for answer in (ow.evaluated[:-1], [*ow.evaluated, ow.evaluated[0]]):
        with pytest.raises(OprfError, match="this very request") as caught:
            oprf_finalize(
                InProcessEngine(),
                _frame(ow),
                pl.DataFrame({"evaluated": answer}),
                ow.seed,
                tmp_path / "l",
                chunk_rows=CHUNK_ROWS,
            )
        assert caught.value.item == "batch"


def test_settings_and_inputs_are_checked(ow: OprfWorld, tmp_path: Path):
    engine = InProcessEngine()
    with pytest.raises(ConfigError, match="multiple of 1024") as caught:
        oprf_blind(engine, _frame(ow), ow.seed, tmp_path / "b", chunk_rows=1_000)
    assert caught.value.setting == "chunk_rows"
    with pytest.raises(OprfError, match="32 random bytes"):
        oprf_blind(engine, _frame(ow), ow.seed[:16], tmp_path / "b")
    with pytest.raises(IdentifierError, match="null") as null:
        oprf_blind(engine, pl.DataFrame({"input": [b"13800138000", None]}), ow.seed, tmp_path)
    assert null.value.column == "input"
    with pytest.raises(IdentifierError, match="Binary or String"):
        oprf_blind(engine, pl.DataFrame({"input": [13800138000]}), ow.seed, tmp_path / "b")
    with pytest.raises(ConfigError, match="lacks column"):
        oprf_blind(engine, _frame(ow), ow.seed, tmp_path / "b", column="phone")


# -- secrets and failure on the cluster ----------------------------------------------------------


def test_the_seed_and_the_blinds_never_enter_the_task_graph(
    cluster: ClusterEngine, ow: OprfWorld, tmp_path: Path
):
    client = cluster.client
    client.register_plugin(SpecRecorder(), name="spec-recorder")
    try:
        blinded = oprf_blind(cluster, _frame(ow), ow.seed, tmp_path / "b", chunk_rows=CHUNK_ROWS)
        assert _column(blinded, "blinded") == ow.blinded
        evaluated = pl.DataFrame({"evaluated": ow.evaluated}, schema=_EVALUATED)
        oprf_finalize(
            cluster, _frame(ow), evaluated, ow.seed, tmp_path / "l", chunk_rows=CHUNK_ROWS
        )
        specs = client.run_on_scheduler(recorded_specs)
    finally:
        client.unregister_scheduler_plugin("spec-recorder")
    for task in (b"_blind_chunk", b"_finalize_chunk"):
        assert sum(task in spec and b"bankfusion-secret-" in spec for spec in specs) >= 5
    blinds = replay_blinds(ow.inputs, ow.seed).blinds
    secret = [ow.seed, *(block_seed(ow.seed, b) for b in range(5)), *blinds[::97]]
    forms = [form for value in secret for form in (value, value.hex().encode())]
    assert not [spec for spec in specs for form in forms if form in spec]


def test_a_worker_killed_while_finalising_costs_a_retry_not_the_labels(
    cluster: ClusterEngine, ow: OprfWorld, tmp_path: Path
):
    # The third task needs the seed: it is rerun on a worker that has it, the restarted one
    # included (the scheduler reinstalls the plugins).
    with one_worker_killed(cluster.client, tmp_path / "killed.pid", "oprf-finalize-00002-"):
        labels = oprf_finalize(
            cluster,
            _frame(ow),
            pl.DataFrame({"evaluated": ow.evaluated}),
            ow.seed,
            tmp_path / "l",
            chunk_rows=CHUNK_ROWS,
        )
    assert _column(labels, "label") == ow.labels


def test_each_oprf_stage_draws_its_progress_bar(ow: OprfWorld, tmp_path: Path):
    out = io.StringIO()
    engine = InProcessEngine(console=Console(file=out, width=100, force_terminal=False))
    inputs = _frame(ow).head(2_000)
    oprf_blind(engine, inputs, ow.seed, tmp_path / "b", chunk_rows=CHUNK_ROWS)
    evaluated = pl.DataFrame({"evaluated": ow.evaluated[:2_000]}, schema=_EVALUATED)
    oprf_finalize(engine, inputs, evaluated, ow.seed, tmp_path / "l", chunk_rows=CHUNK_ROWS)
    text = out.getvalue()
    assert all(f"{stage}" in text for stage in ("oprf-blind", "oprf-finalize"))
    assert "2/2" in text
