"""The model report: one plain HTML page with PNG plots, and its numbers as JSON.

`write_model_report` turns a `fusion.training.TrainingRun` (acquisition in-bank and fused,
rescue, uplift) and the fused model's score frame into files a marketer can open from a shared
folder: no JavaScript, no web fonts, nothing fetched. It opens with the acceptance checks, pass
or fail against the targets of the business case, then shows each model's held-out evidence, and
ends with the value x demand matrix a bank turns into call lists.

Every figure is an aggregate: no customer id, phone or ID number is written, and no list.
The value x demand matrix, the one table that cuts the base by customer attributes, is
k-anonymised as the match report is: a cell of fewer than k customers reads "suppressed", more
cells are withheld where the withheld ones of a row, a column or the whole grid would add up to
under k, and an open rate is withheld unless its customers, openers and non-openers all number
at least k. Plots use matplotlib's Agg canvas directly (no pyplot, no global backend).
"""

from __future__ import annotations

import html
import json
import math
import os
import textwrap
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeGuard

import numpy as np
import numpy.typing as npt
import polars as pl
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter

from contracts.errors import ConfigError
from fusion.coverage import DEFAULT_K
from fusion.features import FeatureSet
from fusion.models import metrics
from fusion.models.acquisition import LABEL, TrainedModel
from fusion.models.campaign import campaign_data
from fusion.models.design import DesignSpec, design_matrix, feature_labels
from fusion.models.uplift import TargetingResult
from fusion.training import TrainingRun

__all__ = ["REPORT_FILE", "SUMMARY_FILE", "Targets", "write_model_report"]

REPORT_FILE = "model_report.html"
SUMMARY_FILE = "model_summary.json"

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True, kw_only=True)
class Targets:
    """The business case's acceptance targets the report marks pass or fail."""

    auc_gain: float = 0.04  # fused AUC minus in-bank AUC, at least
    in_bank_auc: tuple[float, float] = (0.78, 0.86)  # the real case's in-bank model sat here
    rescue_ratio: float = 3.0  # rescued top-10% response over the random control, at least
    uplift_ratio: float = 1.2  # incremental conversions, uplift over response targeting


_FUSED_COLOUR = "#4c72b0"
_IN_BANK_COLOUR = "#dd8452"
_CONTROL_COLOUR = "#8c8c8c"
_GOOD_COLOUR = "#55a868"
_BAD_COLOUR = "#c44e52"
_LEARNER_COLOURS = ("#4c72b0", "#55a868", "#8172b3", "#937860", "#da8bc3")
_MODELS = (
    ("fused", "fused (bank + vendor)", _FUSED_COLOUR),
    ("in_bank", "in-bank only", _IN_BANK_COLOUR),
)
_DEMAND_GROUPS = ("deciles 1-2", "deciles 3-4", "deciles 5-6", "deciles 7-8", "deciles 9-10")
# Value tiers by AUM quantile, highest first (the code cuts at the 80/60/40/20th percentiles).
_TIERS = ("V1 (top 20%)", "V2 (20-40%)", "V3 (40-60%)", "V4 (60-80%)", "V5 (bottom 20%)")

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif;
       margin: 2rem auto; max-width: 72rem; padding: 0 1rem; color: #222; line-height: 1.45; }
h1 { margin-bottom: 0.2rem; } h2 { margin-top: 2.5rem; border-bottom: 1px solid #ddd; }
h3 { margin-top: 1.6rem; }
.meta { color: #555; margin-top: 0; }
.privacy { background: #f4f6fa; border-left: 4px solid #4c72b0; padding: 0.6rem 1rem; }
.headline { display: flex; gap: 2rem; flex-wrap: wrap; margin: 1rem 0; }
.headline div { font-size: 0.9rem; color: #555; }
.headline strong { display: block; font-size: 1.6rem; color: #222; }
table { border-collapse: collapse; margin: 0.8rem 0; font-size: 0.9rem; }
th, td { border: 1px solid #ddd; padding: 0.25rem 0.6rem; }
th { background: #f4f4f4; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.sup { color: #888; font-style: italic; text-align: right; background: #fafafa; }
td.pass { color: #1e6b33; font-weight: 600; } td.fail { color: #a11d24; font-weight: 600; }
td.info { color: #555; }
p.note { font-size: 0.85rem; color: #555; margin-top: 0; }
img { max-width: 100%; height: auto; display: block; margin: 0.8rem 0; }
.pair { display: flex; gap: 1rem; flex-wrap: wrap; } .pair img { max-width: 48%; }
details { margin: 0.6rem 0; } summary { cursor: pointer; }
"""


@dataclass
class _Section:
    """One part of the page: its HTML and its JSON-ready tables."""

    html: list[str]
    data: dict[str, Any]


@dataclass(frozen=True)
class _Check:
    """One acceptance check; `passed` is None when not judged (no target, or no finite value)."""

    name: str
    target: str
    value: str  # the measured figure in words, with its context
    measured: float | None  # the number held against the target
    passed: bool | None


def write_model_report(
    run: TrainingRun,
    features: FeatureSet,
    campaign: pl.DataFrame,
    scores: pl.DataFrame,
    out_dir: Path,
    *,
    k: int = DEFAULT_K,
    targets: Targets | None = None,
) -> Path:
    """Return the path of `model_report.html`, written under `out_dir` with its PNGs and JSON.

    Args:
        run: the training run (`fusion.training.train_all`).
        features: the feature set the run was trained on (labels and AUM are read from it).
        campaign: the past A/B campaign the uplift models learnt from (customer_id, treatment,
            responded).
        scores: the fused acquisition model's score frame (`fusion.scoring`) for the customers
            not yet on mobile banking; only customer_id and decile are read.
        out_dir: folder for the page, one PNG per plot and `model_summary.json` (created if
            missing; files of an earlier report there are replaced).
        k: the value x demand matrix withholds cells of fewer than k customers.
        targets: the acceptance targets (default: the business case's).
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ConfigError(f"k must be a positive int, got {k!r}; 10 is the default", setting="k")
    missing = [c for c in ("customer_id", "decile") if c not in scores.columns]
    if missing:
        raise ConfigError(
            f"the score frame lacks {', '.join(missing)}; pass the fused acquisition model's "
            "scores as `fusion.scoring` writes them (customer_id, decile, score, ...)",
            setting="scores",
        )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    targets = targets or Targets()
    summary = run.summary()
    checks = _acceptance(run, targets)
    sections = {
        "acquisition": _acquisition_section(run, features, out_dir),
        "rescue": _rescue_section(run, out_dir),
        "uplift": _uplift_section(run, features, campaign, out_dir),
        "value_demand": _value_demand_section(run, features, scores, out_dir, k),
    }
    document = {
        **summary,
        "acceptance": [asdict(c) for c in checks],
        "report": {name: section.data for name, section in sections.items()},
    }
    _replace(out_dir / SUMMARY_FILE, json.dumps(_json_ready(document), indent=2, allow_nan=False))
    page = _page(run, summary, checks, sections, scores, k)
    return _replace(out_dir / REPORT_FILE, page)  # last and whole: its plots are already there


def _replace(path: Path, text: str) -> Path:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


# -- acceptance -------------------------------------------------------------------------------


def _acceptance(run: TrainingRun, targets: Targets) -> list[_Check]:
    """Return the acceptance checks of the business case, in the order the page shows them."""
    fused = run.acquisition["fused"].evaluation.auc
    in_bank = run.acquisition["in_bank"].evaluation.auc
    gain = run.auc_gain  # None when the two models were judged on different rows
    gain_ci = (
        "95% CI n/a: the models were judged on different rows"
        if gain is None
        else f"95% DeLong CI {gain.ci_low:+.3f} – {gain.ci_high:+.3f}"
    )
    low, high = targets.in_bank_auc
    rescue = run.rescue
    ratio, test = rescue.test.ratio, rescue.test
    share = rescue.rescued / rescue.pool_test
    uplift, response = run.uplift.targeting["uplift"], run.uplift.targeting["response"]
    target_share = run.uplift.metadata.get("target_share", 0.3)
    correlation = run.uplift.evaluations[run.uplift.best].correlation
    return [
        _Check(
            "Fused acquisition AUC gain over in-bank (same held-out rows)",
            f"≥ +{targets.auc_gain:.3f}",
            f"{fused - in_bank:+.3f} ({gain_ci}; fused {fused:.3f}, in-bank {in_bank:.3f})",
            fused - in_bank,
            fused - in_bank >= targets.auc_gain,
        ),
        _Check(
            "In-bank acquisition AUC (the real case's level)",
            f"{low:.2f} – {high:.2f}",
            f"{in_bank:.3f}",
            in_bank,
            low <= in_bank <= high,
        ),
        _Check(
            f"Rescued top {share:.0%} response over a random control from the rejected pool",
            f"≥ {targets.rescue_ratio:.1f}×",
            f"{_ratio(ratio)} (95% CI {_ratio(test.ratio_ci_low)} – {_ratio(test.ratio_ci_high)});"
            f" {rescue.rescued_rate:.1%} vs {rescue.control_rate:.1%}, difference "
            f"{_pp(test.diff)} (95% CI {_pp(test.ci_low)} – {_pp(test.ci_high)})",
            ratio,
            _at_least(ratio, targets.rescue_ratio),
        ),
        _Check(
            f"Incremental conversions targeting {target_share:.0%} by uplift vs by response score",
            f"≥ {targets.uplift_ratio:.1f}×",
            f"{_ratio(uplift.ratio)} ({uplift.incremental_conversions:,.1f} vs "
            f"{response.incremental_conversions:,.1f} at {uplift.contacts:,} contacts; "
            f"{_source(uplift)})",
            uplift.ratio,
            _at_least(uplift.ratio, targets.uplift_ratio),
        ),
        _Check(
            f"Correlation of predicted with true uplift ({run.uplift.best})",
            "shown, no target",
            "not known outside a synthetic world" if correlation is None else f"{correlation:.2f}",
            correlation,
            None,
        ),
    ]


def _at_least(value: float | None, target: float) -> bool | None:
    """Return value >= target; None when the value is unknown or infinite (not judged)."""
    return value >= target if _finite(value) else None


def _source(result: TargetingResult) -> str:
    if result.true_incremental is not None:
        return "true uplift of the synthetic world"
    return "estimated on the held-out A/B test"


# -- acquisition ------------------------------------------------------------------------------


def _acquisition_section(run: TrainingRun, features: FeatureSet, out_dir: Path) -> _Section:
    """Return the acquisition section (and write its seven plots)."""
    label = features.table[LABEL].fill_null(False).cast(pl.Int64).to_numpy()
    models = run.acquisition
    same_rows = np.array_equal(models["fused"].test_rows, models["in_bank"].test_rows)
    curves = {
        kind: _roc_pr_points(label[models[kind].test_rows], models[kind].test_score)
        for kind, _, _ in _MODELS
    }
    _roc_plot(curves, models, out_dir / "acquisition_roc.png")
    _pr_plot(curves, models, label[models["fused"].test_rows], out_dir / "acquisition_pr.png")
    _gains_plot(models, out_dir / "acquisition_gains.png")
    _lift_plot(models, out_dir / "acquisition_lift.png")
    _calibration_plot(models, out_dir / "acquisition_calibration.png")
    importance = {kind: models[kind].model.importance() for kind, _, _ in _MODELS}
    _importance_plot(
        importance["fused"].head(20),
        "Fused model: top 20 inputs by gain share",
        _FUSED_COLOUR,
        out_dir / "importance_fused.png",
    )
    _importance_plot(
        importance["in_bank"].head(10),
        "In-bank model: top 10 inputs by gain share",
        _IN_BANK_COLOUR,
        out_dir / "importance_in_bank.png",
    )
    pruning = {kind: _pruning(models[kind], features) for kind, _, _ in _MODELS}
    parts = [
        "<h2>Acquisition: who opens mobile banking</h2>",
        "<p>Both models score the customers not yet on mobile banking and are judged on the "
        + ("same" if same_rows else "<strong>different</strong>")
        + " held-out rows (customers neither model trained on). The in-bank model reads the "
        "bank's own data only; the fused model adds the vendor's app usage and interest tags.</p>",
        _metrics_table(run),
        '<div class="pair">',
        '<img src="acquisition_roc.png" alt="ROC curves of the in-bank and fused models">',
        '<img src="acquisition_pr.png" alt="Precision-recall curves of both models">',
        "</div>",
        "<h3>Gains and lift by decile</h3>",
        "<p>Customers sorted by score and cut in ten equal groups (decile 1 = highest scores). "
        "Cumulative gains: share of all openers found in the top deciles; lift: a decile's open "
        "rate over the overall rate.</p>",
        '<div class="pair">',
        '<img src="acquisition_gains.png" alt="Cumulative gains curves of both models">',
        '<img src="acquisition_lift.png" alt="Lift by decile, bars for both models">',
        "</div>",
        *(_gains_table(models[kind], title) for kind, title, _ in _MODELS),
        "<h3>Calibration</h3>",
        "<p>Mean predicted probability against the observed open rate, in bins of predicted "
        "probability; on the diagonal, a score of 8% means 8 in 100 open.</p>",
        '<img src="acquisition_calibration.png" alt="Calibration plot of both models">',
        _calibration_table(models["fused"]),
        "<h3>Stable pruning</h3>",
        "<p>Each model keeps only inputs whose share of the gain reaches the threshold in most "
        "resamples of the training rows; an input that helps in one resample and not in the "
        "others carried noise.</p>",
        *(_pruning_html(pruning[kind], title) for kind, title, _ in _MODELS),
        "<h3>What drives the scores</h3>",
        "<p>Gain share: each input's share of the total loss reduction of the model's trees.</p>",
        '<img src="importance_fused.png" alt="Bar chart: top 20 inputs of the fused model">',
        _importance_table(importance["fused"].head(20), "fused (bank + vendor): top 20"),
        '<img src="importance_in_bank.png" alt="Bar chart: top 10 inputs of the in-bank model">',
        _importance_table(importance["in_bank"].head(10), "in-bank only: top 10"),
    ]
    data = {
        "same_test_rows": same_rows,
        **{
            kind: {
                "gains": models[kind].evaluation.gains.to_dicts(),
                "calibration": models[kind].evaluation.calibration.to_dicts(),
                "importance": importance[kind].head(20).to_dicts(),
                "pruning": pruning[kind],
            }
            for kind, _, _ in _MODELS
        },
    }
    return _Section(parts, data)


@dataclass(frozen=True)
class _Curves:
    """ROC and precision-recall points, one per distinct score (ties never split)."""

    fpr: FloatArray
    tpr: FloatArray
    recall: FloatArray
    precision: FloatArray


def _roc_pr_points(y: IntArray, score: FloatArray) -> _Curves:
    """Return ROC and PR points of `score` against `y` (one sort, cumulative sums).

    Tie groups end a point as in scikit-learn's `roc_curve`; the ROC curve starts at (0, 0).
    """
    order = np.argsort(-score, kind="stable")
    ends = np.r_[np.flatnonzero(np.diff(score[order])), score.size - 1]
    tp = np.cumsum(y[order])[ends].astype(np.float64)
    fp = (ends + 1) - tp
    n_pos, n_neg = max(float(y.sum()), 1.0), max(float(y.size - y.sum()), 1.0)
    return _Curves(
        fpr=np.r_[0.0, fp / n_neg],
        tpr=np.r_[0.0, tp / n_pos],
        recall=tp / n_pos,
        precision=tp / (ends + 1),
    )


def _metrics_table(run: TrainingRun) -> str:
    rows = []
    for kind, title, _ in _MODELS:
        trained = run.acquisition[kind]
        ev, prune = trained.evaluation, trained.prune
        candidates = len(trained.model.names) + (len(prune.dropped) if prune else 0)
        rows.append(
            [
                _th(title),
                _num(f"{len(trained.model.names)} of {candidates}"),
                _num(f"{trained.model.booster.num_boosted_rounds():,}"),
                _num(f"{ev.rows:,}"),
                _num(f"{ev.positives:,} ({ev.positives / ev.rows:.1%})"),
                _num(f"{ev.auc:.3f}"),
                _num(f"{ev.ks:.3f}"),
                _num(f"{ev.pr_auc:.3f}"),
            ]
        )
    gain = run.acquisition["fused"].evaluation.auc - run.acquisition["in_bank"].evaluation.auc
    return _table(
        ["Model", "Inputs kept", "Trees", "Held-out customers", "Openers", "AUC", "KS", "PR-AUC"],
        rows,
        name="acquisition_metrics",
        note=f"AUC gain of the fused model: {gain:+.3f}. KS: largest gap between the shares of "
        "openers and of non-openers above a score cut-off (the dashed segment on the ROC plot). "
        "PR-AUC: average precision; a random score's equals the open rate.",
    )


def _gains_table(trained: TrainedModel, title: str) -> str:
    return f"<h4>{html.escape(title)}</h4>" + _records_table(
        trained.evaluation.gains.iter_rows(named=True),
        [
            _Column("decile", "Decile"),
            _Column("customers", "Customers", _count),
            _Column("responders", "Openers", _count),
            _Column("response_rate", "Open rate", _pct),
            _Column("cum_gains", "Cumulative gains", _pct),
            _Column("lift", "Lift", _fixed),
            _Column("cum_lift", "Cum. lift", _fixed),
        ],
        name=f"gains_{trained.model.name}",
    )


def _calibration_table(trained: TrainedModel) -> str:
    records = (
        {**r, "range": f"{r['prob_low']:.0%} – {r['prob_high']:.0%}"}
        for r in trained.evaluation.calibration.iter_rows(named=True)
    )
    return _records_table(
        records,
        [
            _Column("range", "Predicted (fused)"),
            _Column("customers", "Customers", _count),
            _Column("mean_predicted", "Mean predicted", _pct),
            _Column("observed_rate", "Observed open rate", _pct),
        ],
        name="calibration_fused",
    )


def _pruning(trained: TrainedModel, features: FeatureSet) -> dict[str, Any]:
    """Return the kept / candidate counts and the dropped inputs with their labels."""
    prune = trained.prune
    kept = len(trained.model.names)
    if prune is None:
        return {"kept": kept, "candidates": kept, "dropped": []}
    labels = feature_labels(features.manifest, DesignSpec(prune.dropped))
    dropped = sorted(prune.dropped, key=lambda n: (-prune.mean_share[n], n))
    return {
        "kept": kept,
        "candidates": kept + len(dropped),
        "dropped": [
            {"feature": n, "label": labels[n], "folds": prune.frequency[n],
             "mean_gain_share": prune.mean_share[n]}
            for n in dropped
        ],
    }  # fmt: skip


def _pruning_html(pruning: dict[str, Any], title: str) -> str:
    dropped = pruning["dropped"]
    head = (
        f"<p><strong>{html.escape(title)}</strong>: {pruning['kept']} inputs kept of "
        f"{pruning['candidates']} candidates; {len(dropped)} dropped.</p>"
    )
    if not dropped:
        return head
    table = _records_table(
        dropped,
        [
            _Column("feature", "Input", numeric=False),
            _Column("label", "Meaning", numeric=False),
            _Column("folds", "Folds above threshold"),
            _Column("mean_gain_share", "Mean gain share", lambda v: f"{v:.3%}"),
        ],
        name=f"dropped_{title.split()[0]}",
    )
    return f"{head}<details><summary>The {len(dropped)} dropped inputs</summary>{table}</details>"


def _importance_table(frame: pl.DataFrame, title: str) -> str:
    return f"<h4>{html.escape(title)}</h4>" + _records_table(
        ({"rank": i, **r} for i, r in enumerate(frame.iter_rows(named=True), start=1)),
        [
            _Column("rank", "Rank"),
            _Column("label", "Input", numeric=False),
            _Column("feature", "Column", numeric=False),
            _Column("gain_share", "Gain share", _pct),
        ],
        name=f"importance_{title.split()[0]}",
    )


# -- rescue -----------------------------------------------------------------------------------


def _rescue_section(run: TrainingRun, out_dir: Path) -> _Section:
    """Return the rescue section (and write its bar plot)."""
    rescue = run.rescue
    counts = np.array([rescue.rescued, rescue.control, rescue.pool_test])
    yes = np.array(
        [rescue.rescued_responders, rescue.control_responders, rescue.pool_test_responders]
    )
    low, high = metrics.wilson_interval(yes, counts)
    rates = yes / counts
    share = rescue.rescued / rescue.pool_test
    _rescue_plot(rates[:2], low[:2], high[:2], share, out_dir / "rescue.png")
    test = rescue.test
    accept = float(rescue.model.model.metadata.get("accept_share", math.nan))
    groups = (
        f"Rescued: top {share:.0%} of the pool by rescue score",
        "Random control from the pool",
        "Whole held-out pool (the control's expected rate)",
    )
    rows = [
        [_th(g), _num(f"{n:,}"), _num(f"{y:,}"), _num(_pct(r)), _num(f"{_pct(lo)} – {_pct(hi)}")]
        for g, n, y, r, lo, hi in zip(groups, counts, yes, rates, low, high, strict=True)
    ]
    parts = [
        "<h2>Rescue: customers the in-bank model rejected</h2>",
        f"<p>The in-bank model accepts its top {accept:.0%} (scores of at least "
        f"{rescue.cutoff:.4f}) and rejects the rest: a pool of {rescue.pool:,} customers, "
        f"{rescue.pool_test:,} of them held out."
        " A rescue model on the fused data ranks the held-out pool; its top "
        f"{rescue.rescued:,} are compared with {rescue.control:,} customers drawn at random from "
        "the same pool, as a campaign's hold-out group would be. The pool's training rows are "
        "gated on out-of-fold in-bank scores (a model's scores on its own training rows are too "
        "good). The response is opening mobile banking in the outcome window: the world has no "
        "separate mobile-banking campaign, so the held-out customers stand in for one.</p>",
        '<div class="headline">',
        _headline("Rescued response", _pct(rescue.rescued_rate)),
        _headline("Control response", _pct(rescue.control_rate)),
        _headline(
            "Ratio (95% CI)",
            f"{_ratio(test.ratio)}",
            f"{_ratio(test.ratio_ci_low)} – {_ratio(test.ratio_ci_high)}",
        ),
        _headline(
            "Difference (95% CI)", _pp(test.diff), f"{_pp(test.ci_low)} – {_pp(test.ci_high)}"
        ),
        _headline("AUC inside the pool", f"{rescue.model.evaluation.auc:.3f}"),
        "</div>",
        '<img src="rescue.png" alt="Bars: response of the rescued list and of the random control, '
        'with 95% intervals">',
        _table(
            ["Group", "Customers", "Responders", "Response", "95% CI (Wilson)"],
            rows,
            name="rescue",
            note="Ratio CI: Katz log interval; difference CI: Newcombe (hybrid score); "
            f"two-sided p-value of the difference {test.p_value:.3g}.",
        ),
    ]
    data = {
        "rescued_rate_ci": [low[0], high[0]],
        "control_rate_ci": [low[1], high[1]],
        "pool_rate_ci": [low[2], high[2]],
        "ratio_to_pool": rescue.rescued_rate / rates[2] if rates[2] else math.inf,
        "top_share": share,
        "accept_share": accept,
    }
    return _Section(parts, data)


# -- uplift -----------------------------------------------------------------------------------


def _uplift_section(
    run: TrainingRun, features: FeatureSet, campaign: pl.DataFrame, out_dir: Path
) -> _Section:
    """Return the uplift section (and write its Qini, decile and targeting plots)."""
    result = run.uplift
    data = campaign_data(features, campaign)
    if data.campaign_id != result.metadata.get("campaign_id", data.campaign_id):
        raise ConfigError(
            f"the campaign table holds {data.campaign_id} but the uplift models learnt from "
            f"{result.metadata['campaign_id']}; pass the campaign the run was trained on",
            setting="campaign",
        )
    rows = result.test_rows
    y, t = data.responded[rows], data.treatment[rows]
    x = design_matrix(features, result.spec, rows)
    qini = {
        name: metrics.qini_curve(y, model.predict(x), t) for name, model in result.learners.items()
    }
    share = float(result.metadata.get("target_share", 0.3))
    _qini_plot(qini, result.best, share, out_dir / "uplift_qini.png")
    by_decile = result.evaluations[result.best].by_decile
    _uplift_decile_plot(by_decile, result.best, out_dir / "uplift_by_decile.png")
    _targeting_plot(result.targeting, out_dir / "uplift_targeting.png")
    treated = int(t.sum())
    parts = [
        "<h2>Uplift: who responds because of the offer</h2>",
        f"<p>Campaign {html.escape(data.campaign_id)}: {len(rows):,} held-out customers "
        f"({treated:,} offered, {len(rows) - treated:,} held out at random). Each learner ranks "
        f"them by predicted uplift; the best on the validation rows ({html.escape(result.best)}) "
        "is the one registered. The Qini curve counts the incremental responders among the "
        "top-ranked customers; the straight line is a random order.</p>",
        '<img src="uplift_qini.png" alt="Qini curves of each uplift learner and a random line">',
        _learner_table(run),
        f"<h3>Observed uplift by decile of predicted uplift ({html.escape(result.best)})</h3>",
        '<img src="uplift_by_decile.png" alt="Bars: observed uplift per decile of predicted '
        'uplift">',
        _decile_table(by_decile),
        f"<h3>Targeting {share:.0%} of the held-out campaign: uplift vs response score</h3>",
        "<p>The same number of contacts chosen by predicted uplift and by the response model "
        "(P(respond | offered), what a bank usually builds). Incremental conversions are "
        + (
            "the true ones of the synthetic world; the A/B estimate is shown beside them."
            if result.targeting["uplift"].true_incremental is not None
            else "estimated on the held-out A/B test."
        )
        + "</p>",
        '<img src="uplift_targeting.png" alt="Bars: incremental conversions by targeting '
        'strategy, with 95% intervals">',
        _targeting_table(run),
    ]
    section_data = {
        "by_decile": {name: ev.by_decile.to_dicts() for name, ev in result.evaluations.items()},
        "test_customers": len(rows),
        "test_treated": treated,
    }
    return _Section(parts, section_data)


def _learner_table(run: TrainingRun) -> str:
    best = run.uplift.best
    return _records_table(
        (
            {"learner": name + (" (chosen)" if name == best else ""), **ev.summary()}
            for name, ev in run.uplift.evaluations.items()
        ),
        [
            _Column("learner", "Learner"),
            _Column("qini", "Qini", _fixed3),
            _Column("auuc", "AUUC", _fixed3),
            _Column("uplift_at_30", "Uplift @30%", _pp),
            _Column("valid_qini", "Valid Qini", _fixed3),
            _Column("correlation_with_true_uplift", "Corr. with true uplift", _correlation),
        ],
        name="uplift_learners",
        note="Qini and AUUC: area above the random line over the perfect model's (1 perfect, "
        "0 random, below 0 worse than random), on held-out rows. Uplift @30%: offered minus "
        "held-out response among the top 30%. Valid Qini chose the learner. The correlation "
        "needs the true uplift, known only in a synthetic world.",
    )


def _decile_table(frame: pl.DataFrame) -> str:
    return _records_table(
        frame.iter_rows(named=True),
        [
            _Column("decile", "Decile"),
            _Column("n_treatment", "Offered", _count),
            _Column("n_control", "Held out", _count),
            _Column("response_rate_treatment", "Response offered", _pct),
            _Column("response_rate_control", "Response held out", _pct),
            _Column("uplift", "Uplift", _pp),
        ],
        name="uplift_by_decile",
    )


def _targeting_table(run: TrainingRun) -> str:
    meta = run.uplift.metadata
    return _records_table(
        ({"strategy": f"by {name}", **vars(r)} for name, r in run.uplift.targeting.items()),
        [
            _Column("strategy", "Targeting"),
            _Column("contacts", "Contacts", _count),
            _Column("cost", "Cost", _money),
            _Column("true_incremental", "Incremental (true)", _fixed1),
            _Column("estimated_incremental", "Incremental (A/B est.)", _fixed1),
            _Column("estimated_ci", "95% CI (A/B)", _interval),
            _Column("net_value", "Net value", _money),
            _Column("roi", "ROI", _pct),
            _Column("ratio", "vs response", _ratio),
        ],
        name="targeting",
        note=f"Cost {meta.get('cost_per_contact', 0):,.2f} a contact; value "
        f"{meta.get('value_per_conversion', 0):,.2f} an incremental conversion. Net value and ROI "
        "use the true incremental conversions where known, else the A/B estimate.",
    )


# -- value x demand ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Grid:
    """One value x demand table: a number per (value tier, demand group), some withheld."""

    name: str  # file stem and table id
    title: str
    values: FloatArray  # (tiers, demand groups); NaN where withheld
    hidden: npt.NDArray[np.bool_]
    percent: bool
    colours: str  # matplotlib colour map
    note: str

    def text(self, i: int, j: int) -> str:
        return f"{self.values[i, j]:.1%}" if self.percent else f"{self.values[i, j]:,.0f}"

    def to_dict(self) -> dict[str, Any]:
        """Return the cells as nested lists, None where withheld, and how many are."""
        cells = (self.values if self.percent else self.values.astype(np.int64)).astype(object)
        cells[self.hidden] = None
        return {"cells": cells.tolist(), "suppressed": int(self.hidden.sum())}


def _value_demand_section(
    run: TrainingRun, features: FeatureSet, scores: pl.DataFrame, out_dir: Path, k: int
) -> _Section:
    """Return the value x demand section (and write its two heatmaps)."""
    grids, edges = _value_demand(run, features, scores, k)
    parts = [
        "<h2>Value x demand: where to start the call lists</h2>",
        "<p>Rows: customer value, the month-average assets under management (AUM) in five "
        "tiers of equal size (cut points rounded to two significant digits). Columns: predicted "
        "demand, the fused model's score decile grouped in pairs. Banks work the lists from the "
        "top-left cell (high value, high demand) outward; the open rates, measured on held-out "
        "customers, show whether the demand the model predicts is real in each tier.</p>",
        '<div class="pair">',
    ]
    for grid in grids:
        _heatmap(grid, out_dir / f"{grid.name}.png")
        parts.append(f'<img src="{grid.name}.png" alt="Heatmap: {html.escape(grid.title)}">')
    parts.append("</div>")
    parts += [_grid_table(grid, edges) for grid in grids]
    data = {
        "k": k,
        "value_tiers": list(_TIERS),
        "aum_cut_points": edges.tolist(),
        "demand_groups": list(_DEMAND_GROUPS),
        **{grid.name: grid.to_dict() for grid in grids},
    }
    return _Section(parts, data)


def _value_demand(
    run: TrainingRun, features: FeatureSet, scores: pl.DataFrame, k: int
) -> tuple[list[_Grid], FloatArray]:
    """Return the customer-count and open-rate grids of `scores`, k-anonymised, and the rounded
    AUM cut points between the value tiers (highest first)."""
    frame = scores.select("customer_id", "decile").join(
        features.table.select("customer_id", "aum_month_avg", LABEL), on="customer_id"
    )
    # No AUM on file means no assets with the bank: the lowest tier.
    aum = frame["aum_month_avg"].fill_null(0.0).to_numpy().astype(np.float64)
    shares = np.linspace(1, 0, len(_TIERS) + 1)[1:-1]  # 0.8, 0.6, 0.4, 0.2
    edges = np.quantile(aum, shares) if len(aum) else np.zeros(len(shares))
    tier = (aum[:, None] < edges[None, :]).sum(axis=1)
    demand = np.clip((frame["decile"].cast(pl.Int64).to_numpy() - 1) // 2, 0, 4)
    cell = tier * len(_DEMAND_GROUPS) + demand
    size, shape = len(_TIERS) * len(_DEMAND_GROUPS), (len(_TIERS), len(_DEMAND_GROUPS))
    counts = np.bincount(cell, minlength=size)
    test_ids = features.table["customer_id"].to_numpy()[run.acquisition["fused"].test_rows]
    held = frame["customer_id"].is_in(pl.Series(test_ids).implode()).to_numpy()
    opened = frame[LABEL].fill_null(False).cast(pl.Int64).to_numpy()
    held_n = np.bincount(cell[held], minlength=size)
    held_yes = np.bincount(cell[held], weights=opened[held], minlength=size).astype(np.int64)
    count_hidden = _suppress(counts, k)
    # A rate is a count in disguise: its openers and non-openers must reach k as well.
    rate_hidden = count_hidden | (np.minimum(held_yes, held_n - held_yes) < k)
    rates = np.divide(held_yes, held_n, out=np.full(size, np.nan), where=held_n > 0)
    grids = [
        _Grid("value_demand_customers", "Customers not yet on mobile banking",
              counts.astype(np.float64).reshape(shape), count_hidden.reshape(shape), False,
              "Blues", f"{int(count_hidden.sum())} of {size} cells suppressed: fewer than k = "
              f"{k} customers, or part of a row, column or total whose withheld cells add up to "
              "under k."),
        _Grid("value_demand_open_rate", "Observed open rate, held-out customers",
              rates.reshape(shape), rate_hidden.reshape(shape), True, "Greens",
              f"{int(rate_hidden.sum())} of {size} rates suppressed: fewer than k = {k} "
              "held-out customers, openers or non-openers in the cell."),
    ]  # fmt: skip
    return grids, np.array([_round_significant(e) for e in edges])


def _suppress(counts: IntArray, k: int) -> npt.NDArray[np.bool_]:
    """Return which of the grid's 25 cells to withhold (flat, row by row).

    Primary: a cell of fewer than k customers (zero included). Secondary: every row, column and
    the whole grid has a total a reader knows or nearly knows (each value tier and each decile
    pair is a fifth of the population, and the page prints the customers scored), so where the
    withheld cells of one of them add up to under k, its smallest published cell is withheld
    too; repeated until nothing changes (a few passes over 11 groups).
    """
    rows, columns = len(_TIERS), len(_DEMAND_GROUPS)
    index = np.arange(rows * columns).reshape(rows, columns)
    groups = [*index, *index.T, index.ravel()]
    hidden = counts < k
    changed = True
    while changed:
        changed = False
        for group in groups:
            withheld, published = group[hidden[group]], group[~hidden[group]]
            if len(withheld) and len(published) and counts[withheld].sum() < k:
                hidden[published[np.argmin(counts[published])]] = True
                changed = True
    return hidden


def _round_significant(value: float, digits: int = 2) -> float:
    if value == 0 or not math.isfinite(value):
        return float(value)
    return float(round(value, digits - 1 - math.floor(math.log10(abs(value)))))


def _grid_table(grid: _Grid, edges: FloatArray) -> str:
    why = "fewer than k customers behind the cell"
    rows = [
        [_th(f"{tier}{_tier_range(edges, i)}")]
        + [
            _suppressed(why) if grid.hidden[i, j] else _num(grid.text(i, j))
            for j in range(len(_DEMAND_GROUPS))
        ]
        for i, tier in enumerate(_TIERS)
    ]
    head = f"<h3>{html.escape(grid.title)}</h3>"
    return head + _table(
        ["Value tier (AUM)", *_DEMAND_GROUPS], rows, name=grid.name, note=grid.note
    )


def _tier_range(edges: FloatArray, tier: int) -> str:
    if tier == 0:
        return f": ≥ {edges[0]:,.0f}"
    if tier == len(edges):
        return f": < {edges[-1]:,.0f}"
    return f": {edges[tier]:,.0f} – {edges[tier - 1]:,.0f}"


# -- page -------------------------------------------------------------------------------------


def _page(
    run: TrainingRun,
    summary: Mapping[str, Any],
    checks: Sequence[_Check],
    sections: Mapping[str, _Section],
    scores: pl.DataFrame,
    k: int,
) -> str:
    e = html.escape
    title = f"Model report, snapshot {run.snapshot_date}"
    versions = " &middot; ".join(
        f"{e(name)} {e(version)}" for name, version in summary["models"].items()
    )
    fused, in_bank = run.acquisition["fused"].evaluation, run.acquisition["in_bank"].evaluation
    passed = sum(c.passed is True for c in checks)
    judged = sum(c.passed is not None for c in checks)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{e(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{e(title)}</h1>",
        f'<p class="meta">Models: {versions}</p>',
        _privacy(k),
        "<h2>Acceptance</h2>",
        '<div class="headline">',
        _headline("Checks passed", f"{passed} of {judged}"),
        _headline("Fused AUC", f"{fused.auc:.3f}", f"in-bank {in_bank.auc:.3f}"),
        _headline("Rescue vs control", _ratio(run.rescue.test.ratio)),
        _headline("Uplift vs response", _ratio(run.uplift.targeting["uplift"].ratio)),
        _headline("Customers scored", f"{scores.height:,}"),
        "</div>",
        _acceptance_table(checks),
        _how_to_read(),
        *sections["acquisition"].html,
        *sections["rescue"].html,
        *sections["uplift"].html,
        *sections["value_demand"].html,
        "<h2>Files</h2>",
        f"<p>Every number of this page, and the run's own summary, as JSON: "
        f"<code>{SUMMARY_FILE}</code> (withheld cells are null).</p>",
        "</body></html>",
    ]
    return "\n".join(parts)


def _privacy(k: int) -> str:
    return (
        '<p class="privacy"><strong>Privacy.</strong> This page shows aggregates only: no '
        "customer id, phone number, ID number or match key is in it or in the files beside it, "
        "and no list of customers. Model figures count held-out customers by score band. The "
        "value x demand matrix, the one table that cuts customers by their attributes, is "
        f"k-anonymised with k = {k}: a cell of fewer customers, or one that could be worked out "
        "from other cells by subtraction, reads <em>suppressed</em>, is null in the JSON and "
        "blank in the heatmap.</p>"
    )


def _how_to_read() -> str:
    return (
        "<h2>How to read this report</h2><ul>"
        "<li>Every figure is measured on <strong>held-out</strong> customers no model trained on"
        " (the same customers for every model), so it is what to expect on a new list.</li>"
        "<li><strong>AUC</strong>: the chance a random opener scores above a random non-opener "
        "(0.5 random, 1 perfect). The gap between the fused and the in-bank AUC is what the "
        "vendor's data adds.</li>"
        "<li><strong>Rescue</strong>: customers the bank's own model wrote off, re-ranked with "
        "the vendor's data, against a random sample of the same customers.</li>"
        "<li><strong>Uplift</strong>: a response score finds people who buy anyway; an uplift "
        "model finds people who buy <em>because</em> of the offer. Only incremental conversions "
        "pay for a campaign.</li>"
        "<li>Intervals are 95%: a ratio whose interval includes 1, or a difference whose "
        "interval includes 0, could be chance.</li></ul>"
    )


def _acceptance_table(checks: Sequence[_Check]) -> str:
    rows = []
    for check in checks:
        if check.passed is None:
            mark = '<td class="info">not judged</td>'
        elif check.passed:
            mark = '<td class="pass">✓ pass</td>'
        else:
            mark = '<td class="fail">✗ fail</td>'
        rows.append([_th(check.name), _txt(check.target), _txt(check.value), mark])
    return _table(["Check", "Target", "Measured", "Result"], rows, name="acceptance")


def _headline(label: str, value: str, extra: str | None = None) -> str:
    e = html.escape
    small = f"<br>{e(extra)}" if extra else ""
    return f"<div><strong>{e(value)}</strong>{e(label)}{small}</div>"


def _table(
    headers: Sequence[str], rows: Iterable[Sequence[str]], *, name: str, note: str | None = None
) -> str:
    """Return one HTML table of pre-rendered cells, with an optional note under it."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(row) + "</tr>" for row in rows)
    after = f'<p class="note">{html.escape(note)}</p>' if note else ""
    return (
        f'<table id="{html.escape(name)}"><thead><tr>{head}</tr></thead>'
        f"<tbody>{body}</tbody></table>{after}"
    )


@dataclass(frozen=True)
class _Column:
    """One column of a records table: the record key, its header and how to print a value."""

    key: str
    header: str
    fmt: Callable[[Any], str] = str
    numeric: bool = True


def _records_table(
    records: Iterable[Mapping[str, Any]],
    columns: Sequence[_Column],
    *,
    name: str,
    note: str | None = None,
) -> str:
    """Return an HTML table of `records`; the first column heads each row."""
    first, rest = columns[0], columns[1:]
    rows = [
        [_th(first.fmt(r[first.key]))]
        + [(_num if c.numeric else _txt)(c.fmt(r[c.key])) for c in rest]
        for r in records
    ]
    return _table([c.header for c in columns], rows, name=name, note=note)


def _th(text: str) -> str:
    return f'<th scope="row">{html.escape(text)}</th>'


def _txt(text: str) -> str:
    return f"<td>{html.escape(text)}</td>"


def _num(text: str) -> str:
    return f'<td class="num">{html.escape(text)}</td>'


def _suppressed(why: str) -> str:
    return f'<td class="sup" title="{html.escape(why)}">suppressed</td>'


# -- numbers ----------------------------------------------------------------------------------


def _finite(value: float | None) -> TypeGuard[float]:
    return value is not None and math.isfinite(value)


def _pct(value: float | None) -> str:
    return f"{value:.1%}" if _finite(value) else "n/a"


def _pp(value: float | None) -> str:
    """Return a difference of rates in percentage points."""
    return f"{100 * value:+.1f} pp" if _finite(value) else "n/a"


def _ratio(value: float | None) -> str:
    return f"{value:.2f}×" if _finite(value) else "n/a"


def _fixed(value: float | None, digits: int = 2) -> str:
    return f"{value:,.{digits}f}" if _finite(value) else "n/a"


def _fixed1(value: float | None) -> str:
    return _fixed(value, 1)


def _fixed3(value: float | None) -> str:
    return _fixed(value, 3)


def _count(value: int) -> str:
    return f"{value:,}"


def _money(value: float) -> str:
    return _fixed(value, 0)


def _correlation(value: float | None) -> str:
    return "not known" if value is None else _fixed(value)


def _interval(bounds: tuple[float, float] | None) -> str:
    return "n/a" if bounds is None else f"{bounds[0]:,.1f} – {bounds[1]:,.1f}"


def _json_ready(value: Any) -> Any:
    """Return `value` with numpy scalars as Python numbers, tuples as lists, NaN/inf as None."""
    if isinstance(value, Mapping):
        return {str(key): _json_ready(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_ready(item) for item in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# -- plots ------------------------------------------------------------------------------------


def _figure(width: float = 6.0, height: float = 4.2) -> tuple[Figure, Axes]:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)  # the Agg canvas, explicitly: no GUI backend, no pyplot state
    return fig, fig.add_subplot()


def _save(fig: Figure, path: Path) -> None:
    # No Software/version text in the PNG: the same report gives the same bytes.
    fig.savefig(path, format="png", dpi=110, metadata={"Software": None})


def _finish(ax: Axes, title: str, xlabel: str, ylabel: str) -> None:
    ax.set_title(title, fontsize=10, loc="left")
    ax.set_xlabel(xlabel, fontsize=9)
    ax.set_ylabel(ylabel, fontsize=9)
    ax.tick_params(labelsize=8)
    ax.grid(color="#eee")
    ax.set_axisbelow(True)


def _roc_plot(
    curves: Mapping[str, _Curves], models: Mapping[str, TrainedModel], path: Path
) -> None:
    """Draw both ROC curves, the diagonal, and the fused model's KS gap as a dashed segment."""
    fig, ax = _figure()
    for kind, title, colour in _MODELS:
        c, ev = curves[kind], models[kind].evaluation
        ax.plot(
            c.fpr,
            c.tpr,
            color=colour,
            linewidth=1.6,
            label=f"{title}: AUC {ev.auc:.3f}, KS {ev.ks:.3f}",
        )
    fused = curves["fused"]
    at = int(np.argmax(fused.tpr - fused.fpr))
    ax.plot(
        [fused.fpr[at]] * 2,
        [fused.fpr[at], fused.tpr[at]],
        color=_FUSED_COLOUR,
        linestyle="--",
        linewidth=1,
    )
    ax.plot([0, 1], [0, 1], color="#999", linestyle=":", linewidth=1, label="random")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(loc="lower right", fontsize=8)
    _finish(ax, "ROC, held-out customers", "False positive rate", "True positive rate")
    _save(fig, path)


def _pr_plot(
    curves: Mapping[str, _Curves],
    models: Mapping[str, TrainedModel],
    y: IntArray,
    path: Path,
) -> None:
    """Draw both precision-recall curves and the open rate a random order achieves."""
    fig, ax = _figure()
    for kind, title, colour in _MODELS:
        c = curves[kind]
        ax.plot(
            c.recall,
            c.precision,
            color=colour,
            linewidth=1.6,
            label=f"{title}: PR-AUC {models[kind].evaluation.pr_auc:.3f}",
        )
    ax.axhline(float(np.mean(y)), color="#999", linestyle=":", linewidth=1, label="random")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.legend(loc="upper right", fontsize=8)
    _finish(
        ax,
        "Precision-recall, held-out customers",
        "Recall (share of openers found)",
        "Precision (open rate of the list)",
    )
    _save(fig, path)


def _gains_plot(models: Mapping[str, TrainedModel], path: Path) -> None:
    """Draw cumulative gains by decile for both models against the random diagonal."""
    fig, ax = _figure()
    for kind, title, colour in _MODELS:
        gains = models[kind].evaluation.gains
        share = np.r_[0.0, gains["cum_customers"].to_numpy() / models[kind].evaluation.rows]
        ax.plot(
            share,
            np.r_[0.0, gains["cum_gains"].to_numpy()],
            marker="o",
            markersize=3,
            color=colour,
            label=title,
        )
    ax.plot([0, 1], [0, 1], color="#999", linestyle=":", linewidth=1, label="random")
    ax.xaxis.set_major_formatter(PercentFormatter(1.0))
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.legend(loc="lower right", fontsize=8)
    _finish(ax, "Cumulative gains", "Customers contacted (by score)", "Openers found")
    _save(fig, path)


def _lift_plot(models: Mapping[str, TrainedModel], path: Path) -> None:
    """Draw lift by decile as paired bars, with the lift of 1 a random list has."""
    fig, ax = _figure()
    for offset, (kind, title, colour) in zip((-0.2, 0.2), _MODELS, strict=True):
        gains = models[kind].evaluation.gains
        lift = gains["lift"].fill_null(0.0).to_numpy()
        ax.bar(gains["decile"].to_numpy() + offset, lift, width=0.4, color=colour, label=title)
    ax.axhline(1.0, color="#333", linestyle="--", linewidth=1)
    ax.set_xticks(range(1, 11))
    ax.legend(loc="upper right", fontsize=8)
    _finish(ax, "Lift by decile (1 = highest scores)", "Decile", "Open rate / overall rate")
    _save(fig, path)


def _calibration_plot(models: Mapping[str, TrainedModel], path: Path) -> None:
    """Draw observed against mean predicted rates per bin; marker area follows the customers."""
    fig, ax = _figure()
    top = 0.0
    for kind, title, colour in _MODELS:
        cal = models[kind].evaluation.calibration
        predicted, observed = cal["mean_predicted"].to_numpy(), cal["observed_rate"].to_numpy()
        size = 12 + 120 * cal["customers"].to_numpy() / max(int(cal["customers"].sum()), 1)
        ax.plot(predicted, observed, color=colour, linewidth=1)
        ax.scatter(predicted, observed, s=size, color=colour, label=title, zorder=3)
        top = max(top, float(predicted.max()), float(observed.max()))
    top = min(1.0, top * 1.1 + 0.01)
    ax.plot([0, top], [0, top], color="#999", linestyle=":", linewidth=1, label="perfect")
    ax.set_xlim(0, top)
    ax.set_ylim(0, top)
    ax.xaxis.set_major_formatter(PercentFormatter(1.0))
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.legend(loc="upper left", fontsize=8)
    _finish(
        ax, "Calibration, held-out customers", "Mean predicted probability", "Observed open rate"
    )
    _save(fig, path)


def _importance_plot(frame: pl.DataFrame, title: str, colour: str, path: Path) -> None:
    """Draw gain share per input as horizontal bars, the largest on top."""
    labels = [textwrap.shorten(label, 60, placeholder="…") for label in frame["label"]]
    fig, ax = _figure(8.0, 1.2 + 0.3 * max(len(labels), 2))
    positions = np.arange(len(labels))
    ax.barh(positions, frame["gain_share"].to_numpy(), color=colour, height=0.7)
    ax.set_yticks(positions, labels, fontsize=8)
    ax.invert_yaxis()
    ax.xaxis.set_major_formatter(PercentFormatter(1.0))
    _finish(ax, title, "Share of the model's total gain", "")
    ax.grid(axis="y", visible=False)
    _save(fig, path)


def _rescue_plot(
    rates: FloatArray, low: FloatArray, high: FloatArray, share: float, path: Path
) -> None:
    """Draw the rescued and control response rates as bars with 95% Wilson error bars."""
    fig, ax = _figure(5.5, 3.8)
    labels = [f"rescued\n(top {share:.0%} of pool)", "random control\n(from pool)"]
    errors = np.vstack([rates - low, high - rates])
    ax.bar([0, 1], rates, yerr=errors, capsize=6, width=0.6, color=[_FUSED_COLOUR, _CONTROL_COLOUR])
    for x, rate in enumerate(rates):
        ax.text(x + 0.32, rate, f"{rate:.1%}", va="center", fontsize=9)
    ax.set_xticks([0, 1], labels)
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    _finish(ax, "Response in the rejected pool, with 95% intervals", "", "Response rate")
    ax.grid(axis="x", visible=False)
    _save(fig, path)


def _qini_plot(
    curves: Mapping[str, tuple[IntArray, FloatArray]], best: str, share: float, path: Path
) -> None:
    """Draw each learner's Qini curve, the random line, and the targeting budget."""
    fig, ax = _figure(7.0, 4.4)
    for (name, (x, v)), colour in zip(curves.items(), _LEARNER_COLOURS, strict=False):
        width = 2.2 if name == best else 1.2
        ax.plot(
            x / x[-1],
            v,
            color=colour,
            linewidth=width,
            label=f"{name}{' (chosen)' if name == best else ''}",
        )
    x, v = next(iter(curves.values()))
    ax.plot([0, 1], [0, v[-1]], color="#333", linestyle="--", linewidth=1, label="random")
    ax.axvline(share, color="#999", linestyle=":", linewidth=1, label=f"budget: {share:.0%}")
    ax.xaxis.set_major_formatter(PercentFormatter(1.0))
    ax.legend(loc="upper left", fontsize=8)
    _finish(
        ax,
        "Qini curves, held-out campaign",
        "Customers targeted (by predicted uplift)",
        "Incremental responders",
    )
    _save(fig, path)


def _uplift_decile_plot(frame: pl.DataFrame, learner: str, path: Path) -> None:
    """Draw observed uplift per decile of predicted uplift; negative deciles in red."""
    fig, ax = _figure()
    uplift = frame["uplift"].fill_null(0.0).to_numpy()
    colours = np.where(uplift >= 0, _GOOD_COLOUR, _BAD_COLOUR).tolist()
    ax.bar(frame["decile"].to_numpy(), uplift, color=colours, width=0.7)
    ax.axhline(0.0, color="#333", linewidth=0.8)
    ax.set_xticks(range(1, 11))
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    _finish(
        ax,
        f"Observed uplift by decile of predicted uplift ({learner})",
        "Decile (1 = highest predicted uplift)",
        "Response offered − held out",
    )
    _save(fig, path)


def _targeting_plot(targeting: Mapping[str, TargetingResult], path: Path) -> None:
    """Draw incremental conversions per strategy: true (if known) and A/B estimate with CI."""
    fig, ax = _figure(6.0, 3.8)
    names = list(targeting)
    positions = np.arange(len(names), dtype=np.float64)
    true = [targeting[n].true_incremental for n in names]
    if all(v is not None for v in true):
        ax.bar(
            positions - 0.2,
            [float(v or 0.0) for v in true],
            width=0.4,
            color=_FUSED_COLOUR,
            label="true (synthetic world)",
        )
    estimated = [targeting[n].estimated_incremental for n in names]
    if all(v is not None for v in estimated):
        est = np.array([float(v or 0.0) for v in estimated])
        ci = np.array(
            [targeting[n].estimated_ci or (v, v) for n, v in zip(names, est, strict=True)]
        )
        errors = np.vstack([est - ci[:, 0], ci[:, 1] - est])
        ax.bar(
            positions + 0.2,
            est,
            yerr=errors,
            capsize=5,
            width=0.4,
            color=_CONTROL_COLOUR,
            label="A/B estimate, 95% CI",
        )
    ax.axhline(0.0, color="#333", linewidth=0.8)
    ax.set_xticks(positions, [f"by {n}" for n in names])
    ax.legend(loc="upper right", fontsize=8)
    contacts = next(iter(targeting.values())).contacts
    _finish(ax, f"Incremental conversions at {contacts:,} contacts", "", "Conversions")
    ax.grid(axis="x", visible=False)
    _save(fig, path)


def _heatmap(grid: _Grid, path: Path) -> None:
    """Draw a value x demand heatmap; a suppressed cell is blank grey and says so."""
    fig, ax = _figure(6.4, 4.2)
    shown = np.ma.masked_array(np.nan_to_num(grid.values), mask=grid.hidden)
    colours = colormaps[grid.colours].with_extremes(bad="#eeeeee")
    image = ax.imshow(shown, cmap=colours, aspect="auto", vmin=0.0)
    top = float(shown.max()) if shown.count() else 0.0
    for (i, j), hidden in np.ndenumerate(grid.hidden):
        dark = not hidden and grid.values[i, j] > 0.6 * top
        ax.text(j, i, "suppressed" if hidden else grid.text(i, j), ha="center", va="center",
                fontsize=7 if hidden else 8,
                color="#888" if hidden else ("white" if dark else "#222"))  # fmt: skip
    ax.set_xticks(range(len(_DEMAND_GROUPS)), [g.replace("deciles ", "D") for g in _DEMAND_GROUPS])
    ax.set_yticks(range(len(_TIERS)), list(_TIERS))
    bar = fig.colorbar(image, ax=ax, shrink=0.8)
    if grid.percent:
        bar.ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    _finish(ax, grid.title, "Predicted demand (fused score decile, 1 = highest)", "Customer value")
    ax.grid(visible=False)
    _save(fig, path)
