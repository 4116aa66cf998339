"""The model report's figures: ROC, precision-recall, gains, lift, calibration, importance,
rescue, Qini, uplift by decile and targeting, each drawn from held-out aggregates.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import polars as pl
from matplotlib.ticker import PercentFormatter

from fusion.models.acquisition import TrainedModel
from fusion.models.targeting import TargetingResult
from fusion.reports.plots import figure, finish, save

__all__ = [
    "Curves",
    "calibration_plot",
    "gains_plot",
    "importance_plot",
    "lift_plot",
    "pr_plot",
    "qini_plot",
    "rescue_plot",
    "roc_plot",
    "roc_pr_points",
    "targeting_plot",
    "uplift_decile_plot",
]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

FUSED_COLOUR = "#4c72b0"


IN_BANK_COLOUR = "#dd8452"


CONTROL_COLOUR = "#8c8c8c"


GOOD_COLOUR = "#55a868"


BAD_COLOUR = "#c44e52"


LEARNER_COLOURS = ("#4c72b0", "#55a868", "#8172b3", "#937860", "#da8bc3")


MODELS = (
    ("fused", "fused (bank + vendor)", FUSED_COLOUR),
    ("in_bank", "in-bank only", IN_BANK_COLOUR),
)


@dataclass(frozen=True)
class Curves:
    """ROC and precision-recall points, one per distinct score (ties never split)."""

    fpr: FloatArray
    tpr: FloatArray
    recall: FloatArray
    precision: FloatArray


def roc_pr_points(y: IntArray, score: FloatArray) -> Curves:
    """Return ROC and PR points of `score` against `y` (one sort, cumulative sums).

    Tie groups end a point as in scikit-learn's `roc_curve`; the ROC curve starts at (0, 0).
    """
    order = np.argsort(-score, kind="stable")
    ends = np.r_[np.flatnonzero(np.diff(score[order])), score.size - 1]
    tp = np.cumsum(y[order])[ends].astype(np.float64)
    fp = (ends + 1) - tp
    n_pos, n_neg = max(float(y.sum()), 1.0), max(float(y.size - y.sum()), 1.0)
    return Curves(
        fpr=np.r_[0.0, fp / n_neg],
        tpr=np.r_[0.0, tp / n_pos],
        recall=tp / n_pos,
        precision=tp / (ends + 1),
    )


def roc_plot(curves: Mapping[str, Curves], models: Mapping[str, TrainedModel], path: Path) -> None:
    """Draw both ROC curves, the diagonal, and the fused model's KS gap as a dashed segment."""
    fig, ax = figure()
    for kind, title, colour in MODELS:
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
        color=FUSED_COLOUR,
        linestyle="--",
        linewidth=1,
    )
    ax.plot([0, 1], [0, 1], color="#999", linestyle=":", linewidth=1, label="random")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(loc="lower right", fontsize=8)
    finish(ax, "ROC, held-out customers", "False positive rate", "True positive rate")
    save(fig, path)


def pr_plot(
    curves: Mapping[str, Curves],
    models: Mapping[str, TrainedModel],
    y: IntArray,
    path: Path,
) -> None:
    """Draw both precision-recall curves and the open rate a random order achieves."""
    fig, ax = figure()
    for kind, title, colour in MODELS:
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
    finish(
        ax,
        "Precision-recall, held-out customers",
        "Recall (share of openers found)",
        "Precision (open rate of the list)",
    )
    save(fig, path)


def gains_plot(models: Mapping[str, TrainedModel], path: Path) -> None:
    """Draw cumulative gains by decile for both models against the random diagonal."""
    fig, ax = figure()
    for kind, title, colour in MODELS:
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
    finish(ax, "Cumulative gains", "Customers contacted (by score)", "Openers found")
    save(fig, path)


def lift_plot(models: Mapping[str, TrainedModel], path: Path) -> None:
    """Draw lift by decile as paired bars, with the lift of 1 a random list has."""
    fig, ax = figure()
    for offset, (kind, title, colour) in zip((-0.2, 0.2), MODELS, strict=True):
        gains = models[kind].evaluation.gains
        lift = gains["lift"].fill_null(0.0).to_numpy()
        ax.bar(gains["decile"].to_numpy() + offset, lift, width=0.4, color=colour, label=title)
    ax.axhline(1.0, color="#333", linestyle="--", linewidth=1)
    ax.set_xticks(range(1, 11))
    ax.legend(loc="upper right", fontsize=8)
    finish(ax, "Lift by decile (1 = highest scores)", "Decile", "Open rate / overall rate")
    save(fig, path)


def calibration_plot(models: Mapping[str, TrainedModel], path: Path) -> None:
    """Draw observed against mean predicted rates per bin; marker area follows the customers."""
    fig, ax = figure()
    top = 0.0
    for kind, title, colour in MODELS:
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
    finish(
        ax, "Calibration, held-out customers", "Mean predicted probability", "Observed open rate"
    )
    save(fig, path)


def importance_plot(frame: pl.DataFrame, title: str, colour: str, path: Path) -> None:
    """Draw gain share per input as horizontal bars, the largest on top."""
    labels = [textwrap.shorten(label, 60, placeholder="…") for label in frame["label"]]
    fig, ax = figure(8.0, 1.2 + 0.3 * max(len(labels), 2))
    positions = np.arange(len(labels))
    ax.barh(positions, frame["gain_share"].to_numpy(), color=colour, height=0.7)
    ax.set_yticks(positions, labels, fontsize=8)
    ax.invert_yaxis()
    ax.xaxis.set_major_formatter(PercentFormatter(1.0))
    finish(ax, title, "Share of the model's total gain", "")
    ax.grid(axis="y", visible=False)
    save(fig, path)


def rescue_plot(
    rates: FloatArray, low: FloatArray, high: FloatArray, share: float, path: Path
) -> None:
    """Draw the rescued and control response rates as bars with 95% Wilson error bars."""
    fig, ax = figure(5.5, 3.8)
    labels = [f"rescued\n(top {share:.0%} of pool)", "random control\n(from pool)"]
    errors = np.vstack([rates - low, high - rates])
    ax.bar([0, 1], rates, yerr=errors, capsize=6, width=0.6, color=[FUSED_COLOUR, CONTROL_COLOUR])
    for x, rate in enumerate(rates):
        ax.text(x + 0.32, rate, f"{rate:.1%}", va="center", fontsize=9)
    ax.set_xticks([0, 1], labels)
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    finish(ax, "Response in the rejected pool, with 95% intervals", "", "Response rate")
    ax.grid(axis="x", visible=False)
    save(fig, path)


def qini_plot(
    curves: Mapping[str, tuple[IntArray, FloatArray]], best: str, share: float, path: Path
) -> None:
    """Draw each learner's Qini curve, the random line, and the targeting budget."""
    fig, ax = figure(7.0, 4.4)
    for (name, (x, v)), colour in zip(curves.items(), LEARNER_COLOURS, strict=False):
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
    finish(
        ax,
        "Qini curves, held-out campaign",
        "Customers targeted (by predicted uplift)",
        "Incremental responders",
    )
    save(fig, path)


def uplift_decile_plot(frame: pl.DataFrame, learner: str, path: Path) -> None:
    """Draw observed uplift per decile of predicted uplift; negative deciles in red."""
    fig, ax = figure()
    uplift = frame["uplift"].fill_null(0.0).to_numpy()
    colours = np.where(uplift >= 0, GOOD_COLOUR, BAD_COLOUR).tolist()
    ax.bar(frame["decile"].to_numpy(), uplift, color=colours, width=0.7)
    ax.axhline(0.0, color="#333", linewidth=0.8)
    ax.set_xticks(range(1, 11))
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    finish(
        ax,
        f"Observed uplift by decile of predicted uplift ({learner})",
        "Decile (1 = highest predicted uplift)",
        "Response offered − held out",
    )
    save(fig, path)


def targeting_plot(targeting: Mapping[str, TargetingResult], path: Path) -> None:
    """Draw incremental conversions per strategy: true (if known) and A/B estimate with CI."""
    fig, ax = figure(6.0, 3.8)
    names = list(targeting)
    positions = np.arange(len(names), dtype=np.float64)
    true = [targeting[n].true_incremental for n in names]
    if all(v is not None for v in true):
        ax.bar(
            positions - 0.2,
            [float(v or 0.0) for v in true],
            width=0.4,
            color=FUSED_COLOUR,
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
            color=CONTROL_COLOUR,
            label="A/B estimate, 95% CI",
        )
    ax.axhline(0.0, color="#333", linewidth=0.8)
    ax.set_xticks(positions, [f"by {n}" for n in names])
    ax.legend(loc="upper right", fontsize=8)
    contacts = next(iter(targeting.values())).contacts
    finish(ax, f"Incremental conversions at {contacts:,} contacts", "", "Conversions")
    ax.grid(axis="x", visible=False)
    save(fig, path)
