"""Strategies in the store: declared, read back, and moved through their stages with a history.

A strategy is created as a `draft` with a random 32-byte salt that keys its traffic share and its
arms (never shown). While it is a draft, declaring it again replaces the declaration (version +
1); once it has left the draft the declaration is fixed, since its customers' states and touches
were made under it. The stages are the campaigns' (`fusion.campaigns.stages.NEXT_STAGE`):

    draft -> whitelist -> pilot (small traffic) -> ab -> full -> closed   (closed from any)

and each promotion passes a gate (`GateCheck`, `Promoted` of the campaign loop):

    draft -> whitelist   the declaration is stored
    whitelist -> pilot   whitelist_touched: a touch was delivered to a named customer, and
                         whitelist_confirmed: every named customer touched has an exposure event
    pilot -> ab          pilot_exposed: >= guardrails.min_exposed treated pilot customers exposed;
                         opt_outs: opt-outs per exposed customer within opt_out_rate_max;
                         sample_ratio: the pilot's arms match the declared split
    ab -> full           ab_size: pilot + A/B reached the power calculation's size in both arms;
                         sample_ratio over pilot + A/B; opt_outs still within the limit
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from fusion.campaigns.stages import GateCheck, Promoted, advance, close_stage
from fusion.campaigns.staging import (
    SALT_BYTES,
    Book,
    Stored,
    declaration_salts,
    promotions,
    read_declaration,
    read_declarations,
    store_declaration,
)
from fusion.campaigns.statistics import sample_ratio, sample_size
from fusion.journeys.strategy import Strategy, load_strategy
from fusion.store import Store

__all__ = [
    "LIVE_STAGES",
    "SALT_BYTES",
    "STRATEGY_BOOK",
    "StrategyRecord",
    "close_strategy",
    "create_strategy",
    "get_strategy",
    "list_strategies",
    "live_strategies",
    "promote_strategy",
    "strategy_gate",
    "strategy_history",
    "strategy_salts",
]

LIVE_STAGES = ("whitelist", "pilot", "ab", "full")
"""The stages a daily run evaluates (draft and closed strategies move no one)."""
STRATEGY_BOOK: Book[Strategy] = Book(
    noun="strategy",
    table="journey_strategies",
    key="strategy_id",
    history_table="journey_strategy_stages",
    load=load_strategy,
    made_under="its customers' states and touches",
)
"""Where strategies live in the store (the campaigns' `fusion.campaigns.staging`)."""


@dataclass(frozen=True)
class StrategyRecord:
    """A strategy as the store holds it (its salt stays in the store)."""

    strategy: Strategy
    version: int
    stage: str
    created_at: datetime
    created_by: str
    updated_at: datetime

    @property
    def strategy_id(self) -> str:
        return self.strategy.name

    def to_dict(self) -> dict[str, Any]:
        """Return the record as JSON-ready data (the declaration under "declaration")."""
        return {
            "strategy_id": self.strategy_id,
            "version": self.version,
            "stage": self.stage,
            "created_at": self.created_at.isoformat(),
            "created_by": self.created_by,
            "updated_at": self.updated_at.isoformat(),
            "declaration": json.loads(self.strategy.canonical_json()),
        }


def _record(stored: Stored[Strategy]) -> StrategyRecord:
    return StrategyRecord(
        stored.declared,
        stored.version,
        stored.stage,
        stored.created_at,
        stored.created_by,
        stored.updated_at,
    )


def create_strategy(
    store: Store, strategy: Strategy, *, actor: str, now: datetime, salt: bytes | None = None
) -> tuple[StrategyRecord, bool]:
    """Return the stored strategy and whether this call changed the store.

    A new name is stored as a draft, version 1; the same document again changes nothing; a new
    document replaces a draft (version + 1) and is refused (CampaignError) past the draft.
    """
    stored, changed = store_declaration(
        store, STRATEGY_BOOK, strategy, actor=actor, now=now, salt=salt
    )
    return _record(stored), changed


def get_strategy(store: Store, strategy_id: str) -> StrategyRecord:
    """Return the stored strategy; CampaignError naming the known ones when there is none."""
    return _record(read_declaration(store, STRATEGY_BOOK, strategy_id))


def list_strategies(store: Store) -> list[StrategyRecord]:
    """Return every stored strategy, by name."""
    return [_record(stored) for stored in read_declarations(store, STRATEGY_BOOK)]


def live_strategies(store: Store) -> list[StrategyRecord]:
    """Return the strategies a daily run evaluates, by priority then name."""
    live = [r for r in list_strategies(store) if r.stage in LIVE_STAGES]
    return sorted(live, key=lambda r: (r.strategy.priority, r.strategy_id))


def strategy_salts(store: Store, strategy_ids: list[str]) -> dict[str, bytes]:
    """Return the salt of each strategy (for the engine only; never shown)."""
    return declaration_salts(store, STRATEGY_BOOK, strategy_ids)


def promote_strategy(
    store: Store, strategy_id: str, *, actor: str, now: datetime, to_stage: str | None = None
) -> Promoted:
    """Return the promotion to the next stage after its gate held (module docstring).

    Raises GateRefused naming the first failed check (gate `order` for a skipped stage), and
    CampaignError for a closed or unknown strategy. `Promoted.campaign_id` is the strategy id.
    """
    record = get_strategy(store, strategy_id)
    return advance(
        store, STRATEGY_BOOK, strategy_id, record.stage,
        gate=lambda: strategy_gate(store, record), actor=actor, now=now, to_stage=to_stage,
    )  # fmt: skip


def close_strategy(store: Store, strategy_id: str, *, actor: str, now: datetime) -> Promoted:
    """Return the closing of the strategy (from any stage but closed): it moves no one more."""
    record = get_strategy(store, strategy_id)
    return close_stage(store, STRATEGY_BOOK, strategy_id, record.stage, actor=actor, now=now)


def strategy_history(store: Store, strategy_id: str) -> list[dict[str, Any]]:
    """Return the strategy's promotions, oldest first, as JSON-ready dicts."""
    return [p.to_dict() for p in promotions(store, STRATEGY_BOOK, strategy_id)]


# -- gates -------------------------------------------------------------------------------------


def strategy_gate(store: Store, record: StrategyRecord) -> list[GateCheck]:
    """Return the checks of the gate out of the record's stage, each passed or not."""
    if record.stage == "whitelist":
        return _whitelist_gate(store, record)
    if record.stage == "pilot":
        return [
            _exposed(store, record, ("pilot",)),
            _opt_outs(store, record, ("pilot",)),
            _arms(store, record, ("pilot",)),
        ]
    if record.stage == "ab":
        return [
            _planned(store, record),
            _arms(store, record, ("pilot", "ab")),
            _opt_outs(store, record, ("pilot", "ab")),
        ]
    return [GateCheck("declared", True, f"stage {record.stage!r} has no gate")]


_ANSWERED = """
SELECT count(DISTINCT t.customer_id) FILTER (WHERE t.delivered),
       count(DISTINCT t.customer_id) FILTER (WHERE t.delivered AND e.event = 'exposure'),
       count(DISTINCT t.customer_id) FILTER (WHERE t.delivered AND e.event = 'opt_out')
FROM journey_touches AS t
JOIN journey_state AS s ON s.strategy_id = t.strategy_id AND s.customer_id = t.customer_id
LEFT JOIN journey_events AS e ON e.touch_id = t.touch_id
WHERE t.strategy_id = ? AND list_contains(?, s.stage)
"""


def _answered(store: Store, strategy_id: str, stages: tuple[str, ...]) -> tuple[int, int, int]:
    """Return customers of `stages` touched, exposed and opted out (treated arm only)."""
    row = store.execute(_ANSWERED, [strategy_id, list(stages)]).fetchone()
    return (int(row[0]), int(row[1]), int(row[2])) if row else (0, 0, 0)


def _whitelist_gate(store: Store, record: StrategyRecord) -> list[GateCheck]:
    touched, exposed, _ = _answered(store, record.strategy_id, ("whitelist",))
    if not touched:
        return [
            GateCheck(
                "whitelist_touched",
                False,
                "no whitelist customer was touched yet; run the days until a touch is delivered",
            )
        ]
    return [
        GateCheck("whitelist_touched", True, f"{touched} named customer(s) touched"),
        GateCheck(
            "whitelist_confirmed",
            exposed == touched,
            f"{exposed} of {touched} touched named customers confirmed exposed"
            + ("" if exposed == touched else "; wait for the channels' exposure events"),
        ),
    ]


def _exposed(store: Store, record: StrategyRecord, stages: tuple[str, ...]) -> GateCheck:
    _, exposed, _ = _answered(store, record.strategy_id, stages)
    need = record.strategy.stages.guardrails.min_exposed
    return GateCheck(
        "pilot_exposed",
        exposed >= need,
        f"{exposed} exposed customers (guardrails.min_exposed = {need})"
        + ("" if exposed >= need else "; run more days of small traffic"),
    )


def _opt_outs(store: Store, record: StrategyRecord, stages: tuple[str, ...]) -> GateCheck:
    _, exposed, opted = _answered(store, record.strategy_id, stages)
    limit = record.strategy.stages.guardrails.opt_out_rate_max
    rate = opted / max(1, exposed)
    return GateCheck(
        "opt_outs",
        rate <= limit,
        f"{rate:.2%} of exposed customers opted out (limit {limit:.2%})"
        + ("" if rate <= limit else "; review the content and the audience, or close it"),
    )


def _arm_counts(
    store: Store, strategy_id: str, stages: tuple[str, ...]
) -> list[tuple[str, int, int]]:
    rows = store.execute(
        "SELECT stage, count(*), count(*) FILTER (WHERE arm = 'control') FROM journey_state "
        "WHERE strategy_id = ? AND list_contains(?, stage) GROUP BY stage",
        [strategy_id, list(stages)],
    ).fetchall()
    return [(str(s), int(n), int(c)) for s, n, c in rows]


def _arms(store: Store, record: StrategyRecord, stages: tuple[str, ...]) -> GateCheck:
    rows = _arm_counts(store, record.strategy_id, stages)
    if not rows:
        return GateCheck("sample_ratio", False, "nobody entered yet; run the days first")
    total = sum(n for _, n, _ in rows)
    control = sum(c for _, _, c in rows)
    expected = sum(record.strategy.stage_control_share(s) * n for s, n, _ in rows)
    result = sample_ratio(total - control, control, expected_control_share=expected / total)
    return GateCheck(
        "sample_ratio",
        not result.mismatch,
        f"treatment {total - control:,} / control {control:,} against "
        f"{total - expected:,.0f} / {expected:,.0f} expected (p = {result.p_value:.3g})"
        + ("; the assignment was altered: stop and investigate" if result.mismatch else ""),
    )


def _planned(store: Store, record: StrategyRecord) -> GateCheck:
    ab = record.strategy.stages.ab
    planned = sample_size(
        baseline_rate=ab.baseline_rate,
        minimum_detectable_effect=ab.minimum_detectable_effect,
        alpha=ab.alpha,
        power=ab.power,
        control_share=record.strategy.control_share,
        covariate_correlation=ab.covariate_correlation,
    )
    rows = _arm_counts(store, record.strategy_id, ("pilot", "ab"))
    control = sum(c for _, _, c in rows)
    treated = sum(n for _, n, _ in rows) - control
    reached = treated >= planned.treatment and control >= planned.control
    return GateCheck(
        "ab_size",
        reached,
        f"treatment {treated:,} of {planned.treatment:,}, control {control:,} of "
        f"{planned.control:,} planned by the power calculation"
        + ("" if reached else "; run more days of the A/B test"),
    )
