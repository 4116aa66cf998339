"""A campaign as declared: typed, validated models read from TOML or JSON.

A marketer writes a campaign as a TOML file (`fusion campaign create FILE`) or posts the same
document as JSON (POST /v1/campaigns). Both are validated into `Campaign`; the first invalid field
becomes a `DeclarationError` naming its dotted path, what arrived and what to write instead.

    name = "rescue-call-2026q3"
    priority = 1                     # 1 goes first when campaigns compete for a customer
    control_share = 0.5              # of the pilot and the A/B test
    window_days = 28

    [objective]
    event = "converted"              # the outcome event that counts as success
    value = 120.0                    # its value, in the bank's currency
    cost_per_contact = 2.5

    [audience]
    source = "model"                 # model | value_demand | usage | query
    model = "rescue"
    top_share = 0.2

    [channel]
    kind = "call_centre"
    capacity_per_branch_per_day = 40

    [stages]
    whitelist = [100001, 100002]
    pilot_share = 0.05
    full_control_share = 0.05
    [stages.ab]
    baseline_rate = 0.01
    minimum_detectable_effect = 0.01
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from contracts.errors import DeclarationError

__all__ = [
    "AUDIENCE_SOURCES",
    "CHANNELS",
    "EVENTS",
    "LIVE_STAGES",
    "NAME_PATTERN",
    "STAGES",
    "AbTest",
    "Audience",
    "Campaign",
    "Channel",
    "FrequencyCap",
    "Guardrails",
    "ModelAudience",
    "Objective",
    "QueryAudience",
    "Screening",
    "Stages",
    "UsageAudience",
    "ValueDemandAudience",
    "load_declaration",
    "more_problems",
    "read_document",
]

STAGES = ("draft", "whitelist", "pilot", "ab", "full", "closed")
LIVE_STAGES = STAGES[:-1]  # every stage but closed
# The rule for a campaign's or a strategy's name (ids in URLs, files and the store).
NAME_PATTERN = r"^[a-z0-9][a-z0-9-]{1,62}$"
EVENTS = ("delivered", "contacted", "reached", "responded", "converted", "complained", "opted_out")
CHANNELS = ("call_centre", "sms", "app_push", "email", "branch")
AUDIENCE_SOURCES = ("model", "value_demand", "usage", "query")

Share = Annotated[float, Field(gt=0, le=1)]
CustomerId = Annotated[int, Field(ge=0, le=2**63 - 1)]  # the bank's BIGINT customer_id
TaxonomyId = Annotated[int, Field(ge=0, le=2**31 - 1)]  # the taxonomy's INTEGER ids


class _Declared(BaseModel):
    """Frozen, no unknown keys, no silent coercion of strings to numbers."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class Objective(_Declared):
    """The outcome that counts as success, what one is worth, and what a contact costs."""

    event: Literal["responded", "converted"] = Field(
        "converted", description='"responded" or "converted"'
    )
    value: float = Field(ge=0, allow_inf_nan=False, description="the value of one success, >= 0")
    cost_per_contact: float = Field(
        0.0, ge=0, allow_inf_nan=False, description="the cost of one delivered contact, >= 0"
    )
    expected_uplift: float = Field(
        0.01,
        ge=-1,
        le=1,
        allow_inf_nan=False,
        description="the expected gain in success probability of a contact, in [-1, 1], used "
        "where no uplift model scores the customer",
    )
    uplift_model: str | None = Field(
        None,
        pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$",
        description="the registry name of an uplift model whose prediction is the expected "
        'gain (e.g. "uplift"), or leave it out',
    )


class ModelAudience(_Declared):
    """A model's list: acquisition score deciles, the rescue pool's or uplift's top share."""

    source: Literal["model"]
    model: Literal["acquisition", "rescue", "uplift"] = Field(
        description='"acquisition", "rescue" or "uplift"'
    )
    deciles: list[Annotated[int, Field(ge=1, le=10)]] | None = Field(
        None, min_length=1, description="score deciles to take, e.g. [1, 2, 3] (1 = best)"
    )
    top_share: Share | None = Field(
        None, description="the share of the model's ranking to take, a number in (0, 1]"
    )

    @model_validator(mode="after")
    def _one_cut(self) -> ModelAudience:
        if (self.deciles is None) == (self.top_share is None):
            raise ValueError("give exactly one of deciles (e.g. [1, 2]) or top_share (e.g. 0.2)")
        return self


class ValueDemandAudience(_Declared):
    """Cells of the value x demand matrix: AUM tiers (1 = top 20%) x demand groups (1 = deciles
    1-2 of the acquisition score)."""

    source: Literal["value_demand"]
    value_tiers: list[Annotated[int, Field(ge=1, le=5)]] = Field(
        min_length=1, description="AUM tiers, 1 (top 20%) to 5 (bottom 20%), e.g. [1, 2]"
    )
    demand_groups: list[Annotated[int, Field(ge=1, le=5)]] = Field(
        min_length=1,
        description="demand groups, 1 (score deciles 1-2) to 5 (deciles 9-10), e.g. [1]",
    )


class UsageAudience(_Declared):
    """Matched customers who use any of the given apps, app categories or interest tags."""

    source: Literal["usage"]
    apps: list[TaxonomyId] = Field(default_factory=list, description="app ids of the taxonomy")
    categories: list[str] = Field(
        default_factory=list, description='category codes of the taxonomy, e.g. ["food"]'
    )
    tags: list[TaxonomyId] = Field(
        default_factory=list, description="interest tag ids of the taxonomy"
    )

    @model_validator(mode="after")
    def _something(self) -> UsageAudience:
        if not (self.apps or self.categories or self.tags):
            raise ValueError("give at least one of apps, categories or tags")
        return self


class QueryAudience(_Declared):
    """A SELECT over the analyst views (the /v1/query rules) returning a customer_id column."""

    source: Literal["query"]
    sql: str = Field(
        min_length=1,
        max_length=16_384,
        description="one SELECT over the granted views that returns a customer_id column",
    )


Audience = Annotated[
    ModelAudience | ValueDemandAudience | UsageAudience | QueryAudience,
    Field(discriminator="source"),
]


class FrequencyCap(_Declared):
    """At most `contacts` touches per customer in any `days` days, over every campaign."""

    contacts: int = Field(2, ge=1, le=100, description="an integer in 1..100")
    days: int = Field(30, ge=1, le=366, description="an integer in 1..366")


class Screening(_Declared):
    """Who is never contacted: suppression lists, recent complaints, caps, cooling off, holders."""

    suppression_lists: list[Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")]] = Field(
        default_factory=lambda: ["do-not-disturb", "opt-out"],
        description='suppression list names, e.g. ["do-not-disturb", "opt-out"]',
    )
    complaint_months: int = Field(
        6, ge=0, le=120, description="months a complaint keeps a customer out, 0..120"
    )
    frequency_cap: FrequencyCap = Field(default_factory=FrequencyCap)
    cooling_off_days: int = Field(
        14, ge=0, le=366, description="days after any contact before the next, 0..366"
    )
    exclude_holders: list[Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")]] = Field(
        default_factory=list,
        description='bank feature columns whose holders are left out, e.g. ["mb_registered"]',
    )


class Channel(_Declared):
    """How the campaign reaches its customers, and how many a branch can take per day."""

    kind: Literal["call_centre", "sms", "app_push", "email", "branch"] = Field(
        description='"call_centre", "sms", "app_push", "email" or "branch"'
    )
    capacity_per_branch_per_day: int = Field(
        ge=1, le=1_000_000, description="contacts one branch can make per day, >= 1"
    )


class AbTest(_Declared):
    """The A/B stage's size, from a power calculation (normal approximation, two-sided)."""

    baseline_rate: float = Field(
        gt=0, lt=1, description="the control's expected success rate, in (0, 1)"
    )
    minimum_detectable_effect: float = Field(
        ge=0.0001,
        lt=1,
        description="the smallest absolute gain worth detecting, in [0.0001, 1)",
    )
    alpha: float = Field(0.05, gt=0, lt=0.5, description="the test's two-sided level, (0, 0.5)")
    power: float = Field(0.8, ge=0.5, lt=1, description="the power wanted, in [0.5, 1)")
    covariate_correlation: float = Field(
        0.0,
        ge=0,
        le=0.95,
        allow_inf_nan=False,
        description="rho, the correlation of the readout's covariate (the propensity score) "
        "with success, in [0, 0.95], e.g. an earlier readout's rho; the planned size shrinks "
        "by (1 - rho^2); 0 plans an unadjusted test",
    )

    @model_validator(mode="after")
    def _reachable(self) -> AbTest:
        if self.baseline_rate + self.minimum_detectable_effect >= 1:
            raise ValueError("baseline_rate + minimum_detectable_effect must stay below 1")
        return self


class Guardrails(_Declared):
    """Limits the pilot must stay under before the A/B test may start."""

    complaint_rate_max: float = Field(
        0.01, ge=0, le=1, description="complaints per delivered contact, in [0, 1]"
    )
    opt_out_rate_max: float = Field(
        0.02, ge=0, le=1, description="opt-outs per delivered contact, in [0, 1]"
    )
    min_delivered: int = Field(
        50, ge=1, description="delivered pilot contacts needed before the rates are judged"
    )


class Stages(_Declared):
    """Whitelist -> pilot -> A/B -> full launch, with what each stage needs."""

    whitelist: list[CustomerId] = Field(
        min_length=1,
        max_length=1000,
        description="customer ids of named test customers (1 to 1000 of them)",
    )
    pilot_share: float = Field(
        0.05, gt=0, le=0.5, description="the audience share of the pilot, in (0, 0.5]"
    )
    ab: AbTest
    full_control_share: float = Field(
        0.05, gt=0, le=0.5, description="the permanent control kept at full launch, (0, 0.5]"
    )
    guardrails: Guardrails = Field(default_factory=Guardrails)


class Campaign(_Declared):
    """A whole campaign declaration (TOML file or JSON body)."""

    name: str = Field(
        pattern=NAME_PATTERN,
        description="lower-case letters, digits and '-', 2 to 63 characters",
    )
    description: str = Field("", max_length=2000, description="free text, up to 2000 characters")
    objective: Objective
    audience: Audience
    screening: Screening = Field(default_factory=Screening)
    channel: Channel
    priority: int = Field(ge=1, le=99, description="1 (first) to 99")
    control_share: float = Field(
        0.5, ge=0.05, le=0.9, description="control share of pilot and A/B, in [0.05, 0.9]"
    )
    window_days: int = Field(28, ge=1, le=366, description="days a plan's window lasts, 1..366")
    stages: Stages
    scenario: str | None = Field(
        None,
        pattern=r"^[a-z][a-z0-9-]{1,40}$",
        description='the scenario the campaign serves (e.g. "credit-card"), whose model ranks '
        "its audience and which learns from its outcomes once it is closed; or leave it out",
    )
    analysis: Literal["fixed_horizon", "sequential"] = Field(
        "fixed_horizon",
        description='"fixed_horizon": the A/B test is judged once, at its planned size; '
        '"sequential": judged at weekly looks by an always-valid test (mSPRT)',
    )

    def stage_control_share(self, stage: str) -> float:
        """Return the control share of a stage's new entrants (none for the whitelist)."""
        if stage == "whitelist":
            return 0.0
        if stage == "full":
            return self.stages.full_control_share
        return self.control_share

    def canonical_json(self) -> str:
        """Return the declaration as sorted, compact JSON (what the store keeps)."""
        document = self.model_dump(mode="json")
        if document["scenario"] is None:  # as declared before scenarios existed: same JSON
            del document["scenario"]
        return json.dumps(document, sort_keys=True, separators=(",", ":"))


def load_declaration(source: Path | str | Mapping[str, Any]) -> Campaign:
    """Return the campaign declared by a TOML file, a TOML/JSON text or a parsed document.

    Raises DeclarationError naming the first invalid field (dotted path), what arrived and what
    to write instead; a file that cannot be read or parsed is named as the field "file".
    """
    document = read_document(source)
    try:
        return Campaign.model_validate(document)
    except ValidationError as error:
        raise _declaration_error(error, document) from None


def read_document(
    source: Path | str | Mapping[str, Any],
    *,
    what: str = "declaration",
    example: str = "docs/campaigns.md",
) -> Mapping[str, Any]:
    """Return the parsed document of a TOML file, a TOML/JSON text, or a parsed document.

    `what` names the document in messages ("declaration", "strategy") and `example` where an
    example of it is written. Raises DeclarationError with the field "file" for a file that
    cannot be read and a text that does not parse.
    """
    if isinstance(source, Mapping):
        return source
    if isinstance(source, Path):
        try:
            text = source.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise DeclarationError(
                f"cannot read the {what} {source}: {error.__class__.__name__}; give the path "
                "of a UTF-8 TOML or JSON file",
                field="file",
            ) from None
    else:
        text = source
    if text.lstrip().startswith("{"):
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError as error:
            raise DeclarationError(
                f"the {what} is not valid JSON ({error.msg} at line {error.lineno}); fix the "
                "document or write it as TOML",
                field="file",
            ) from None
        if not isinstance(parsed, dict):
            raise DeclarationError(f"a {what} is a JSON object", field="file")
        return parsed
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise DeclarationError(
            f"the {what} is not valid TOML ({error}); see the example in {example}",
            field="file",
        ) from None


def more_problems(error: ValidationError) -> str:
    """Return " (N more problems after this one)" for a validation error of several, else ""."""
    total = error.error_count()
    if total <= 1:
        return ""
    return f" ({total - 1} more problem{'s' if total > 2 else ''} after this one)"


def _declaration_error(error: ValidationError, document: Mapping[str, Any]) -> DeclarationError:
    """Return the DeclarationError of a validation error's first problem."""
    first = error.errors(include_url=False, include_input=False)[0]
    location = [str(part) for part in first["loc"]]
    # The discriminated union puts the chosen source in the path: it is not a field name.
    if len(location) > 1 and location[0] == "audience" and location[1] in AUDIENCE_SOURCES:
        del location[1]
    field = ".".join(location) or "campaign"
    hint = _hint(location, document)
    message = first["msg"]
    if first["type"] == "missing":
        message = "this field is required"
    elif first["type"] == "extra_forbidden":
        message = "this field is not part of a campaign declaration; remove it (check spelling)"
    elif first["type"] == "union_tag_invalid":
        message = f"the audience source must be one of {', '.join(AUDIENCE_SOURCES)}"
    name = document.get("name") if isinstance(document.get("name"), str) else None
    tail = f"; write {hint}" if hint else ""
    return DeclarationError(
        f"campaign declaration: {field}: {message}{tail}{more_problems(error)}",
        field=field,
        campaign=name,
    )


_AUDIENCES: dict[str, type[BaseModel]] = {
    "model": ModelAudience,
    "value_demand": ValueDemandAudience,
    "usage": UsageAudience,
    "query": QueryAudience,
}


def _hint(location: list[str], document: Mapping[str, Any]) -> str:
    """Return the description of the field at `location`, or '' when it has none."""
    model: type[BaseModel] | None = Campaign
    description = ""
    for part in location:
        if model is None or part not in model.model_fields:
            break
        info = model.model_fields[part]
        description = info.description or ""
        model = _model_of(info.annotation)
        if part == "audience":
            audience = document.get("audience")
            source = audience.get("source") if isinstance(audience, Mapping) else None
            model = _AUDIENCES.get(source) if isinstance(source, str) else None
    return description


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """Return the model class of a field's annotation (the first, for a union), else None."""
    candidates = getattr(annotation, "__args__", None) or (annotation,)
    for candidate in candidates:
        inner = getattr(candidate, "__origin__", None) and candidate.__args__[0]
        for option in (candidate, inner):
            if isinstance(option, type) and issubclass(option, BaseModel):
                return option
    return None
