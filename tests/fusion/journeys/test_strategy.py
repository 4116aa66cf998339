"""Strategy declarations: the examples load, and every flow mistake is named by its node."""

from __future__ import annotations

import tomllib
from typing import Any

import pytest

from contracts.errors import DeclarationError
from fusion.journeys.strategy import load_strategy
from tests.support.journeys import EXAMPLES


def document(name: str = "activation-push") -> dict[str, Any]:
    return tomllib.loads((EXAMPLES / f"{name}.toml").read_text())


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.toml")), ids=lambda p: p.stem)
def test_examples_load_and_round_trip(path):
    strategy = load_strategy(path)
    assert load_strategy(strategy.canonical_json()) == strategy


def node(doc: dict[str, Any], node_id: str) -> dict[str, Any]:
    return next(n for n in doc["nodes"] if n["id"] == node_id)


CASES = [
    ("unknown channel", lambda d: node(d, "push").update(channel="fax"), "nodes[push].channel"),
    ("edge to nowhere", lambda d: node(d, "push").update(next="nowhere"), "nodes[push]"),
    ("unreachable", lambda d: d["nodes"].append({"id": "lost", "kind": "exit"}), "nodes[lost]"),
    ("loop without wait", lambda d: node(d, "popup").update(next="clicked"), "nodes[clicked]"),
    ("back to entry", lambda d: node(d, "popup").update(next="registered"), "nodes[popup]"),
    (
        "answer to a wait",
        lambda d: node(d, "clicked")["when"].update(touch="settle"),
        "nodes[clicked]",
    ),
    (
        "two entries",
        lambda d: d["nodes"].append(
            {"id": "again", "kind": "entry", "event": "login", "next": "done"}
        ),
        "nodes[again]",
    ),
    ("misspelt key", lambda d: d.update(priorty=1), "priorty"),
    ("wait of 0 days", lambda d: node(d, "settle").update(days=0), "nodes[settle].days"),
    (
        "unknown condition",
        lambda d: node(d, "still-unbound")["when"].update(on="mood"),
        "nodes[still-unbound].when",
    ),
    ("entry with both", lambda d: node(d, "registered").update(event="login"), "nodes[registered]"),
    ("no goal", lambda d: d.pop("goal"), "goal"),
]


@pytest.mark.parametrize(
    ("change", "field"), [(c, f) for _, c, f in CASES], ids=[name for name, _, _ in CASES]
)
def test_each_mistake_names_its_node(change, field):
    doc = document()
    change(doc)
    with pytest.raises(DeclarationError) as raised:
        load_strategy(doc)
    assert raised.value.field == field
    assert field in str(raised.value) and raised.value.campaign == "activation-push"


def test_a_loop_through_a_wait_is_fine():
    assert load_strategy(document("idle-sms")).node("week").kind == "wait"


def test_bad_text_is_named_as_the_file():
    with pytest.raises(DeclarationError) as raised:
        load_strategy("name = ")
    assert raised.value.field == "file"
