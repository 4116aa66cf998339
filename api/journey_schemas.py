"""Request and response bodies of the journey routes, named by direction (`*Create` in,
`*Public` out).

The strategy itself (POST /v1/journeys) is not a model here: the route reads the parsed JSON
object and validates it with `fusion.journeys.strategy.load_strategy`, so that an error names
the strategy's own field (`nodes[<id>].<field>`). `strategy_schema()` gives its JSON schema for
the OpenAPI description, self-contained (no `$ref` into the strategy's own `$defs`).
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from api.campaign_schemas import inlined_schema
from api.schemas import MAX_OUTCOMES, CustomerId, UtcTime
from fusion.journeys.strategy import Strategy

__all__ = [
    "DRY_RUN_COUNTS",
    "EARLIEST_DAY",
    "LATEST_DAY",
    "MAX_JOURNEY_EVENTS",
    "DryRunNodePublic",
    "DryRunPublic",
    "JourneyEventCreate",
    "JourneyEventRefusedPublic",
    "JourneyEventsAccepted",
    "JourneyEventsCreate",
    "JourneyGateCheckPublic",
    "JourneyPromoteCreate",
    "JourneyPromotedPublic",
    "JourneyPromotionPublic",
    "JourneyPublic",
    "JourneysPublic",
    "strategy_schema",
]

DRY_RUN_COUNTS = ("visits", "asked", "delivered", "held_out", "blocked")
"""The dry run's per-node counts, as `fusion.journeys.engine.dry_run` names them."""
MAX_JOURNEY_EVENTS = MAX_OUTCOMES  # events per POST; the service's max_outcomes may set fewer
# Days a readout or a dry run may name: well inside the calendar, so that the engine's date
# arithmetic (a day after, a horizon before) cannot overflow.
EARLIEST_DAY = date(2000, 1, 1)
LATEST_DAY = date(2999, 12, 31)


class _Strict(BaseModel):
    # Unknown fields are refused, not dropped: a misspelt field must not pass unnoticed.
    model_config = ConfigDict(extra="forbid")


class JourneyPromoteCreate(_Strict):
    to_stage: Literal["whitelist", "pilot", "ab", "full"] | None = Field(
        default=None,
        description="the stage expected next (stages are never skipped); left out: the next one",
    )


class JourneyPromotionPublic(_Strict):
    from_stage: str
    to_stage: str
    promoted_at: datetime
    actor: str = Field(description="the token id (or CLI user) that promoted")
    checks: dict[str, Any] = Field(description="the gate's checks, by name")


class JourneyGateCheckPublic(_Strict):
    name: str
    passed: bool
    detail: str


class JourneyPublic(_Strict):
    strategy_id: str
    version: int = Field(description="counts the declarations of the draft; fixed after it")
    stage: str
    created_at: datetime
    created_by: str
    updated_at: datetime
    declaration: dict[str, Any] = Field(description="the strategy as stored (defaults filled)")
    history: list[JourneyPromotionPublic] = Field(description="its stage changes, oldest first")


class JourneysPublic(_Strict):
    journeys: list[JourneyPublic] = Field(description="every strategy, by name")


class JourneyPromotedPublic(_Strict):
    strategy_id: str
    from_stage: str
    to_stage: str
    checks: list[JourneyGateCheckPublic]


class JourneyEventCreate(_Strict):
    """One event of the journey log; an unknown event or customer is refused by row, not 422."""

    event_key: str | None = Field(
        default=None,
        min_length=1,
        max_length=128,
        strict=True,
        description="the sender's unique id of the event (a resend with it records once); left "
        "out, the SHA-256 of customer, event, time and touch",
    )
    customer_id: CustomerId
    event: str = Field(
        min_length=1,
        max_length=32,
        strict=True,
        description="a milestone (download, first_open, register, bind_card, first_transaction, "
        "assets_10k), login, or an answer to a touch (exposure, click, opt_out)",
    )
    occurred_at: UtcTime = Field(
        description="ISO 8601; without an offset it is UTC. At most the service's clock skew "
        "into the future."
    )
    touch_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        strict=True,
        description="answers only: the touch_id of the delivered touch the event answers",
    )


class JourneyEventsCreate(_Strict):
    events: list[JourneyEventCreate] = Field(
        min_length=1, max_length=MAX_JOURNEY_EVENTS, description="checked row by row"
    )


class JourneyEventRefusedPublic(_Strict):
    row: int = Field(description="the event's position in the request, from 0")
    customer_id: int | None
    reason: str


class JourneyEventsAccepted(_Strict):
    recorded: int = Field(description="events stored now")
    already_recorded: int = Field(description="events whose key was stored before (a resend)")
    refused: list[JourneyEventRefusedPublic] = Field(description="each with its reason")


class DryRunNodePublic(_Strict):
    node_id: str
    kind: str
    visits: int | None = Field(description="customers the node would take on the day")
    asked: int | None = Field(description="touches the node would ask for")
    delivered: int | None
    held_out: int | None = Field(description="control customers' touches, never sent")
    blocked: int | None = Field(description="touches screening or priority would stop")
    suppressed_cells: list[str] = Field(
        description="counts withheld (null) under the reader's disclosure policy"
    )


class DryRunPublic(_Strict):
    strategy_id: str
    stage: str
    day: date
    policy: str = Field(description='"operational" (exact) or "k-anonymous" (k = `k`)')
    k: int
    nodes: list[DryRunNodePublic]


def strategy_schema() -> dict[str, Any]:
    """Return the JSON schema of a strategy with every `$ref` written in place
    (`inlined_schema`): `oneOf` with each node's constant `kind` (and each condition's `on`)
    says what the discriminators' mappings said."""
    return inlined_schema(Strategy)
