"""The model report's evidence, one section per model: acquisition, rescue and uplift.

Each section returns its HTML and its JSON-ready tables (`Section`) and writes its plots beside
the page. Every number is an aggregate over held-out customers.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from contracts.errors import ConfigError
from fusion.features import FeatureSet
from fusion.models import metrics
from fusion.models.acquisition import LABEL, TrainedModel
from fusion.models.campaign import UpliftResult, campaign_data
from fusion.models.design import DesignSpec, design_matrix, feature_labels
from fusion.models.proportions import wilson_interval
from fusion.reports.html import (
    Column,
    Section,
    correlation,
    count,
    fixed,
    fixed1,
    fixed3,
    headline,
    interval,
    money,
    number_cell,
    percent,
    points,
    records_table,
    row_header,
    table,
    times,
)
from fusion.reports.model_plots import (
    FUSED_COLOUR,
    IN_BANK_COLOUR,
    MODELS,
    calibration_plot,
    gains_plot,
    importance_plot,
    lift_plot,
    pr_plot,
    qini_plot,
    rescue_plot,
    roc_plot,
    roc_pr_points,
    targeting_plot,
    uplift_decile_plot,
)
from fusion.training import TrainingRun

__all__ = ["acquisition_section", "rescue_section", "uplift_section"]


def acquisition_section(run: TrainingRun, features: FeatureSet, out_dir: Path) -> Section:
    """Return the acquisition section (and write its seven plots)."""
    models = run.acquisition
    same_rows = np.array_equal(models["fused"].test_rows, models["in_bank"].test_rows)
    importance = _acquisition_plots(run, features, out_dir)
    pruning = {kind: _pruning(models[kind], features) for kind, _, _ in MODELS}
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
        *(_gains_table(models[kind], title) for kind, title, _ in MODELS),
        "<h3>Calibration</h3>",
        "<p>Mean predicted probability against the observed open rate, in bins of predicted "
        "probability; on the diagonal, a score of 8% means 8 in 100 open.</p>",
        '<img src="acquisition_calibration.png" alt="Calibration plot of both models">',
        _calibration_table(models["fused"]),
        "<h3>Stable pruning</h3>",
        "<p>Each model keeps only inputs whose share of the gain reaches the threshold in most "
        "resamples of the training rows; an input that helps in one resample and not in the "
        "others carried noise.</p>",
        *(_pruning_html(pruning[kind], title) for kind, title, _ in MODELS),
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
            for kind, _, _ in MODELS
        },
    }
    return Section(parts, data)


def _acquisition_plots(
    run: TrainingRun, features: FeatureSet, out_dir: Path
) -> dict[str, pl.DataFrame]:
    """Draw the acquisition section's seven plots; return each model's input importance."""
    label = features.table[LABEL].fill_null(False).cast(pl.Int64).to_numpy()
    models = run.acquisition
    curves = {
        kind: roc_pr_points(label[models[kind].test_rows], models[kind].test_score)
        for kind, _, _ in MODELS
    }
    roc_plot(curves, models, out_dir / "acquisition_roc.png")
    pr_plot(curves, models, label[models["fused"].test_rows], out_dir / "acquisition_pr.png")
    gains_plot(models, out_dir / "acquisition_gains.png")
    lift_plot(models, out_dir / "acquisition_lift.png")
    calibration_plot(models, out_dir / "acquisition_calibration.png")
    importance = {kind: models[kind].model.importance() for kind, _, _ in MODELS}
    importance_plot(
        importance["fused"].head(20),
        "Fused model: top 20 inputs by gain share",
        FUSED_COLOUR,
        out_dir / "importance_fused.png",
    )
    importance_plot(
        importance["in_bank"].head(10),
        "In-bank model: top 10 inputs by gain share",
        IN_BANK_COLOUR,
        out_dir / "importance_in_bank.png",
    )
    return importance


def _metrics_table(run: TrainingRun) -> str:
    rows = []
    for kind, title, _ in MODELS:
        trained = run.acquisition[kind]
        ev, prune = trained.evaluation, trained.prune
        candidates = len(trained.model.names) + (len(prune.dropped) if prune else 0)
        rows.append(
            [
                row_header(title),
                number_cell(f"{len(trained.model.names)} of {candidates}"),
                number_cell(f"{trained.model.booster.num_boosted_rounds():,}"),
                number_cell(f"{ev.rows:,}"),
                number_cell(f"{ev.positives:,} ({ev.positives / ev.rows:.1%})"),
                number_cell(f"{ev.auc:.3f}"),
                number_cell(f"{ev.ks:.3f}"),
                number_cell(f"{ev.pr_auc:.3f}"),
            ]
        )
    gain = run.acquisition["fused"].evaluation.auc - run.acquisition["in_bank"].evaluation.auc
    return table(
        ["Model", "Inputs kept", "Trees", "Held-out customers", "Openers", "AUC", "KS", "PR-AUC"],
        rows,
        name="acquisition_metrics",
        note=f"AUC gain of the fused model: {gain:+.3f}. KS: largest gap between the shares of "
        "openers and of non-openers above a score cut-off (the dashed segment on the ROC plot). "
        "PR-AUC: average precision; a random score's equals the open rate.",
    )


def _gains_table(trained: TrainedModel, title: str) -> str:
    return f"<h4>{html.escape(title)}</h4>" + records_table(
        trained.evaluation.gains.iter_rows(named=True),
        [
            Column("decile", "Decile"),
            Column("customers", "Customers", count),
            Column("responders", "Openers", count),
            Column("response_rate", "Open rate", percent),
            Column("cum_gains", "Cumulative gains", percent),
            Column("lift", "Lift", fixed),
            Column("cum_lift", "Cum. lift", fixed),
        ],
        name=f"gains_{trained.model.name}",
    )


def _calibration_table(trained: TrainedModel) -> str:
    records = (
        {**r, "range": f"{r['prob_low']:.0%} – {r['prob_high']:.0%}"}
        for r in trained.evaluation.calibration.iter_rows(named=True)
    )
    return records_table(
        records,
        [
            Column("range", "Predicted (fused)"),
            Column("customers", "Customers", count),
            Column("mean_predicted", "Mean predicted", percent),
            Column("observed_rate", "Observed open rate", percent),
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
    listing = records_table(
        dropped,
        [
            Column("feature", "Input", numeric=False),
            Column("label", "Meaning", numeric=False),
            Column("folds", "Folds above threshold"),
            Column("mean_gain_share", "Mean gain share", lambda v: f"{v:.3%}"),
        ],
        name=f"dropped_{title.split()[0]}",
    )
    return f"{head}<details><summary>The {len(dropped)} dropped inputs</summary>{listing}</details>"


def _importance_table(frame: pl.DataFrame, title: str) -> str:
    return f"<h4>{html.escape(title)}</h4>" + records_table(
        ({"rank": i, **r} for i, r in enumerate(frame.iter_rows(named=True), start=1)),
        [
            Column("rank", "Rank"),
            Column("label", "Input", numeric=False),
            Column("feature", "Column", numeric=False),
            Column("gain_share", "Gain share", percent),
        ],
        name=f"importance_{title.split()[0]}",
    )


def rescue_section(run: TrainingRun, out_dir: Path) -> Section:
    """Return the rescue section (and write its bar plot)."""
    rescue = run.rescue
    counts = np.array([rescue.rescued, rescue.control, rescue.pool_test])
    yes = np.array(
        [rescue.rescued_responders, rescue.control_responders, rescue.pool_test_responders]
    )
    low, high = wilson_interval(yes, counts)
    rates = yes / counts
    share = rescue.rescued / rescue.pool_test
    rescue_plot(rates[:2], low[:2], high[:2], share, out_dir / "rescue.png")
    test = rescue.test
    accept = float(rescue.model.model.metadata.get("accept_share", math.nan))
    groups = (
        f"Rescued: top {share:.0%} of the pool by rescue score",
        "Random control from the pool",
        "Whole held-out pool (the control's expected rate)",
    )
    rows = [
        [
            row_header(g),
            number_cell(f"{n:,}"),
            number_cell(f"{y:,}"),
            number_cell(percent(r)),
            number_cell(f"{percent(lo)} – {percent(hi)}"),
        ]
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
        headline("Rescued response", percent(rescue.rescued_rate)),
        headline("Control response", percent(rescue.control_rate)),
        headline(
            "Ratio (95% CI)",
            f"{times(test.ratio)}",
            f"{times(test.ratio_ci_low)} – {times(test.ratio_ci_high)}",
        ),
        headline(
            "Difference (95% CI)",
            points(test.diff),
            f"{points(test.ci_low)} – {points(test.ci_high)}",
        ),
        headline("AUC inside the pool", f"{rescue.model.evaluation.auc:.3f}"),
        "</div>",
        '<img src="rescue.png" alt="Bars: response of the rescued list and of the random control, '
        'with 95% intervals">',
        table(
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
    return Section(parts, data)


def uplift_section(
    run: TrainingRun, features: FeatureSet, campaign: pl.DataFrame, out_dir: Path
) -> Section:
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
    qini_plot(qini, result.best, share, out_dir / "uplift_qini.png")
    by_decile = result.evaluations[result.best].by_decile
    uplift_decile_plot(by_decile, result.best, out_dir / "uplift_by_decile.png")
    targeting_plot(result.targeting, out_dir / "uplift_targeting.png")
    treated = int(t.sum())
    baseline = result.selection.baseline
    parts = [
        "<h2>Uplift: who responds because of the offer</h2>",
        f"<p>Campaign {html.escape(data.campaign_id)}: {len(rows):,} held-out customers "
        f"({treated:,} offered, {len(rows) - treated:,} held out at random). Each learner ranks "
        "them by predicted uplift. The learner was chosen by its cross-fitted Qini over the "
        f"training and validation rows ({result.selection.folds} folds) with its bootstrap "
        "interval"
        + (
            f": {html.escape(baseline)} unless another learner beats it with the paired interval"
            if baseline
            else ""
        )
        + ". The Qini curve counts the incremental responders among the top-ranked customers; "
        "the straight line is a random order.</p>",
        _verdict(result),
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
        *_arms_html(result),
    ]
    section_data = {
        "by_decile": {name: ev.by_decile.to_dicts() for name, ev in result.evaluations.items()},
        "test_customers": len(rows),
        "test_treated": treated,
        "supported": result.supported,
        "targeting_by": result.targeting_by,
        "verdict": result.verdict,
        "arms": {name: arm.summary() for name, arm in result.arms.items()},
    }
    return Section(parts, section_data)


def _verdict(result: UpliftResult) -> str:
    """Return the choice in words; when uplift is unsupported, say so and what is used instead."""
    if result.supported:
        return f"<p><strong>Chosen:</strong> {html.escape(result.verdict)}.</p>"
    return (
        '<p class="fail"><strong>Targeting by uplift is not supported by the data.</strong> '
        f"{html.escape(result.verdict)}. The uplift model ({html.escape(result.best)}) is kept "
        "for the record only: targeting falls back to the response model, and the figures below "
        "show what uplift targeting would have bought on the held-out rows.</p>"
    )


def _bounds(digits: int, scale: float = 1.0) -> Callable[[Any], str]:
    """Return a formatter of an interval (low, high) with `digits` decimals, times `scale`."""

    def show(bounds: Any) -> str:
        if bounds is None:
            return "n/a"
        low, high = bounds
        return f"{low * scale:+.{digits}f} – {high * scale:+.{digits}f}"

    return show


def _arms_html(result: UpliftResult) -> list[str]:
    """Return the several-offer table: each offer's effect and its own model's Qini."""
    if not result.arms:
        return []
    records = [
        {
            "arm": name,
            **arm.summary(),
            "effect_interval": (arm.effect.ci_low, arm.effect.ci_high),
            "qini_interval": arm.qini_ci,
        }
        for name, arm in result.arms.items()
    ]
    return [
        "<h3>Several offers, each against the same control</h3>",
        "<p>Each offer has its own uplift model, fitted on that offer's customers and the "
        f"control's with the chosen learner ({html.escape(result.best)}); the figures are on the "
        "held-out customers of that offer and of the control.</p>",
        records_table(
            records,
            [
                Column("arm", "Offer"),
                Column("treated", "Offered", count),
                Column("control", "Control", count),
                Column("effect", "Effect on response", points),
                Column("effect_interval", "95% CI (Newcombe), pp", _bounds(1, 100.0)),
                Column("qini", "Qini of its model", fixed3),
                Column("qini_interval", "95% CI (bootstrap)", _bounds(3)),
            ],
            name="uplift_arms",
        ),
    ]


def _learner_table(run: TrainingRun) -> str:
    result = run.uplift
    mark = " (chosen)" if result.supported else " (kept, unsupported)"
    return records_table(
        (
            {
                "learner": name + (mark if name == result.best else ""),
                **ev.summary(),
                "cv_interval": ev.cross_fitted_ci,
                "vs": None if ev.vs_baseline is None else ev.vs_baseline[1:],
            }
            for name, ev in result.evaluations.items()
        ),
        [
            Column("learner", "Learner"),
            Column("qini", "Qini", fixed3),
            Column("auuc", "AUUC", fixed3),
            Column("uplift_at_30", "Uplift @30%", points),
            Column("cross_fitted_qini", "Cross-fitted Qini", fixed3),
            Column("cv_interval", "Its interval", _bounds(3)),
            Column("vs", f"Minus {result.selection.baseline or 'baseline'}", _bounds(3)),
            Column("correlation_with_true_uplift", "Corr. with true uplift", correlation),
        ],
        name="uplift_learners",
        note="Qini and AUUC: area above the random line over the perfect model's (1 perfect, "
        "0 random, below 0 worse than random), on held-out rows. Uplift @30%: offered minus "
        "held-out response among the top 30%. Cross-fitted Qini: over the training and "
        "validation rows, each fold ranked by a model that did not see it; it chose the learner. "
        "Intervals: Poisson bootstrap, Bonferroni-corrected over the learners; the difference "
        "from the baseline learner is paired (the same resampled customers). The correlation "
        "needs the true uplift, known only in a synthetic world.",
    )


def _decile_table(frame: pl.DataFrame) -> str:
    return records_table(
        frame.iter_rows(named=True),
        [
            Column("decile", "Decile"),
            Column("n_treatment", "Offered", count),
            Column("n_control", "Held out", count),
            Column("response_rate_treatment", "Response offered", percent),
            Column("response_rate_control", "Response held out", percent),
            Column("uplift", "Uplift", points),
        ],
        name="uplift_by_decile",
    )


def _targeting_table(run: TrainingRun) -> str:
    meta = run.uplift.metadata
    return records_table(
        ({"strategy": f"by {name}", **vars(r)} for name, r in run.uplift.targeting.items()),
        [
            Column("strategy", "Targeting"),
            Column("contacts", "Contacts", count),
            Column("cost", "Cost", money),
            Column("true_incremental", "Incremental (true)", fixed1),
            Column("estimated_incremental", "Incremental (A/B est.)", fixed1),
            Column("estimated_ci", "95% CI (A/B)", interval),
            Column("net_value", "Net value", money),
            Column("roi", "ROI", percent),
            Column("ratio", "vs response", times),
        ],
        name="targeting",
        note=f"Cost {meta.get('cost_per_contact', 0):,.2f} a contact; value "
        f"{meta.get('value_per_conversion', 0):,.2f} an incremental conversion. Net value and ROI "
        "use the true incremental conversions where known, else the A/B estimate.",
    )
