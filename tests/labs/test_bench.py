"""The bench package on tiny sizes: figures beside their baselines, the results file, the table.

Speed is never asserted here (`make bench` reports it); these check that each bench runs, yields
the figures it names with finite values, and that the runner writes what `fusion bench` promises.
"""

from __future__ import annotations

import ast
import functools
import json
import math
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console

from contracts.errors import ConfigError
from labs.bench import (
    BENCHMARKS,
    Figure,
    bench_envelope,
    bench_keyed_hash,
    bench_psi,
    bench_query,
    figures_table,
    run_benchmarks,
)
from labs.bench import runner as bench_runner

FIELDS = ["name", "value", "unit", "baseline", "baseline_name", "ratio", "target", "met", "note"]


def _finite(figures: list[Figure]) -> bool:
    return all(
        math.isfinite(f.value) and (f.ratio is None or math.isfinite(f.ratio)) for f in figures
    )


def test_keyed_hash_is_judged_against_hashlib(tmp_path: Path):
    figures = list(bench_keyed_hash(tmp_path, n=2_000))
    assert [f.name for f in figures] == ["keyed_hash.keys_per_s"]
    assert figures[0].baseline and figures[0].met is not None and _finite(figures)


def test_envelope_opens_against_raw_aes_passes_and_cleans_up(tmp_path: Path):
    figures = list(bench_envelope(tmp_path, megabytes=4, rounds=1))
    assert [f.name for f in figures] == [
        "envelope.open_mb_per_s",
        "envelope.open_vs_memory_aes",
        "envelope.open_checked_mb_per_s",
        "envelope.hybrid_seal_mb_per_s",  # the post-quantum suite against X25519
        "envelope.hybrid_open_mb_per_s",
        "envelope.hybrid_sealed_bytes",
    ]
    assert _finite(figures)
    assert not list(tmp_path.glob("*.bin")) and not list(tmp_path.glob("*.sealed"))


def test_psi_join_counts_the_shared_keys(tmp_path: Path):
    figures = {f.name: f for f in bench_psi(tmp_path, bank=2_000, vendor=6_000)}
    assert sorted(figures) == ["psi.join_s", "psi.keyed_hash_keys_per_s"]
    assert figures["psi.join_s"].note.startswith("1,300 matches")
    assert _finite(list(figures.values()))


def test_the_query_check_is_judged_against_duckdbs_own_parse(tmp_path: Path):
    figures = list(bench_query(tmp_path, rounds=3))  # each query passes the check, or it raises
    assert [f.name for f in figures] == ["query.check_ms"]
    assert figures[0].baseline and figures[0].met is not None and _finite(figures)
    assert figures[0].note.startswith("median of 3 calls for each of 4 analyst queries")


def test_the_runner_writes_latest_json_and_a_stamped_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    tiny = functools.partial(bench_keyed_hash, n=2_000)
    monkeypatch.setitem(bench_runner.BENCHMARKS, "keyed_hash", tiny)
    seen: list[Figure] = []
    figures = run_benchmarks(tmp_path, only=("keyed_hash",), on_figure=seen.append)
    assert seen == figures and len(figures) == 1
    latest = json.loads((tmp_path / "latest.json").read_text())
    assert list(latest) == ["at", "machine", "figures"]
    assert list(latest["machine"]) == ["python", "cpus", "node"]
    assert [list(f) for f in latest["figures"]] == [FIELDS]
    stamped = tmp_path / f"bench-{latest['at']}.json"
    assert json.loads(stamped.read_text()) == latest
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["latest.json", stamped.name])


def test_each_bench_gets_its_own_folder_and_a_failure_keeps_the_figures_before_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """Two benches that make the same file in their folder both run (a full run once stopped at
    the second keyring made as work / "bank-keys"); a bench that raises leaves latest.json
    holding the figures measured before it, and which benches did not finish."""

    def keyed(work: Path) -> Iterator[Figure]:
        (work / "bank-keys").mkdir()  # no exist_ok: a shared folder would refuse the second
        yield Figure(f"{work.name}.made", 1.0, "x", 1.0, "one", 1.0, "reported", None)

    def broken(work: Path) -> Iterator[Figure]:
        raise RuntimeError("the bench broke")
        yield  # a generator, as every bench is

    for name, bench in (("keyed_hash", keyed), ("world", keyed), ("contracts", broken)):
        monkeypatch.setitem(bench_runner.BENCHMARKS, name, bench)
    figures = run_benchmarks(tmp_path, only=("keyed_hash", "world"))
    assert [f.name for f in figures] == ["keyed_hash.made", "world.made"]
    assert "unfinished" not in json.loads((tmp_path / "latest.json").read_text())
    with pytest.raises(RuntimeError, match="the bench broke"):
        run_benchmarks(tmp_path, only=("keyed_hash", "contracts", "world"))
    latest = json.loads((tmp_path / "latest.json").read_text())
    assert [f["name"] for f in latest["figures"]] == ["keyed_hash.made"]
    assert latest["unfinished"] == ["contracts", "world"]


def test_the_runner_refuses_an_unknown_bench(tmp_path: Path):
    with pytest.raises(ConfigError, match="unknown benchmark"):
        run_benchmarks(tmp_path, only=("keyed_hash", "nope"))
    assert not (tmp_path / "latest.json").exists()


def test_the_table_shows_each_figure_and_whether_it_met_its_target():
    figure = Figure("x.rate", 2.0, "rows/s", 1.0, "plain", 2.0, ">= 1x", True)
    console = Console(width=200, record=True)
    console.print(
        figures_table([figure, Figure("y.s", 1.0, "s", None, "-", None, "reported", None)])
    )
    text = console.export_text()
    assert "x.rate" in text and "2.00x" in text and "yes" in text and "y.s" in text


def test_every_bench_has_a_name_and_none_runs_the_cli():
    assert list(BENCHMARKS)[:2] == ["keyed_hash", "world"] and len(BENCHMARKS) == 16
    package = Path(bench_runner.__file__).parent
    importers = []
    for module in package.glob("*.py"):
        for node in ast.walk(ast.parse(module.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("labs.cli"):
                importers.append(module.name)
            if isinstance(node, ast.Import) and any(
                a.name.startswith("labs.cli") for a in node.names
            ):
                importers.append(module.name)
    assert importers == []
