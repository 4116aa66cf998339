"""The model report on a real training run of a small world: every section and acceptance
figure, plots that exist, JSON that parses, no customer identifier, suppressed small cells."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from contracts.errors import ConfigError
from fusion.features import FeatureSet
from fusion.models import metrics
from fusion.models.acquisition import LABEL, population
from fusion.models.proportions import DiffResult
from fusion.reports.models import REPORT_FILE, SUMMARY_FILE, write_model_report
from fusion.scoring import score_rows
from fusion.training import TrainingRun
from labs.world import WorldFiles
from tests.support.models import ModelWorld

# Reads the shared trained model world: out of the fast inner loop.
pytestmark = pytest.mark.slow

SECTIONS = (
    "Acceptance",
    "How to read this report",
    "Acquisition: who opens mobile banking",
    "Gains and lift by decile",
    "Calibration",
    "Stable pruning",
    "What drives the scores",
    "Rescue: customers the in-bank model rejected",
    "Uplift: who responds because of the offer",
    "Value x demand: where to start the call lists",
    "Privacy.",
)


@dataclass(frozen=True)
class Trained:
    run: TrainingRun
    features: FeatureSet
    campaign: pl.DataFrame
    scores: pl.DataFrame
    world: WorldFiles


@pytest.fixture(scope="module")
def trained(model_world: ModelWorld) -> Trained:
    """The shared model world (12k customers, every model trained, fast settings) -> scores."""
    run, features = model_world.run, model_world.features
    rows = np.flatnonzero(population(features))
    scores = score_rows(run.acquisition["fused"].model, features, rows, reason_deciles=0)
    return Trained(run, features, model_world.campaign, scores, model_world.world)


@pytest.fixture(scope="module")
def page(trained: Trained, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("report")
    return write_model_report(trained.run, trained.features, trained.campaign, trained.scores, out)


def _summary(page: Path) -> dict:
    return json.loads((page.parent / SUMMARY_FILE).read_text(encoding="utf-8"))


def test_page_has_every_section_and_the_acceptance_figures(trained: Trained, page: Path):
    run, text = trained.run, page.read_text(encoding="utf-8")
    assert page.name == REPORT_FILE
    assert [s for s in SECTIONS if s not in text] == []
    fused, in_bank = run.acquisition["fused"].evaluation, run.acquisition["in_bank"].evaluation
    rescue, uplift = run.rescue.test, run.uplift.targeting["uplift"]
    correlation = run.uplift.evaluations[run.uplift.best].correlation
    assert correlation is not None
    gain = run.auc_gain
    assert gain is not None
    figures = [
        f"{fused.auc:.3f}", f"{in_bank.auc:.3f}", f"{fused.auc - in_bank.auc:+.3f}",
        f"95% DeLong CI {gain.ci_low:+.3f} – {gain.ci_high:+.3f}",
        f"{fused.ks:.3f}", f"{fused.pr_auc:.3f}",
        f"{rescue.ratio:.2f}×", f"{rescue.ratio_ci_low:.2f}× – {rescue.ratio_ci_high:.2f}×",
        f"{100 * rescue.ci_low:+.1f} pp – {100 * rescue.ci_high:+.1f} pp",
        f"{uplift.ratio:.2f}×", f"{correlation:.2f}",
        f"{run.rescue.pool:,}", f"{run.rescue.cutoff:.4f}",
    ]  # fmt: skip
    assert [f for f in figures if f not in text] == []
    checks = _summary(page)["acceptance"]
    expected = [
        fused.auc - in_bank.auc >= 0.04,
        0.78 <= in_bank.auc <= 0.86,
        rescue.ratio >= 3.0,
        uplift.ratio >= 1.2,
        None,
        run.uplift.supported,
    ]
    assert [c["passed"] for c in checks] == expected
    marks = re.findall(r'<td class="(pass|fail|info)">', text)
    assert marks == [{True: "pass", False: "fail", None: "info"}[e] for e in expected]


def test_every_image_is_a_png_beside_the_page_and_nothing_is_fetched(page: Path):
    text = page.read_text(encoding="utf-8")
    sources = re.findall(r'<img src="([^"]+)"', text)
    assert len(sources) == 13
    for source in sources:
        assert "/" not in source and (page.parent / source).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "<script" not in text and "http" not in text and "<link" not in text


def test_summary_json_holds_the_run_summary_and_the_tables(trained: Trained, page: Path):
    summary = _summary(page)
    run = trained.run.summary()
    assert summary["acquisition"] == run["acquisition"]
    # DeLong's paired CI of the gain, on the held-out rows both models were judged on
    acquisition, models = run["acquisition"], trained.run.acquisition
    rows = models["fused"].test_rows
    label = trained.features.table[LABEL].fill_null(0).to_numpy()[rows]
    gain = metrics.auc_difference(label, models["fused"].test_score, models["in_bank"].test_score)
    assert acquisition["auc_gain_ci"] == pytest.approx([gain.ci_low, gain.ci_high], abs=1e-12)
    assert acquisition["auc_gain_p_value"] == pytest.approx(gain.p_value, abs=1e-12)
    assert gain.diff == pytest.approx(acquisition["auc_gain"], abs=1e-12)
    low, high = acquisition["auc_gain_ci"]
    assert low < acquisition["auc_gain"] < high
    assert summary["rescue"]["ratio_ci"] == run["rescue"]["ratio_ci"]
    assert summary["rescue"]["diff_ci"] == run["rescue"]["diff_ci"]
    assert summary["uplift"]["best"] == run["uplift"]["best"]
    report = summary["report"]
    assert len(report["acquisition"]["fused"]["gains"]) == 10
    assert len(report["acquisition"]["fused"]["importance"]) == 20
    assert report["acquisition"]["same_test_rows"] is True
    pruning = report["acquisition"]["fused"]["pruning"]
    assert pruning["kept"] + len(pruning["dropped"]) == pruning["candidates"]
    assert set(report["uplift"]["by_decile"]) == set(trained.run.uplift.learners)
    grid = report["value_demand"]["value_demand_customers"]["cells"]
    assert sum(v for row in grid for v in row if v is not None) <= trained.scores.height


def _identifiers(trained: Trained) -> set[str]:
    """Return every customer id, phone (last 11 digits) and ID number (first 17) as digits."""
    customers = pl.read_parquet(trained.world.customers, columns=["phone", "id_number"])
    found = {str(i) for i in trained.features.table["customer_id"].to_list()}
    for column, cut in (("phone", slice(-11, None)), ("id_number", slice(0, 17))):
        digits = customers[column].str.replace_all(r"\D", "").drop_nulls().to_list()
        found |= {d[cut] for d in digits if len(d) >= 10}
    return found


def _leaks(text: str, secrets: set[str]) -> list[str]:
    """Return the digit runs of `text` (thousands commas dropped) that hold a secret."""
    runs = {r.replace(",", "") for r in re.findall(r"\d[\d,]*", text)}
    sizes = {len(s) for s in secrets}
    return [
        r for r in runs
        if any(r[i : i + n] in secrets for n in sizes for i in range(len(r) - n + 1))
    ]  # fmt: skip


def _json_numbers(value: object) -> list[float]:
    if isinstance(value, dict):
        return [n for item in value.values() for n in _json_numbers(item)]
    if isinstance(value, list):
        return [n for item in value for n in _json_numbers(item)]
    return [value] if isinstance(value, int | float) and not isinstance(value, bool) else []


def test_no_customer_identifier_in_the_page_or_the_json(trained: Trained, page: Path):
    secrets = _identifiers(trained)
    customer = trained.features.table["customer_id"][0]
    assert _leaks(f"customer {customer:,} opened", secrets)  # the detector itself works
    assert _leaks(page.read_text(encoding="utf-8"), secrets) == []
    summary = _summary(page)
    ids = set(trained.features.table["customer_id"].to_list())
    assert not [n for n in _json_numbers(summary) if float(n).is_integer() and int(n) in ids]
    # Text in the JSON (labels, checks, versions) is held to the page's rule.
    strings = re.findall(r'"((?:[^"\\]|\\.)*)"', json.dumps(summary))
    assert _leaks(" ".join(strings), secrets) == []


def test_small_cells_read_suppressed_and_their_sum_stays_hidden(trained: Trained, tmp_path: Path):
    # Almost nobody in deciles 9-10: that column's cells, and their sum, fall under k.
    top = trained.scores.filter(pl.col("decile") <= 8)
    scores = pl.concat([top, trained.scores.filter(pl.col("decile") > 8).head(3)])
    page = write_model_report(
        trained.run, trained.features, trained.campaign, scores, tmp_path, k=10
    )
    text = page.read_text(encoding="utf-8")
    table = text[text.index('<table id="value_demand_customers"') :]
    table = table[: table.index("</table>")]
    assert table.count("suppressed") >= 6
    cells = _summary(page)["report"]["value_demand"]["value_demand_customers"]["cells"]
    assert [row[4] for row in cells] == [None] * 5
    # Row, column and grid totals are (nearly) known, so a withheld sum under k would come back
    # by subtraction: more cells go with the small ones.
    assert sum(v is None for row in cells for v in row[:4]) >= 1
    published = [v for row in cells for v in row if v is not None]
    assert min(published) >= 10 and scores.height - sum(published) >= 10


def test_figures_a_run_cannot_know_read_not_known(trained: Trained, tmp_path: Path):
    run = trained.run
    # A bank's own campaign: no true uplift; and a rescue whose control had no responder.
    uplift = replace(
        run.uplift,
        evaluations={n: replace(e, correlation=None) for n, e in run.uplift.evaluations.items()},
        targeting={n: replace(t, true_incremental=None) for n, t in run.uplift.targeting.items()},
    )
    rescue = replace(run.rescue, test=DiffResult(0.02, 0.01, 0.03, math.inf, 0.01))
    # Models judged on different rows: no paired interval for the AUC gain.
    in_bank = run.acquisition["in_bank"]
    shifted = replace(in_bank, test_rows=np.roll(in_bank.test_rows, 1))
    acquisition = {**run.acquisition, "in_bank": shifted}
    real = replace(run, uplift=uplift, rescue=rescue, acquisition=acquisition, auc_gain=None)
    page = write_model_report(real, trained.features, trained.campaign, trained.scores, tmp_path)
    text = page.read_text(encoding="utf-8")
    assert "not known outside a synthetic world" in text
    assert "estimated on the held-out A/B test" in text
    summary = _summary(page)  # parses: inf and NaN became null
    assert summary["rescue"]["ratio"] is None and summary["rescue"]["ratio_ci"] == [None, None]
    assert summary["acceptance"][2]["passed"] is None  # an infinite ratio is not judged
    assert "95% CI n/a: the models were judged on different rows" in text
    assert summary["acquisition"]["auc_gain_ci"] == [None, None]
    assert summary["acceptance"][0]["passed"] is not None  # still judged on the point estimate
    assert "not judged" in text


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"k": 0}, "k must be a positive int"),
        ({"scores": pl.DataFrame({"customer_id": [1]})}, "the score frame lacks decile"),
    ],
)
def test_caller_mistakes_are_named(trained: Trained, tmp_path: Path, change: dict, message: str):
    arguments = {"scores": trained.scores, **change}
    with pytest.raises(ConfigError, match=message):
        write_model_report(
            trained.run, trained.features, trained.campaign, out_dir=tmp_path, **arguments
        )
