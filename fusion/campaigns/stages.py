"""Stages and their gates: draft -> whitelist -> pilot -> ab -> full -> closed.

A promotion moves a campaign one stage on, and only when the gate of that move holds:

    draft -> whitelist   the declaration is stored (nothing else to check)
    whitelist -> pilot   the whitelist was delivered, and every named customer's delivery was
                         confirmed by a `delivered` event (a test that reached no one proves
                         nothing)
    pilot -> ab          the pilot was delivered to at least guardrails.min_delivered customers,
                         its complaint and opt-out rates per delivered contact are under their
                         limits, and its arms show no sample-ratio mismatch
    ab -> full           the A/B test reached its planned size in both arms (the power
                         calculation's; the test is read once, at that size: fixed horizon), no
                         sample-ratio mismatch, guard-rails still under their limits
    any -> closed        always (`close`); a closed campaign plans and delivers nothing more

A refused promotion raises GateRefused naming the failed check and what to do; the stage and
its history are left as they were. A passed one records who promoted, when, and every check.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from contracts.errors import CampaignError, GateRefused
from fusion.campaigns.book import CAMPAIGN_BOOK, CampaignRecord, get_campaign
from fusion.campaigns.staging import Book, move_stage
from fusion.campaigns.statistics import planned_size, sample_ratio
from fusion.store import Store

__all__ = [
    "NEXT_STAGE",
    "GateCheck",
    "Promoted",
    "advance",
    "close_campaign",
    "close_stage",
    "gate_checks",
    "promote",
]

NEXT_STAGE = {"draft": "whitelist", "whitelist": "pilot", "pilot": "ab", "ab": "full",
              "full": "closed"}  # fmt: skip


@dataclass(frozen=True)
class GateCheck:
    """One condition of a gate: its name, whether it held, and what was measured."""

    name: str
    passed: bool
    detail: str

    def to_dict(self) -> dict[str, Any]:
        """Return the check as JSON-ready data."""
        return {"name": self.name, "passed": self.passed, "detail": self.detail}


@dataclass(frozen=True)
class Promoted:
    """A promotion that passed its gate."""

    campaign_id: str
    from_stage: str
    to_stage: str
    checks: list[GateCheck]

    def to_dict(self) -> dict[str, Any]:
        """Return the promotion as JSON-ready data."""
        return {
            "campaign_id": self.campaign_id,
            "from_stage": self.from_stage,
            "to_stage": self.to_stage,
            "checks": [c.to_dict() for c in self.checks],
        }


def promote(
    store: Store,
    campaign_id: str,
    *,
    actor: str,
    now: datetime,
    to_stage: str | None = None,
) -> Promoted:
    """Return the promotion of the campaign to its next stage, after its gate held.

    `to_stage`, when given, must be the next stage (stages are never skipped). Raises
    GateRefused with the first failed check, CampaignError for a closed or unknown campaign.
    """
    record = get_campaign(store, campaign_id)
    return advance(
        store, CAMPAIGN_BOOK, campaign_id, record.stage,
        gate=lambda: gate_checks(store, record), actor=actor, now=now, to_stage=to_stage,
    )  # fmt: skip


def close_campaign(store: Store, campaign_id: str, *, actor: str, now: datetime) -> Promoted:
    """Return the closing of the campaign (from any stage but closed): no more plans or files."""
    record = get_campaign(store, campaign_id)
    return close_stage(store, CAMPAIGN_BOOK, campaign_id, record.stage, actor=actor, now=now)


def advance(
    store: Store,
    book: Book[Any],
    name: str,
    current: str,
    *,
    gate: Callable[[], list[GateCheck]],
    actor: str,
    now: datetime,
    to_stage: str | None = None,
) -> Promoted:
    """Return the move of a book's declaration from `current` to its next stage, after `gate()`
    returned only passed checks (a campaign's or a journey strategy's gate).

    `to_stage`, when given, must be the next stage (else GateRefused with gate `order`); the
    first failed check raises GateRefused naming it; a closed one raises CampaignError.
    """
    noun = book.noun
    if current == "closed":
        raise CampaignError(
            f"{noun} {name!r} is closed; declare a new {noun} to run it again", campaign=name
        )
    target = NEXT_STAGE[current]
    if to_stage is not None and to_stage != target:
        raise GateRefused(
            f"{noun} {name!r} is in stage {current!r}; it can only be promoted to "
            f"{target!r} (stages are never skipped), or closed{book.close_hint}",
            campaign=name,
            stage=to_stage,
            gate="order",
        )
    checks = gate()
    for check in checks:
        if not check.passed:
            raise GateRefused(
                f"{noun} {name!r} cannot move from {current!r} to {target!r}: "
                f"{check.name}: {check.detail}",
                campaign=name,
                stage=target,
                gate=check.name,
            )
    move_stage(
        store, book, name, from_stage=current, to_stage=target, actor=actor, now=now,
        checks={c.name: c.to_dict() for c in checks},
    )  # fmt: skip
    return Promoted(name, current, target, checks)


def close_stage(
    store: Store, book: Book[Any], name: str, current: str, *, actor: str, now: datetime
) -> Promoted:
    """Return the closing of a book's declaration from stage `current` (any but closed)."""
    if current == "closed":
        raise CampaignError(f"{book.noun} {name!r} is already closed", campaign=name)
    check = GateCheck("close", True, f"closed by {actor} from stage {current!r}")
    move_stage(
        store, book, name, from_stage=current, to_stage="closed", actor=actor, now=now,
        checks={check.name: check.to_dict()},
    )  # fmt: skip
    return Promoted(name, current, "closed", [check])


def gate_checks(store: Store, record: CampaignRecord) -> list[GateCheck]:
    """Return the checks of the gate out of the record's stage, each passed or not."""
    stage = record.stage
    if stage == "whitelist":
        return _whitelist_gate(store, record)
    if stage == "pilot":
        return [
            _delivered(store, record, ("pilot",)),
            *_guardrails(store, record, ("pilot",)),
            _sample_ratio(store, record, ("pilot",)),
        ]
    if stage == "ab":
        return [
            _planned_size(store, record),
            _sample_ratio(store, record, ("pilot", "ab")),
            *_guardrails(store, record, ("pilot", "ab")),
        ]
    return [GateCheck("declared", True, f"stage {stage!r} has no gate")]


def _whitelist_gate(store: Store, record: CampaignRecord) -> list[GateCheck]:
    """Return: the whitelist was delivered, and each named customer's delivery confirmed."""
    name = record.campaign_id
    row = store.execute(
        "SELECT count(*) FROM deliveries WHERE campaign_id = ? AND stage = 'whitelist'", [name]
    ).fetchone()
    if not row or not row[0]:
        missing = "no whitelist delivery yet; run `fusion campaign deliver` first"
        return [GateCheck("whitelist_delivered", False, missing)]
    named = len(record.campaign.stages.whitelist)
    confirmed = store.execute(
        "SELECT count(DISTINCT e.customer_id) FROM outcome_events e JOIN assignments a "
        "ON a.campaign_id = e.campaign_id AND a.customer_id = e.customer_id "
        "WHERE e.campaign_id = ? AND a.stage = 'whitelist' AND e.event = 'delivered'",
        [name],
    ).fetchone()
    got = int(confirmed[0]) if confirmed else 0
    return [
        GateCheck("whitelist_delivered", True, "the whitelist files were written"),
        GateCheck(
            "whitelist_confirmed",
            got == named,
            f"{got} of {named} named customers confirmed delivered"
            + ("" if got == named else "; wait for the campaign tool's delivered events"),
        ),
    ]


def _delivered(store: Store, record: CampaignRecord, stages: tuple[str, ...]) -> GateCheck:
    """Return whether enough treated customers of `stages` were confirmed delivered."""
    delivered = _event_count(store, record.campaign_id, stages, "delivered")
    need = record.campaign.stages.guardrails.min_delivered
    return GateCheck(
        "pilot_delivered",
        delivered >= need,
        f"{delivered} delivered contacts (guardrails.min_delivered = {need})"
        + ("" if delivered >= need else "; deliver the pilot and wait for its delivered events"),
    )


def _event_count(store: Store, campaign_id: str, stages: tuple[str, ...], event: str) -> int:
    """Return the distinct treated customers of `stages` with an `event`."""
    row = store.execute(
        "SELECT count(DISTINCT e.customer_id) FROM outcome_events e JOIN assignments a "
        "ON a.campaign_id = e.campaign_id AND a.customer_id = e.customer_id "
        "WHERE e.campaign_id = ? AND list_contains(?, a.stage) AND a.arm = 'treatment' "
        "AND e.event = ?",
        [campaign_id, list(stages), event],
    ).fetchone()
    return int(row[0]) if row else 0


def _guardrails(store: Store, record: CampaignRecord, stages: tuple[str, ...]) -> list[GateCheck]:
    """Return the complaint and opt-out checks: rates per delivered contact under their limits."""
    limits = record.campaign.stages.guardrails
    delivered = max(1, _event_count(store, record.campaign_id, stages, "delivered"))
    checks = []
    for event, limit, name in (
        ("complained", limits.complaint_rate_max, "complaints"),
        ("opted_out", limits.opt_out_rate_max, "opt_outs"),
    ):
        rate = _event_count(store, record.campaign_id, stages, event) / delivered
        checks.append(
            GateCheck(
                name,
                rate <= limit,
                f"{rate:.2%} of delivered contacts (limit {limit:.2%})"
                + ("" if rate <= limit else "; review the offer and the list, or close it"),
            )
        )
    return checks


def _sample_ratio(store: Store, record: CampaignRecord, stages: tuple[str, ...]) -> GateCheck:
    """Return whether the arms of `stages` match the shares the assignment rule gives."""
    rows = store.execute(
        "SELECT stage, count(*) AS n, count(*) FILTER (WHERE arm = 'control') AS c "
        "FROM assignments WHERE campaign_id = ? AND list_contains(?, stage) GROUP BY stage",
        [record.campaign_id, list(stages)],
    ).fetchall()
    if not rows:
        return GateCheck("sample_ratio", False, "nobody is assigned yet; plan the stage first")
    expected_control = 0.0
    observed_control = 0
    total = 0
    for stage, n, control in rows:
        expected_control += record.campaign.stage_control_share(stage) * n
        observed_control += int(control)
        total += int(n)
    result = sample_ratio(
        total - observed_control,
        observed_control,
        expected_control_share=expected_control / total,
    )
    return GateCheck(
        "sample_ratio",
        not result.mismatch,
        f"treatment {total - observed_control:,} / control {observed_control:,} against "
        f"{total - expected_control:,.0f} / {expected_control:,.0f} expected (p = "
        f"{result.p_value:.3g})"
        + ("; the assignment was altered: stop and investigate" if result.mismatch else ""),
    )


def _planned_size(store: Store, record: CampaignRecord) -> GateCheck:
    """Return whether pilot + A/B reached the power calculation's size in both arms."""
    planned = planned_size(record.campaign)
    row = store.execute(
        "SELECT count(*) FILTER (WHERE arm = 'treatment'), count(*) FILTER (WHERE arm = 'control') "
        "FROM assignments WHERE campaign_id = ? AND stage IN ('pilot', 'ab')",
        [record.campaign_id],
    ).fetchone()
    treated, control = (int(row[0]), int(row[1])) if row else (0, 0)
    reached = treated >= planned.treatment and control >= planned.control
    return GateCheck(
        "ab_size",
        reached,
        f"treatment {treated:,} of {planned.treatment:,}, control {control:,} of "
        f"{planned.control:,} planned by the power calculation"
        + ("" if reached else "; plan the A/B stage in a further window"),
    )
