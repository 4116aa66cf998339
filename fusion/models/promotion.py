"""Moving a model's CURRENT: promotion through the champion/challenger gate, and rollback.

A training run registers each new version as a challenger (the very first version of a model
becomes CURRENT: there is nothing to beat). `promote_version` scores the challenger and the
champion (the CURRENT version) on the challenger's held-out customers - the split is fixed per
customer id, so neither trained on them - and moves CURRENT only when the gate passes
(`fusion.models.champion`), or when the caller overrides it with a written reason.
`rollback_version` moves CURRENT back to the version it replaced (or a named one), with a reason.

Every request, moved or refused, is one row of the store's `model_promotions` table: model,
action, from and to versions, whether the gate passed, override, actor, reason, the judgement
(both metrics, the difference and its interval) and the time. The row and the move of CURRENT
happen in one store transaction: a move that fails leaves no row, and a row that fails to commit
leaves CURRENT where it was.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import numpy as np
import polars as pl

from contracts.errors import ConfigError, ModelError
from fusion.features import FeatureSet
from fusion.models.champion import GateRule, Judgement, judge_scores, judge_uplift
from fusion.models.classifier import ScoreModel
from fusion.models.design import design_matrix
from fusion.registry import Holdout, Registry, UpliftArtifact
from fusion.store import Store

__all__ = [
    "MIN_REASON",
    "Decision",
    "judge_versions",
    "promote_version",
    "promotion_log",
    "rollback_version",
]

MIN_REASON = 10  # characters of a written reason (override, rollback)
_COLUMNS = (
    "promotion_id", "model", "action", "from_version", "to_version", "moved", "passed",
    "override", "actor", "reason", "judgement", "at",
)  # fmt: skip
_INSERT = (
    "INSERT INTO model_promotions (promotion_id, model, action, from_version, to_version, "
    'moved, passed, override, actor, reason, judgement, "at") '
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_SELECT = (
    "SELECT promotion_id, model, action, from_version, to_version, moved, passed, override, "
    'actor, reason, judgement, "at" FROM model_promotions WHERE ? IS NULL OR model = ? '
    'ORDER BY "at", promotion_id'
)


@dataclass(frozen=True)
class Decision:
    """What became of a promotion or rollback request (also its row of `model_promotions`)."""

    model: str
    action: Literal["promote", "rollback"]
    from_version: str | None
    to_version: str
    moved: bool
    judgement: Judgement | None
    override: bool
    actor: str
    reason: str
    at: datetime

    @property
    def passed(self) -> bool | None:
        """Whether the gate passed; None when no gate was judged."""
        return None if self.judgement is None else self.judgement.passed

    def message(self) -> str:
        """Return what happened in one line a reviewer reads."""
        if self.action == "rollback":
            return f"{self.model}: CURRENT rolled back {self.from_version} -> {self.to_version}"
        verdict = "" if self.judgement is None else f"; {self.judgement.verdict()}"
        if not self.moved:
            return (
                f"{self.model}: {self.to_version} was not promoted{verdict}. Keep the champion, "
                "or override with a written reason (--override --reason TEXT)"
            )
        how = " by override" if self.override and not self.passed else ""
        return f"{self.model}: CURRENT {self.from_version} -> {self.to_version}{how}{verdict}"

    def to_dict(self) -> dict[str, Any]:
        """Return the decision as JSON-ready values."""
        return {
            "model": self.model,
            "action": self.action,
            "from_version": self.from_version,
            "to_version": self.to_version,
            "moved": self.moved,
            "passed": self.passed,
            "override": self.override,
            "actor": self.actor,
            "reason": self.reason,
            "at": self.at.isoformat(),
            "judgement": None if self.judgement is None else self.judgement.to_dict(),
        }


def _holdout_rows(features: FeatureSet, holdout: Holdout) -> pl.DataFrame:
    """Return the holdout's customers found in `features`: feature row, label, treatment."""
    index = features.table.select("customer_id").with_row_index("row")
    frame = pl.DataFrame(
        {
            "customer_id": holdout.customer_id.astype(np.int64),
            "label": holdout.label.astype(np.int64),
            "treatment": (
                np.zeros(len(holdout.label), np.int64)
                if holdout.treatment is None
                else holdout.treatment.astype(np.int64)
            ),
        }
    )
    return frame.join(index, on="customer_id", how="inner", maintain_order="left")


def _predict(model: ScoreModel | UpliftArtifact, features: FeatureSet, rows: Any) -> Any:
    x = design_matrix(features, model.spec, rows)
    return model.predict(x) if isinstance(model, ScoreModel) else model.model.predict(x)


def judge_versions(
    registry: Registry,
    features: FeatureSet,
    name: str,
    challenger: str,
    champion: str,
    *,
    rule: GateRule | None = None,
) -> Judgement:
    """Return the challenger against the champion on the challenger's held-out customers.

    Both versions score those customers' rows of `features` (the challenger's snapshot):
    AUC with DeLong's interval for scoring models, Qini with a paired bootstrap for uplift.
    """
    rule = rule or GateRule()
    holdout = registry.holdout(name, challenger)
    if holdout is None:
        raise ModelError(
            f"model {name} {challenger} has no held-out customers recorded, so no gate can "
            "judge it; retrain it with this version of the platform, or override with a reason",
            model=name,
        )
    rows = _holdout_rows(features, holdout)
    if rows.height < 20:
        raise ModelError(
            f"only {rows.height} of the {len(holdout.label)} held-out customers of {name} "
            f"{challenger} are in the feature table of snapshot "
            f"{features.manifest.snapshot_date}; judge it on the snapshot it was trained on",
            model=name,
        )
    new, old = registry.load(name, challenger), registry.load(name, champion)
    if type(new) is not type(old):
        raise ModelError(
            f"model {name}: {challenger} and {champion} are not the same kind of model (a "
            "scoring and an uplift model); they cannot be compared",
            model=name,
        )
    at = rows["row"].to_numpy()
    a, b = _predict(new, features, at), _predict(old, features, at)
    y = rows["label"].to_numpy()
    if isinstance(new, ScoreModel):
        return judge_scores(y, a, b, rule)
    return judge_uplift(y, rows["treatment"].to_numpy(), a, b, rule)


def _written(reason: str | None, why: str) -> str:
    text = (reason or "").strip()
    if len(text) < MIN_REASON:
        raise ConfigError(
            f"{why} needs a written reason of at least {MIN_REASON} characters; got "
            f"{len(text)}. Say why, e.g. --reason 'challenger judged on the Q4 A/B test'",
            setting="reason",
        )
    return text


def promote_version(
    registry: Registry,
    store: Store,
    features: FeatureSet,
    name: str,
    *,
    actor: str,
    now: datetime,
    version: str | None = None,
    reason: str | None = None,
    override: bool = False,
    rule: GateRule | None = None,
) -> Decision:
    """Return the decision on promoting `version` (default: the newest) of model `name`.

    CURRENT moves when the gate passes, or when `override` with a written `reason`; a refusal
    is recorded too and leaves CURRENT as it was. A model with no CURRENT takes the version
    without a gate (there is no champion).
    """
    written = _written(reason, "an override") if override else (reason or "").strip()
    versions = registry.versions(name)
    target = version or (versions[-1] if versions else None)
    if target is None or target not in versions:
        raise ModelError(
            f"model {name} has no version {target!r}; saved versions: "
            f"{', '.join(versions) or 'none'} (`fusion models list`)",
            model=name,
        )
    champion = registry.current(name)
    if champion == target:
        raise ModelError(
            f"model {name} {target} is already CURRENT; train a challenger first", model=name
        )
    judgement = None
    if champion is not None:
        try:
            judgement = judge_versions(registry, features, name, target, champion, rule=rule)
        except ModelError:
            if not override:
                raise
    moved = champion is None or override or bool(judgement and judgement.passed)
    decision = Decision(
        name, "promote", champion, target, moved, judgement, override, actor, written, now
    )
    _record(registry, store, decision)
    return decision


def rollback_version(
    registry: Registry,
    store: Store,
    name: str,
    *,
    actor: str,
    now: datetime,
    reason: str | None,
    version: str | None = None,
) -> Decision:
    """Return the decision moving CURRENT back to the version it replaced (or `version`)."""
    written = _written(reason, "a rollback")
    current = registry.current(name)
    if current is None:
        raise ModelError(f"model {name} has no CURRENT version to roll back", model=name)
    target = version or _replaced(store, name, current)
    if target is None:
        raise ModelError(
            f"model {name}: no promotion to {current} is recorded, so there is no earlier "
            f"CURRENT to return to; name one with --to VERSION (saved: "
            f"{', '.join(registry.versions(name))})",
            model=name,
        )
    if target == current or target not in registry.versions(name):
        raise ModelError(
            f"model {name}: cannot roll back to {target!r} (CURRENT is {current}; saved: "
            f"{', '.join(registry.versions(name))})",
            model=name,
        )
    decision = Decision(name, "rollback", current, target, True, None, False, actor, written, now)
    _record(registry, store, decision)
    return decision


def _replaced(store: Store, name: str, current: str) -> str | None:
    """Return the version the last move to `current` replaced, from the promotion log."""
    row = store.execute(
        "SELECT from_version FROM model_promotions WHERE model = ? AND to_version = ? AND moved "
        'AND from_version IS NOT NULL ORDER BY "at" DESC, promotion_id LIMIT 1',
        [name, current],
    ).fetchone()
    return None if row is None else str(row[0])


def _record(registry: Registry, store: Store, decision: Decision) -> None:
    """Write the decision's row and, when it moved, CURRENT: both or neither."""
    judgement = None if decision.judgement is None else json.dumps(decision.judgement.to_dict())
    values = [
        uuid.uuid4().hex, decision.model, decision.action, decision.from_version,
        decision.to_version, decision.moved, decision.passed, decision.override, decision.actor,
        decision.reason, judgement, decision.at.astimezone(UTC).replace(tzinfo=None),
    ]  # fmt: skip
    with store.transaction():
        store.execute(_INSERT, values)
        if decision.moved:
            registry.promote(decision.model, decision.to_version)


def promotion_log(store: Store, name: str | None = None) -> list[dict[str, Any]]:
    """Return the recorded promotions and rollbacks (of `name`, or all), oldest first."""
    rows = store.execute(_SELECT, [name, name]).fetchall()
    out = []
    for row in rows:
        record = dict(zip(_COLUMNS, row, strict=True))
        record["judgement"] = json.loads(record["judgement"]) if record["judgement"] else None
        out.append(record)
    return out
