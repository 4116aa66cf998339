"""A journey strategy as declared: a flow of nodes, typed, read from TOML or JSON, and validated.

A marketer draws a strategy on a canvas; the canvas saves it as this document (a TOML file, or
the same document as JSON through the API). Nodes:

    entry       who enters: customers in a lifecycle stage, or on the day of an event
    condition   `when` a condition holds go to `then`, else to `else`; conditions read tags,
                bank features, model scores, milestones, the lifecycle stage, idle days, or the
                answer to an earlier touch of the strategy (clicked / not clicked / exposed /
                opted out within N days)
    wait        wait `days` days, then go on
    action      a touch: channel (in_app_popup, app_push, sms, crm_task), content id, offer
    exit        the customer leaves the strategy

Validation refuses, naming the node and what to write: an unknown key or value, a repeated node
id, not exactly one entry node, an edge to a node that does not exist or to the entry, a node no
path from the entry reaches, a loop with no wait node in it (it would spin within one day), an
answer condition naming a node that is not an action of the strategy.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from contracts.errors import DeclarationError
from contracts.journeys import JOURNEY_CHANNELS, JOURNEY_EVENTS, LIFECYCLE_STAGES, MILESTONES
from fusion.campaigns.declaration import (
    NAME_PATTERN,
    AbTest,
    CustomerId,
    Screening,
    more_problems,
    read_document,
)

__all__ = [
    "ANSWERS",
    "CONDITION_KINDS",
    "MAX_NODES",
    "NODE_KINDS",
    "ActionNode",
    "AnswerCondition",
    "Condition",
    "ConditionNode",
    "EntryNode",
    "ExitNode",
    "FeatureCondition",
    "IdleCondition",
    "JourneyGuardrails",
    "JourneyStages",
    "MilestoneCondition",
    "Node",
    "ScoreCondition",
    "StageCondition",
    "Strategy",
    "TagCondition",
    "WaitNode",
    "edges",
    "load_strategy",
]

NODE_KINDS = ("entry", "condition", "wait", "action", "exit")
CONDITION_KINDS = ("tag", "feature", "score", "milestone", "stage", "idle", "answer")
ANSWERS = ("clicked", "not_clicked", "exposed", "opted_out")
MAX_NODES = 64

NodeId = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,39}$")]
Operator = Literal["<", "<=", "==", "!=", ">=", ">"]


class _Declared(BaseModel):
    """Frozen, no unknown keys, no silent coercion of strings to numbers."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, populate_by_name=True)


class TagCondition(_Declared):
    """The customer's interest tags (the profile's `tags` list) hold any of `any_of`."""

    on: Literal["tag"]
    any_of: list[Annotated[int, Field(ge=0, le=2**31 - 1)]] = Field(
        min_length=1, description="interest tag ids, e.g. [1203, 88]"
    )


class FeatureCondition(_Declared):
    """A bank feature (a profile column) compared with a number, e.g. age >= 25."""

    on: Literal["feature"]
    column: str = Field(pattern=r"^[a-z][a-z0-9_]{0,63}$", description="a profile column")
    op: Operator = Field(description='one of "<", "<=", "==", "!=", ">=", ">"')
    value: float = Field(allow_inf_nan=False, description="a number")


class ScoreCondition(_Declared):
    """A model's score (the profile column `score_<model>`) compared with a number."""

    on: Literal["score"]
    model: str = Field(pattern=r"^[a-z][a-z0-9_]{0,63}$", description='e.g. "acquisition"')
    op: Operator = Field(description='one of "<", "<=", "==", "!=", ">=", ">"')
    value: float = Field(allow_inf_nan=False, description="a number")


class MilestoneCondition(_Declared):
    """The customer has (or has not) reached a milestone by the day of the run."""

    on: Literal["milestone"]
    milestone: Literal[MILESTONES] = Field(description=f"one of {', '.join(MILESTONES)}")  # type: ignore[valid-type]
    reached: bool = Field(True, description="true: has reached it; false: has not")


class StageCondition(_Declared):
    """The customer's lifecycle stage on the day is one of `stages`."""

    on: Literal["stage"]
    stages: list[Literal[LIFECYCLE_STAGES]] = Field(  # type: ignore[valid-type]
        min_length=1, description=f"some of {', '.join(LIFECYCLE_STAGES)}"
    )


class IdleCondition(_Declared):
    """No app activity (open, log-in, milestone, click) in the last `days` days."""

    on: Literal["idle"]
    days: int = Field(ge=1, le=366, description="an integer in 1..366")


class AnswerCondition(_Declared):
    """How the customer answered the strategy's latest touch of action node `touch`."""

    on: Literal["answer"]
    touch: NodeId = Field(description="the id of an action node of this strategy")
    answer: Literal[ANSWERS] = Field(description=f"one of {', '.join(ANSWERS)}")  # type: ignore[valid-type]
    within_days: int = Field(3, ge=0, le=100, description="days after the touch, 0..100")


Condition = Annotated[
    TagCondition
    | FeatureCondition
    | ScoreCondition
    | MilestoneCondition
    | StageCondition
    | IdleCondition
    | AnswerCondition,
    Field(discriminator="on"),
]


class EntryNode(_Declared):
    """Who enters: customers in a lifecycle `stage`, or those with `event` on the day."""

    id: NodeId
    kind: Literal["entry"]
    stage: Literal[LIFECYCLE_STAGES] | None = Field(  # type: ignore[valid-type]
        None, description=f"one of {', '.join(LIFECYCLE_STAGES)}"
    )
    event: Literal[JOURNEY_EVENTS] | None = Field(  # type: ignore[valid-type]
        None, description=f"one of {', '.join(JOURNEY_EVENTS)}"
    )
    next: NodeId = Field(description="the id of the node after this one")

    @model_validator(mode="after")
    def _one_trigger(self) -> EntryNode:
        if (self.stage is None) == (self.event is None):
            raise ValueError('give exactly one of stage (e.g. "activate") or event ("register")')
        return self


class ConditionNode(_Declared):
    """`when` holds: go to `then`; else to `else`."""

    id: NodeId
    kind: Literal["condition"]
    when: Condition
    then: NodeId = Field(description="the node when the condition holds")
    otherwise: NodeId = Field(alias="else", description="the node when it does not")


class WaitNode(_Declared):
    """Wait `days` days, then go to `next`."""

    id: NodeId
    kind: Literal["wait"]
    days: int = Field(ge=1, le=100, description="an integer in 1..100")
    next: NodeId = Field(description="the id of the node after this one")


class ActionNode(_Declared):
    """One touch on a channel, with its content and (optionally) an offer."""

    id: NodeId
    kind: Literal["action"]
    channel: Literal[JOURNEY_CHANNELS] = Field(  # type: ignore[valid-type]
        description=f"one of {', '.join(JOURNEY_CHANNELS)}"
    )
    content_id: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$", description="e.g. bind-101"
    )
    offer_id: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    next: NodeId = Field(description="the id of the node after this one")


class ExitNode(_Declared):
    """The customer leaves the strategy."""

    id: NodeId
    kind: Literal["exit"]


Node = Annotated[
    EntryNode | ConditionNode | WaitNode | ActionNode | ExitNode, Field(discriminator="kind")
]


class JourneyGuardrails(_Declared):
    """What the small-traffic stage must show before the A/B test may start."""

    min_exposed: int = Field(
        50, ge=1, description="treated small-traffic customers with an exposure event, >= 1"
    )
    opt_out_rate_max: float = Field(
        0.02, ge=0, le=1, description="opt-outs per exposed customer, in [0, 1]"
    )


class JourneyStages(_Declared):
    """Whitelist -> small traffic (pilot) -> A/B -> full launch."""

    whitelist: list[CustomerId] = Field(
        min_length=1, max_length=1000, description="customer ids of named test customers"
    )
    pilot_share: float = Field(
        0.05, gt=0, le=0.5, description="the small-traffic share of eligible entrants, (0, 0.5]"
    )
    ab_share: float = Field(
        1.0, gt=0, le=1, description="the share of eligible entrants the A/B test takes, (0, 1]"
    )
    ab: AbTest
    full_control_share: float = Field(
        0.05, gt=0, le=0.5, description="the permanent control kept at full launch, (0, 0.5]"
    )
    guardrails: JourneyGuardrails = Field(default_factory=JourneyGuardrails)


class Strategy(_Declared):
    """A whole strategy declaration (TOML file or JSON body)."""

    name: str = Field(
        pattern=NAME_PATTERN,
        description="lower-case letters, digits and '-', 2 to 63 characters",
    )
    description: str = Field("", max_length=2000)
    priority: int = Field(ge=1, le=99, description="1 (first) to 99")
    goal: Literal[MILESTONES] = Field(  # type: ignore[valid-type]
        description=f"the milestone that counts as success, one of {', '.join(MILESTONES)}"
    )
    exit_on_goal: bool = Field(True, description="customers who reach the goal leave the flow")
    horizon_days: int = Field(
        100, ge=1, le=366, description="days after the download the journey lasts, 1..366"
    )
    control_share: float = Field(
        0.5, ge=0.05, le=0.9, description="control share of small traffic and A/B, [0.05, 0.9]"
    )
    screening: Screening = Field(default_factory=Screening)
    stages: JourneyStages
    nodes: list[Node] = Field(min_length=2, max_length=MAX_NODES)

    @model_validator(mode="after")
    def _flow(self) -> Strategy:
        _check_flow(self.nodes)
        return self

    def stage_control_share(self, stage: str) -> float:
        """Return the control share of a stage's entrants (none for the whitelist)."""
        if stage == "whitelist":
            return 0.0
        if stage == "full":
            return self.stages.full_control_share
        return self.control_share

    def stage_traffic_share(self, stage: str) -> float:
        """Return the share of eligible entrants a stage admits (the whitelist names its own)."""
        return {"pilot": self.stages.pilot_share, "ab": self.stages.ab_share}.get(stage, 1.0)

    def entry(self) -> EntryNode:
        """Return the strategy's one entry node."""
        return next(n for n in self.nodes if isinstance(n, EntryNode))

    def node(self, node_id: str) -> Node:
        """Return the node `node_id` (KeyError when there is none)."""
        for node in self.nodes:
            if node.id == node_id:
                return node
        raise KeyError(node_id)

    def canonical_json(self) -> str:
        """Return the declaration as sorted, compact JSON (what the store keeps)."""
        document = self.model_dump(mode="json", by_alias=True)
        return json.dumps(document, sort_keys=True, separators=(",", ":"))


class _FlowError(ValueError):
    """A flow problem, with the node it is about (the error names it as the field)."""

    def __init__(self, message: str, node: str) -> None:
        super().__init__(message)
        self.node = node


def edges(node: Node) -> list[str]:
    """Return the ids a node leads to (none for an exit)."""
    if isinstance(node, ConditionNode):
        return [node.then, node.otherwise]
    if isinstance(node, ExitNode):
        return []
    return [node.next]


def _check_flow(nodes: list[Node]) -> None:
    """Raise _FlowError for the first flow problem (module docstring)."""
    ids: dict[str, Node] = {}
    for node in nodes:
        if node.id in ids:
            raise _FlowError(
                f"the node id {node.id!r} is used twice; give each node its own id", node.id
            )
        ids[node.id] = node
    entries = [n.id for n in nodes if isinstance(n, EntryNode)]
    if len(entries) != 1:
        found = ", ".join(entries) or "none"
        raise _FlowError(
            f"a strategy has exactly one entry node, found {found}",
            entries[-1] if entries else "nodes",
        )
    for node in nodes:
        for target in edges(node):
            if target not in ids:
                raise _FlowError(
                    f"node {node.id!r} leads to {target!r}, which is not a node; name one of "
                    f"{', '.join(ids)}",
                    node.id,
                )
            if target == entries[0]:
                raise _FlowError(
                    f"node {node.id!r} leads back to the entry; lead it to the node after it",
                    node.id,
                )
        if isinstance(node, ConditionNode) and isinstance(node.when, AnswerCondition):
            touched = ids.get(node.when.touch)
            if not isinstance(touched, ActionNode):
                raise _FlowError(
                    f"node {node.id!r} asks for the answer to {node.when.touch!r}, which is not "
                    "an action node of this strategy; name the action whose touch it answers",
                    node.id,
                )
    _check_reachable(ids, entries[0])
    _check_loops(ids)


def _check_reachable(ids: Mapping[str, Node], entry: str) -> None:
    seen = {entry}
    todo = [entry]
    while todo:
        for target in edges(ids[todo.pop()]):
            if target not in seen:
                seen.add(target)
                todo.append(target)
    for node_id in ids:
        if node_id not in seen:
            raise _FlowError(
                f"node {node_id!r} cannot be reached from the entry; connect a node to it or "
                "remove it",
                node_id,
            )


def _check_loops(ids: Mapping[str, Node]) -> None:
    """Refuse a cycle through non-wait nodes only: a customer would go round it in one day."""
    state: dict[str, int] = {}

    def visit(node_id: str, path: list[str]) -> None:
        state[node_id] = 1
        for target in edges(ids[node_id]):
            if isinstance(ids[target], WaitNode):
                continue
            if state.get(target) == 1:
                loop = (
                    [*path[path.index(target) :], target] if target in path else [node_id, target]
                )
                raise _FlowError(
                    f"the loop {' -> '.join(loop)} has no wait node; put a wait node in it",
                    target,
                )
            if target not in state:
                visit(target, [*path, target])
        state[node_id] = 2

    for node_id, node in ids.items():
        if node_id not in state and not isinstance(node, WaitNode):
            visit(node_id, [node_id])


def load_strategy(source: Path | str | Mapping[str, Any]) -> Strategy:
    """Return the strategy declared by a TOML file, a TOML/JSON text or a parsed document.

    Raises DeclarationError naming the first invalid field (`nodes[<id>].<field>` for a node),
    what arrived and what to write instead.
    """
    document = read_document(source, what="strategy", example="docs/journeys.md")
    try:
        return Strategy.model_validate(document)
    except ValidationError as error:
        raise _declaration_error(error, document) from None


def _declaration_error(error: ValidationError, document: Mapping[str, Any]) -> DeclarationError:
    """Return the DeclarationError of a validation error's first problem."""
    first = error.errors(include_url=False, include_input=False)[0]
    name = document.get("name") if isinstance(document.get("name"), str) else None
    context = first.get("ctx") or {}
    flow = context.get("error")
    if isinstance(flow, _FlowError):
        field = f"nodes[{flow.node}]" if flow.node != "nodes" else "nodes"
        return DeclarationError(f"strategy: {field}: {flow}", field=field, campaign=name)
    location = [str(part) for part in first["loc"]]
    field = _field(location, document)
    message = first["msg"]
    if first["type"] == "missing":
        message = "this field is required"
    elif first["type"] == "extra_forbidden":
        message = "this field is not part of a strategy; remove it (check spelling)"
    elif first["type"] == "union_tag_invalid":
        message = (
            f"unknown kind; a node's kind is one of {', '.join(NODE_KINDS)} and a condition's "
            f"`on` one of {', '.join(CONDITION_KINDS)}"
        )
    elif first["type"] == "union_tag_not_found":
        message = "say what it is: a node needs `kind`, a condition `on`"
    return DeclarationError(
        f"strategy: {field}: {message}{more_problems(error)}", field=field, campaign=name
    )


def _field(location: list[str], document: Mapping[str, Any]) -> str:
    """Return the dotted path, with a node's id in place of its index and no union tags."""
    parts: list[str] = []
    index = 0
    while index < len(location):
        part = location[index]
        if part == "nodes" and index + 1 < len(location) and location[index + 1].isdigit():
            position = int(location[index + 1])
            nodes = document.get("nodes")
            node_id = None
            if (
                isinstance(nodes, list)
                and position < len(nodes)
                and isinstance(nodes[position], Mapping)
            ):
                node_id = nodes[position].get("id")
            parts.append(f"nodes[{node_id if isinstance(node_id, str) else position}]")
            index += 2
            if index < len(location) and location[index] in NODE_KINDS:
                index += 1
            continue
        if parts and parts[-1] == "when" and part in CONDITION_KINDS:
            index += 1
            continue
        parts.append("else" if part == "otherwise" else part)
        index += 1
    return ".".join(parts).replace(".nodes[", "nodes[") or "strategy"
