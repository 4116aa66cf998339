"""Request and response bodies of the campaign routes, named by direction (`*Create` in,
`*Public` out).

The declaration itself (POST /v1/campaigns) is not a model here: the route reads the parsed
JSON object and validates it with `fusion.campaigns.declaration.load_declaration`, so that an
error names the declaration's own field. `declaration_schema()` gives its JSON schema for the
OpenAPI description, self-contained (no `$ref` into the declaration's own `$defs`).
"""

from __future__ import annotations

import copy
from datetime import date, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from fusion.campaigns.declaration import NAME_PATTERN, Campaign

__all__ = [
    "EARLIEST_WINDOW",
    "LATEST_WINDOW",
    "MAX_DELIVERY_PAGE",
    "MAX_PLANNED",
    "CampaignErrorPublic",
    "CampaignPlanCreate",
    "CampaignPromoteCreate",
    "CampaignPublic",
    "CampaignsPublic",
    "DeclarationErrorPublic",
    "DeliveriesPublic",
    "DeliveryBranchPublic",
    "DeliveryPublic",
    "DeliveryRowPublic",
    "DeliveryRowsPublic",
    "DeliveryVersionPublic",
    "GateCheckPublic",
    "GateRefusedPublic",
    "PlanPublic",
    "PlansPublic",
    "PromotedPublic",
    "PromotionPublic",
    "UnreadablePublic",
    "declaration_schema",
    "inlined_schema",
]

MAX_PLANNED = 20  # campaigns planned together in one request
MAX_DELIVERY_PAGE = 10_000  # delivery rows per GET
# A plan's window adds up to a year of contact days to its start: bounded well inside the
# calendar, so no date arithmetic of the planner can overflow.
EARLIEST_WINDOW = date(2000, 1, 1)
LATEST_WINDOW = date(2999, 12, 31)

CampaignName = Annotated[
    str,
    Field(
        pattern=NAME_PATTERN,
        strict=True,
        description="a campaign's name: lower-case letters, digits and '-', 2 to 63 characters",
    ),
]


def _window_start(value: object) -> date:
    """Return the ISO date `value` names, within the planner's calendar; else a ValueError."""
    if not isinstance(value, str):
        raise ValueError("expected an ISO 8601 date string, such as 2026-10-05")
    try:
        day = date.fromisoformat(value)
    except ValueError:
        raise ValueError("expected an ISO 8601 date, such as 2026-10-05") from None
    if not EARLIEST_WINDOW <= day <= LATEST_WINDOW:
        raise ValueError(f"a plan's window starts between {EARLIEST_WINDOW} and {LATEST_WINDOW}")
    return day


WindowStart = Annotated[date, BeforeValidator(_window_start)]


class _Strict(BaseModel):
    # Unknown fields are refused, not dropped: a misspelt field must not pass unnoticed.
    model_config = ConfigDict(extra="forbid")


class CampaignPlanCreate(_Strict):
    campaigns: list[CampaignName] = Field(
        min_length=1,
        max_length=MAX_PLANNED,
        description="the campaigns to plan together: they compete for customers and capacity",
    )
    window_start: WindowStart = Field(description="the first day of the window (ISO 8601 date)")


class CampaignPromoteCreate(_Strict):
    to_stage: Literal["whitelist", "pilot", "ab", "full", "closed"] | None = Field(
        default=None,
        description="the stage expected next (stages are never skipped); left out: the next one",
    )


class PromotionPublic(_Strict):
    from_stage: str
    to_stage: str
    promoted_at: datetime
    actor: str = Field(description="the token id (or CLI user) that promoted")
    checks: dict[str, Any] = Field(description="the gate's checks, by name")


class CampaignPublic(_Strict):
    campaign_id: str
    version: int = Field(description="counts the declarations of the draft; fixed after it")
    stage: str
    created_at: datetime
    created_by: str
    updated_at: datetime
    declaration: dict[str, Any] = Field(description="the declaration as stored (defaults filled)")
    history: list[PromotionPublic] = Field(description="its stage changes, oldest first")


class UnreadablePublic(_Strict):
    campaign_id: str
    field: str = Field(description="the first field of its stored declaration that fails")


class CampaignsPublic(_Strict):
    campaigns: list[CampaignPublic]
    unreadable: list[UnreadablePublic] = Field(
        description="campaigns stored with a declaration this service cannot read (none, "
        "unless the declaration's rules changed under a stored campaign)"
    )


class PlanPublic(_Strict):
    plan_id: str
    campaign_id: str
    stage: str
    window_start: date
    window_end: date
    audience: int = Field(description="candidates of the audience")
    assigned: int = Field(description="customers this plan assigned (both arms)")
    treatment: int
    control: int
    removed: dict[str, int] = Field(description="customers each rule removed, by rule")
    srm_p_value: float | None = Field(description="the sample-ratio check of this plan's arms")
    stored_before: bool = Field(description="an earlier request made this plan; nothing new")


class PlansPublic(_Strict):
    plans: list[PlanPublic]
    seconds: float


class GateCheckPublic(_Strict):
    name: str
    passed: bool
    detail: str


class PromotedPublic(_Strict):
    campaign_id: str
    from_stage: str
    to_stage: str
    checks: list[GateCheckPublic]


class DeliveryBranchPublic(_Strict):
    rows: int
    sha256: str = Field(description="SHA-256 of the branch's Parquet file, hex")


class DeliveryVersionPublic(_Strict):
    version: int
    stage: str
    channel: str
    rows: int
    created_at: datetime
    branches: dict[str, DeliveryBranchPublic] = Field(description="by branch id")


class DeliveryPublic(DeliveryVersionPublic):
    campaign_id: str
    new: bool = Field(description="false: nothing new to deliver; this is the latest version")


class DeliveriesPublic(_Strict):
    campaign_id: str
    versions: list[DeliveryVersionPublic] = Field(description="oldest first")


class DeliveryRowPublic(_Strict):
    campaign_id: str
    version: int
    stage: str
    channel: str
    branch_id: str
    customer_id: int = Field(description="the bank's internal customer id")
    contact_day: date | None
    rank: int = Field(description="the order to contact them in, from 1 (best expected value)")


class DeliveryRowsPublic(_Strict):
    campaign_id: str
    version: int
    branch_id: str
    total: int = Field(description="rows of the branch's file")
    offset: int
    rows: list[DeliveryRowPublic]


class DeclarationErrorPublic(_Strict):
    detail: str
    field: str = Field(description="the dotted path of the first invalid field")


class GateRefusedPublic(_Strict):
    detail: str
    gate: str = Field(description='the check that failed, e.g. "order" or "sample_ratio"')
    stage: str = Field(description="the stage the promotion was for")


class CampaignErrorPublic(_Strict):
    detail: str


def declaration_schema() -> dict[str, Any]:
    """Return the JSON schema of a campaign declaration with every `$ref` written in place
    (`inlined_schema`): `oneOf` with each audience's constant `source` says what the
    discriminator's mapping said."""
    return inlined_schema(Campaign)


def inlined_schema(model: type[BaseModel]) -> dict[str, Any]:
    """Return the JSON schema of `model` with every `$ref` written in place.

    OpenAPI resolves a `$ref` from the document's root, where the model's `$defs` are not; a
    declaration has no recursive part, so writing each definition in place ends. The
    discriminators' mappings point into `$defs` too and go: `oneOf` with each option's constant
    tag says the same.
    """
    schema = model.model_json_schema()
    definitions = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                name = str(node["$ref"]).rsplit("/", 1)[-1]
                return inline(copy.deepcopy(definitions[name]))
            return {key: inline(value) for key, value in node.items() if key != "discriminator"}
        if isinstance(node, list):
            return [inline(item) for item in node]
        return node

    inlined: dict[str, Any] = inline(schema)
    return inlined
