"""Monitoring's checks on the store: the vendor's batch against the previous one, and campaigns'
realised outcomes against the training figures (`fusion.monitoring` holds the thresholds).

Vendor drift compares the newest loaded batch a snapshot can use (salt epoch, created by the end
of the snapshot date: the one the match picks) with the loaded batch before it:

    match rate        matched / customers of the snapshot's match run against the previous
                      snapshot's (a change in points)
    tag coverage      the share of the batch's users with at least one interest tag
    tags per user     the mean number of tags of those users
    penetration       per app category, the share of the batch's users with an app of it

The last three are judged by their relative change, after / before - 1; a category under
`min_penetration` in both batches is reported but not judged. A category whose apps are gone
falls to 0: a change of -100%.

Realised performance reads the campaigns whose audience is a scoring model's list (acquisition or
rescue): their control customers were not contacted, so their success rate in each of the
model's deciles should be what the training population's label rate was in that decile. The
check sums the training rates over the controls' deciles (the expected successes E), counts the
successes observed (O), and tests O against E with the normal approximation to the sum of the
controls' Bernoulli outcomes, var = sum p_d (1 - p_d) n_d. It warns or alerts on |O / E - 1| only
when that test rejects at `significance`: a small control says little either way.

A control customer's decile is its assignment stratum. An audience of the model's `deciles` is
stratified by the model's own deciles; an audience of its `top_share` s (or of its whole
ranking, s = 1) by deciles of the share taken, so stratum d is the slice ((d - 1) s / 10,
d s / 10] of the model's ranking, and its expected rate is the training rate averaged over
that slice (the training deciles are tenths of the same ranking).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time
from typing import Any

from scipy import stats

from fusion.monitoring import ModelProfile, MonitorSettings, Stability, Status, worst
from fusion.store import Store

__all__ = [
    "Drift",
    "MonitoringResult",
    "Realised",
    "realised_performance",
    "vendor_drift",
]


@dataclass(frozen=True)
class Drift:
    """One vendor figure, in the batch before and in the current one, and its verdict."""

    metric: str  # "match rate", "tag coverage", "tags per user", "penetration: <category>"
    before: float | None
    after: float | None
    change: float | None  # points for the match rate, else after / before - 1
    status: Status
    detail: str  # what was compared (batch ids, snapshot dates)


@dataclass(frozen=True)
class _Batch:
    batch_id: str
    taxonomy_version: str
    users: int
    tagged: int
    tags: int


_BATCHES_SQL = """
SELECT batch_id, taxonomy_version FROM batches
WHERE status = 'loaded' AND salt_epoch = ? AND created_at <= ?
ORDER BY created_at DESC, finished_at DESC, batch_id DESC
LIMIT 2
"""
_TAGS_SQL = """
SELECT count(*), count(*) FILTER (len(tag_ids) > 0), coalesce(sum(len(tag_ids)), 0)
FROM vendor_tags WHERE batch_id = ?
"""
_USERS_SQL = "SELECT count(*) FROM vendor_apps WHERE batch_id = ?"
# Users per category: each user's apps mapped to categories, a category counted once a user.
_PENETRATION_SQL = """
SELECT c.name, count(DISTINCT u.key)
FROM (SELECT key, unnest(app_ids) AS app_id FROM vendor_apps WHERE batch_id = $batch) AS u
JOIN tax_apps AS a ON a.app_id = u.app_id AND a.taxonomy_version = $taxonomy
JOIN tax_categories AS c
  ON c.category_id = a.category_id AND c.taxonomy_version = a.taxonomy_version
GROUP BY c.name
"""
_CATEGORIES_SQL = "SELECT name FROM tax_categories WHERE taxonomy_version = ? ORDER BY category_id"
_MATCH_RUN_SQL = """
SELECT snapshot_date, customers, matched FROM match_runs
WHERE snapshot_date {op} ? ORDER BY snapshot_date DESC, finished_at DESC LIMIT 1
"""


def _batch(store: Store, batch_id: str, taxonomy_version: str) -> _Batch:
    users = store.execute(_USERS_SQL, [batch_id]).fetchone()
    tags = store.execute(_TAGS_SQL, [batch_id]).fetchone()
    return _Batch(
        batch_id,
        taxonomy_version,
        int(users[0]) if users else 0,
        int(tags[1]) if tags else 0,
        int(tags[2]) if tags else 0,
    )


def _penetration(store: Store, batch: _Batch) -> dict[str, float]:
    if batch.users == 0:
        return {}
    rows = store.execute(
        _PENETRATION_SQL, {"batch": batch.batch_id, "taxonomy": batch.taxonomy_version}
    ).fetchall()
    names = [str(r[0]) for r in store.execute(_CATEGORIES_SQL, [batch.taxonomy_version]).fetchall()]
    found = {str(name): int(n) / batch.users for name, n in rows}
    return {name: found.get(name, 0.0) for name in names}


def _relative(before: float | None, after: float | None) -> float | None:
    if before is None or after is None or before <= 0:
        return None
    return after / before - 1.0


def _judged_relative(
    metric: str,
    before: float | None,
    after: float | None,
    settings: MonitorSettings,
    detail: str,
    *,
    floor: float = 0.0,
) -> Drift:
    change = _relative(before, after)
    thin = max(before or 0.0, after or 0.0) < floor
    status = (
        Status.OK
        if thin or change is None
        else settings.judge(abs(change), settings.relative_warn, settings.relative_alert)
    )
    return Drift(metric, before, after, change, status, detail)


def _match_rate(store: Store, snapshot_date: date, settings: MonitorSettings) -> Drift | None:
    now = store.execute(_MATCH_RUN_SQL.format(op="="), [snapshot_date]).fetchone()
    if now is None:
        return None
    before = store.execute(_MATCH_RUN_SQL.format(op="<"), [snapshot_date]).fetchone()
    after_rate = int(now[2]) / int(now[1]) if now[1] else None
    before_rate = int(before[2]) / int(before[1]) if before and before[1] else None
    change = None if before_rate is None or after_rate is None else after_rate - before_rate
    status = settings.judge(
        None if change is None else abs(change), settings.match_rate_warn, settings.match_rate_alert
    )
    detail = f"snapshot {snapshot_date}" + (f" against {before[0]}" if before else " (the first)")
    return Drift("match rate", before_rate, after_rate, change, status, detail)


def vendor_drift(
    store: Store, *, snapshot_date: date, salt_epoch: str, settings: MonitorSettings
) -> list[Drift]:
    """Return the vendor checks of a snapshot: its match rate, then its batch against the one
    before (none when the snapshot has a single batch to go by)."""
    out: list[Drift] = []
    match_rate = _match_rate(store, snapshot_date, settings)
    if match_rate is not None:
        out.append(match_rate)
    until = datetime.combine(snapshot_date, time.max)
    found = store.execute(_BATCHES_SQL, [salt_epoch, until]).fetchall()
    if len(found) < 2:
        return out
    after, before = (_batch(store, str(b), str(t)) for b, t in found)
    detail = f"batch {after.batch_id} against {before.batch_id}"
    for metric, share in (
        ("tag coverage", lambda b: b.tagged / b.users if b.users else None),
        ("tags per user", lambda b: b.tags / b.tagged if b.tagged else None),
    ):
        out.append(_judged_relative(metric, share(before), share(after), settings, detail))
    old, new = _penetration(store, before), _penetration(store, after)
    for name in sorted(set(old) | set(new), key=lambda n: (list(new) + list(old)).index(n)):
        out.append(
            _judged_relative(
                f"penetration: {name}",
                old.get(name),
                new.get(name),
                settings,
                detail,
                floor=settings.min_penetration,
            )
        )
    return out


# --- realised performance -----------------------------------------------------------------------


@dataclass(frozen=True)
class Realised:
    """A campaign's control customers: observed successes against the training expectation."""

    campaign: str
    model: str
    event: str
    control: int  # control customers with a model decile
    observed: int
    expected: float
    ratio: float | None  # observed / expected
    p_value: float | None
    status: Status


_CONTROLS_SQL = """
SELECT a.decile, count(*) AS n,
       count(*) FILTER (a.customer_id IN (
           SELECT customer_id FROM outcome_events WHERE campaign_id = $campaign AND event = $event
       )) AS successes
FROM assignments AS a
WHERE a.campaign_id = $campaign AND a.arm = 'control' AND a.decile IS NOT NULL
GROUP BY a.decile ORDER BY a.decile
"""


def _model_audience(declaration: Mapping[str, Any]) -> tuple[str, str, float | None] | None:
    """Return (model, success event, share) of a campaign whose audience is a scoring model's
    list; share is None when the audience names the model's deciles (its strata are those
    deciles), else the top share of the ranking it took (its strata are deciles of that)."""
    audience = declaration.get("audience") or {}
    model = audience.get("model") if audience.get("source") == "model" else None
    if model not in ("acquisition", "rescue"):
        return None
    event = str((declaration.get("objective") or {}).get("event", "converted"))
    share = None if audience.get("deciles") is not None else audience.get("top_share") or 1.0
    return str(model), event, None if share is None else float(share)


def _stratum_rates(rates: Sequence[float | None], share: float | None) -> tuple[float | None, ...]:
    """Return the training rate of each assignment stratum 1-10 (see the module docstring)."""
    if share is None:
        return tuple(rates)
    out: list[float | None] = []
    for d in range(1, 11):
        low, high = (d - 1) * share / 10, d * share / 10
        overlap = [max(0.0, min(high, k / 10) - max(low, (k - 1) / 10)) for k in range(1, 11)]
        if any(w > 0 and rates[k] is None for k, w in enumerate(overlap)):
            out.append(None)
            continue
        total = sum(overlap)
        out.append(sum(w * float(rates[k] or 0.0) for k, w in enumerate(overlap)) / total)
    return tuple(out)


def _judge_realised(
    campaign: str,
    model: str,
    event: str,
    deciles: Sequence[tuple[int, int, int]],
    rates: Sequence[float | None],
    settings: MonitorSettings,
) -> Realised | None:
    usable = [(d, n, s) for d, n, s in deciles if 1 <= d <= 10 and rates[d - 1] is not None]
    control = sum(n for _, n, _ in usable)
    if control == 0:
        return None
    observed = sum(s for _, _, s in usable)
    expected = sum(n * float(rates[d - 1] or 0.0) for d, n, _ in usable)
    variance = sum(
        n * float(rates[d - 1] or 0.0) * (1 - float(rates[d - 1] or 0.0)) for d, n, _ in usable
    )
    ratio = observed / expected if expected > 0 else None
    p_value = (
        float(2 * stats.norm.sf(abs(observed - expected) / math.sqrt(variance)))
        if variance > 0
        else None
    )
    significant = p_value is not None and p_value < settings.significance
    status = (
        settings.judge(abs(ratio - 1.0), settings.relative_warn, settings.relative_alert)
        if significant and ratio is not None and control >= settings.min_customers
        else Status.OK
    )
    return Realised(campaign, model, event, control, observed, expected, ratio, p_value, status)


def realised_performance(
    store: Store, profiles: Mapping[str, ModelProfile], *, settings: MonitorSettings
) -> list[Realised]:
    """Return the realised-performance check of every campaign chosen from a scoring model's
    list that has control customers (see the module docstring)."""
    out: list[Realised] = []
    for campaign_id, declared in store.execute(
        "SELECT campaign_id, declaration FROM campaigns ORDER BY campaign_id"
    ).fetchall():
        chosen = _model_audience(json.loads(declared))
        if chosen is None or chosen[0] not in profiles:
            continue
        model, event, share = chosen
        if profiles[model].decile_rates is None:
            continue
        rates = _stratum_rates(profiles[model].decile_rates or (), share)
        rows = store.execute(_CONTROLS_SQL, {"campaign": campaign_id, "event": event}).fetchall()
        judged = _judge_realised(
            str(campaign_id),
            model,
            event,
            [(int(d), int(n), int(s)) for d, n, s in rows],
            rates,
            settings,
        )
        if judged is not None:
            out.append(judged)
    return out


# --- the result of every check -----------------------------------------------------------------


@dataclass(frozen=True)
class MonitoringResult:
    """Every check of one snapshot, and the thresholds they were judged by."""

    snapshot_date: date
    computed_at: datetime
    settings: MonitorSettings
    models: dict[str, str]  # monitored model -> version
    stability: tuple[Stability, ...]
    vendor: tuple[Drift, ...]
    realised: tuple[Realised, ...]

    @property
    def status(self) -> Status:
        """Return the worst verdict of every check."""
        statuses = [s.status for s in self.stability] + [d.status for d in self.vendor]
        return worst([*statuses, *(r.status for r in self.realised)])

    def findings(self, status: Status) -> list[str]:
        """Return one line per check with exactly `status`, the worst first within a section."""
        lines = [
            f"{s.model} {'score PSI' if s.kind == 'score' else 'CSI of ' + s.name} = {s.index:.3f}"
            for s in sorted(self.stability, key=lambda s: -s.index)
            if s.status is status
        ]
        lines += [
            f"vendor {d.metric}: {_figure(d.before)} -> {_figure(d.after)} ({d.detail})"
            for d in self.vendor
            if d.status is status
        ]
        lines += [
            f"campaign {r.campaign} ({r.model}) control successes {r.observed} against "
            f"{r.expected:.1f} expected from training (p = {r.p_value:.3g})"
            for r in self.realised
            if r.status is status and r.p_value is not None
        ]
        return lines

    def summary(self) -> dict[str, Any]:
        """Return the headline figures as JSON-ready values (what /metrics and cron read)."""
        scores = {s.model: s for s in self.stability if s.kind == "score"}
        features: dict[str, list[Stability]] = {}
        for s in self.stability:
            if s.kind == "feature":
                features.setdefault(s.model, []).append(s)
        return {
            "snapshot_date": self.snapshot_date.isoformat(),
            "computed_at": self.computed_at.isoformat(),
            "status": self.status.value,
            "alerts": len(self.findings(Status.ALERT)),
            "warnings": len(self.findings(Status.WARN)),
            "settings": self.settings.to_dict(),
            "models": {
                name: {
                    "version": version,
                    "score_psi": scores[name].index if name in scores else None,
                    "max_csi": max((f.index for f in features.get(name, [])), default=None),
                    "features_alerting": sum(
                        f.status is Status.ALERT for f in features.get(name, [])
                    ),
                }
                for name, version in self.models.items()
            },
            "vendor": [
                {"metric": d.metric, "before": d.before, "after": d.after, "status": d.status}
                for d in self.vendor
            ],
            "realised": [
                {"campaign": r.campaign, "model": r.model, "ratio": r.ratio, "status": r.status}
                for r in self.realised
            ],
        }


def _figure(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3g}"
