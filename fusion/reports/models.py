"""The model report: one plain HTML page with PNG plots, and its numbers as JSON.

`write_model_report` turns a `fusion.training.TrainingRun` (acquisition in-bank and fused,
rescue, uplift) and the fused model's score frame into files a marketer can open from a shared
folder: no JavaScript, no web fonts, nothing fetched. It opens with the acceptance checks, pass
or fail against the targets of the business case, then shows each model's held-out evidence
(`fusion.reports.model_sections`), and ends with the value x demand matrix a bank turns into
call lists (`fusion.reports.value_demand`).

Every figure is an aggregate: no customer id, phone or ID number is written, and no list.
The value x demand matrix, the one table that cuts the base by customer attributes, is
k-anonymised through `fusion.reports.disclosure`, as the match report is: a cell of fewer than
k customers reads "suppressed", more cells are withheld where the withheld ones could be worked
out from a row, a column or the whole grid, and an open rate is withheld unless its customers,
openers and non-openers all number at least k.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from contracts.errors import ConfigError
from fusion.features import FeatureSet
from fusion.models.targeting import TargetingResult
from fusion.reports.disclosure import DEFAULT_K, check_k
from fusion.reports.html import (
    Column,
    Section,
    count,
    document,
    fixed3,
    headline,
    is_finite,
    percent,
    points,
    records_table,
    row_header,
    table,
    text_cell,
    times,
)
from fusion.reports.model_sections import acquisition_section, rescue_section, uplift_section
from fusion.reports.value_demand import value_demand_section
from fusion.training import ScenarioRun, TrainingRun
from matcher.atomic import write_atomic

__all__ = ["REPORT_FILE", "SUMMARY_FILE", "Targets", "write_model_report"]

REPORT_FILE = "model_report.html"
SUMMARY_FILE = "model_summary.json"


@dataclass(frozen=True, kw_only=True)
class Targets:
    """The business case's acceptance targets the report marks pass or fail."""

    auc_gain: float = 0.04  # fused AUC minus in-bank AUC, at least
    in_bank_auc: tuple[float, float] = (0.78, 0.86)  # the real case's in-bank model sat here
    rescue_ratio: float = 3.0  # rescued top-10% response over the random control, at least
    uplift_ratio: float = 1.2  # incremental conversions, uplift over response targeting


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
    scenarios: Sequence[ScenarioRun] = (),
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
        scenarios: more objectives' in-bank and fused models (`fusion.training.train_scenario`):
            one row each, the fused gain with DeLong's interval.
    """
    check_k(k)
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
        "acquisition": acquisition_section(run, features, out_dir),
        "rescue": rescue_section(run, out_dir),
        "uplift": uplift_section(run, features, campaign, out_dir),
        "value_demand": value_demand_section(run, features, scores, out_dir, k),
        "scenarios": _scenario_section(run, scenarios),
    }
    content = {
        **summary,
        "acceptance": [asdict(c) for c in checks],
        "report": {name: section.data for name, section in sections.items()},
    }
    text = json.dumps(_json_ready(content), indent=2, allow_nan=False)
    write_atomic(out_dir / SUMMARY_FILE, text + "\n")
    page = _page(run, summary, checks, sections, scores, k)
    return write_atomic(out_dir / REPORT_FILE, page)  # last and whole: its plots are already there


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
            f"{times(ratio)} (95% CI {times(test.ratio_ci_low)} – {times(test.ratio_ci_high)});"
            f" {rescue.rescued_rate:.1%} vs {rescue.control_rate:.1%}, difference "
            f"{points(test.diff)} (95% CI {points(test.ci_low)} – {points(test.ci_high)})",
            ratio,
            _at_least(ratio, targets.rescue_ratio),
        ),
        _Check(
            f"Incremental conversions targeting {target_share:.0%} by uplift vs by response score",
            f"≥ {targets.uplift_ratio:.1f}×",
            f"{times(uplift.ratio)} ({uplift.incremental_conversions:,.1f} vs "
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
        _Check(
            "Targeting by uplift supported by the data (cross-fitted Qini, learner choice)",
            "interval above 0",
            run.uplift.verdict,
            run.uplift.selection.scores[run.uplift.best].ci_low,
            run.uplift.supported,
        ),
    ]


def _at_least(value: float | None, target: float) -> bool | None:
    """Return value >= target; None when the value is unknown or infinite (not judged)."""
    return value >= target if is_finite(value) else None


def _source(result: TargetingResult) -> str:
    if result.true_incremental is not None:
        return "true uplift of the synthetic world"
    return "estimated on the held-out A/B test"


def _page(
    run: TrainingRun,
    summary: Mapping[str, Any],
    checks: Sequence[_Check],
    sections: Mapping[str, Section],
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
        f'<p class="meta">Models: {versions}</p>',
        _privacy(k),
        "<h2>Acceptance</h2>",
        '<div class="headline">',
        headline("Checks passed", f"{passed} of {judged}"),
        headline("Fused AUC", f"{fused.auc:.3f}", f"in-bank {in_bank.auc:.3f}"),
        headline("Rescue vs control", times(run.rescue.test.ratio)),
        headline("Uplift vs response", times(run.uplift.targeting["uplift"].ratio)),
        headline("Customers scored", f"{scores.height:,}"),
        "</div>",
        _acceptance_table(checks),
        _how_to_read(),
        *sections["acquisition"].html,
        *sections["rescue"].html,
        *sections["uplift"].html,
        *sections["scenarios"].html,
        *sections["value_demand"].html,
        "<h2>Files</h2>",
        f"<p>Every number of this page, and the run's own summary, as JSON: "
        f"<code>{SUMMARY_FILE}</code> (withheld cells are null).</p>",
    ]
    return document(title, parts)


def _ci(low: float | None, high: float | None) -> str:
    return "n/a" if low is None or high is None else f"{low:+.3f} – {high:+.3f}"


def _scenario_section(run: TrainingRun, scenarios: Sequence[ScenarioRun]) -> Section:
    """Return the per-scenario table: in-bank and fused AUC on the same held-out rows."""
    mobile = run.summary()["acquisition"]
    records = [
        {
            "scenario": "mobile-banking",
            "population": mobile["fused"]["rows"],
            "label_rate": mobile["fused"]["positives"] / max(mobile["fused"]["rows"], 1),
            "test_rows": mobile["fused"]["rows"],
            "in_bank_auc": mobile["in_bank"]["auc"],
            "fused_auc": mobile["fused"]["auc"],
            "auc_gain": mobile["auc_gain"],
            "auc_gain_ci": mobile["auc_gain_ci"],
            "auc_gain_p_value": mobile["auc_gain_p_value"],
        },
        *(s.summary() for s in scenarios),
    ]
    for record in records:
        record["ci"] = _ci(*record["auc_gain_ci"])
    columns = [
        Column("scenario", "Scenario", str),
        Column("test_rows", "Held-out rows", count),
        Column("label_rate", "Label rate (held out / population)", percent),
        Column("in_bank_auc", "In-bank AUC", fixed3),
        Column("fused_auc", "Fused AUC", fixed3),
        Column("auc_gain", "Fused gain", lambda v: f"{v:+.3f}" if is_finite(v) else "n/a"),
        Column("ci", "95% DeLong CI", str, numeric=False),
    ]
    html_parts = [
        "<h2>Scenarios: fused against in-bank</h2>",
        "<p>One model per objective, each judged on its own population's held-out customers; "
        "both models of a row score the same customers, so the gain's interval is DeLong's "
        "paired one. The mobile-banking row is the acquisition model above.</p>",
        records_table(records, columns, name="scenarios"),
    ]
    return Section(html_parts, {"scenarios": records})


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
        rows.append([row_header(check.name), text_cell(check.target), text_cell(check.value), mark])
    return table(["Check", "Target", "Measured", "Result"], rows, name="acceptance")


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
