"""Champion/challenger through the service and the command line, on the served demo run.

A challenger worse than the champion (the in-bank model saved under the fused model's name) is
refused, a better one (fused over in-bank) is promoted, an override needs a written reason, and
a rollback gives back the very scores the previous version gave. Every request is a row of the
store's promotion log.
"""

from __future__ import annotations

import shutil
from datetime import timedelta
from pathlib import Path

import httpx
import numpy as np

from fusion.models.classifier import ScoreModel
from fusion.registry import Registry
from tests.support.cli import first_line, fusion
from tests.support.server import NOW, ServedRun, bearer


def _save_as(registry: Registry, model: ScoreModel, name: str, days: int, holdout_of: str) -> str:
    """Return the version of `model` saved under `name`, judged on `holdout_of`'s customers."""
    model.name = name
    ref = registry.save(
        model,
        created_at=NOW + timedelta(days=days),
        make_current=registry.current(name) is None,
        holdout=registry.holdout(holdout_of),
    )
    return ref.version


def _scores(served: ServedRun, ids: list[int]) -> dict:
    answer = httpx.post(
        f"{served.url}/v1/scores",
        json={"customer_ids": ids},
        headers=bearer(served.tokens.campaign_tool),
        timeout=60,
    )
    assert answer.status_code == 200, answer.text
    return answer.json()


def _post(served: ServedRun, path: str, body: dict, token: str | None = None) -> httpx.Response:
    return httpx.post(
        f"{served.url}/v1/models/{path}",
        json=body,
        headers=bearer(token or served.tokens.admin),
        timeout=120,
    )


def test_promotion_refuses_a_worse_challenger_and_rollback_restores_the_scores(
    served: ServedRun,
):
    registry = Registry(served.folder.models)
    champion = registry.current("acquisition")
    assert champion is not None
    worse = _save_as(
        registry, registry.load_score_model("acquisition-in-bank"), "acquisition", 1, "acquisition"
    )
    assert registry.current("acquisition") == champion  # a new version is a challenger
    ids = [int(i) for i in np.asarray(registry.holdout("acquisition").customer_id[:25])]
    before = _scores(served, ids)

    refused = _post(served, "acquisition/promote", {"version": worse})
    assert refused.status_code == 409, refused.text
    body = refused.json()
    assert body["moved"] is False and body["judgement"]["metric"] == "auc"
    assert body["judgement"]["diff"] < 0 and "DeLong" in body["judgement"]["method"]
    assert registry.current("acquisition") == champion

    short = _post(served, "acquisition/promote", {"override": True, "reason": "why"})
    assert short.status_code == 400 and "10 characters" in short.text
    forced = _post(
        served,
        "acquisition/promote",
        {"version": worse, "override": True, "reason": "testing the override path"},
    )
    assert forced.status_code == 200, forced.text
    assert forced.json()["moved"] is True and forced.json()["passed"] is False
    during = _scores(served, ids)
    assert during["model_version"] == worse
    assert [s["score"] for s in during["scores"]] != [s["score"] for s in before["scores"]]

    back = _post(served, "acquisition/rollback", {"reason": "the in-bank model scores worse"})
    assert back.status_code == 200, back.text
    assert back.json()["to_version"] == champion
    after = _scores(served, ids)
    assert after == before  # the very same scores, deciles, reasons and version
    listed = httpx.get(
        f"{served.url}/v1/models?name=acquisition", headers=bearer(served.tokens.admin)
    )
    versions = {v["version"]: v["current"] for v in listed.json()["versions"]}
    assert versions == {champion: True, worse: False}
    with served.service.bank() as bank:
        log = bank.store.execute(
            "SELECT action, moved, override, actor, reason FROM model_promotions "
            "WHERE model = 'acquisition' ORDER BY \"at\""
        ).fetchall()
    assert [(a, m, o) for a, m, o, _, _ in log] == [
        ("promote", False, False),
        ("promote", True, True),
        ("rollback", True, False),
    ]
    assert all(actor and "bf_" not in actor for *_, actor, _ in log)


def test_promotion_accepts_a_better_challenger(served: ServedRun):
    registry = Registry(served.folder.models)
    weak = _save_as(
        registry, registry.load_score_model("acquisition-in-bank"), "gate-demo", 10, "acquisition"
    )
    strong = _save_as(
        registry, registry.load_score_model("acquisition"), "gate-demo", 11, "acquisition"
    )
    assert registry.current("gate-demo") == weak
    denied = _post(served, "gate-demo/promote", {}, served.tokens.campaign_tool)
    assert denied.status_code == 403
    answer = _post(served, "gate-demo/promote", {})
    assert answer.status_code == 200, answer.text
    judged = answer.json()["judgement"]
    assert judged["passed"] is True and judged["ci_low"] > 0 and judged["diff"] > 0
    assert registry.current("gate-demo") == strong
    again = _post(served, "gate-demo/promote", {})
    assert again.status_code == 409 and "already CURRENT" in again.text
    unknown = _post(served, "nothing-here/rollback", {"reason": "no such model at all"})
    assert unknown.status_code == 409 and "no CURRENT" in unknown.text


def test_cli_promotion_refuses_a_worse_challenger_and_accepts_a_better_one(
    demo_run: Path, tmp_path: Path
):
    run = tmp_path / "run"
    shutil.copytree(demo_run, run, symlinks=True)
    registry = Registry(run / "models")
    champion = registry.current("acquisition")
    worse = _save_as(
        registry, registry.load_score_model("acquisition-in-bank"), "acquisition", 1, "acquisition"
    )
    refused = fusion(run, "models", "promote", "acquisition", "--version", worse)
    assert refused.exit_code == 2, refused.output
    assert "does not beat the champion" in " ".join(refused.output.split())
    assert registry.current("acquisition") == champion
    no_reason = fusion(run, "models", "rollback", "acquisition")
    assert no_reason.exit_code == 2 and "reason" in first_line(no_reason.output)
    weak = _save_as(
        registry, registry.load_score_model("acquisition-in-bank"), "gate-cli", 2, "acquisition"
    )
    strong = _save_as(
        registry, registry.load_score_model("acquisition"), "gate-cli", 3, "acquisition"
    )
    accepted = fusion(run, "models", "promote", "gate-cli", "--actor", "lead")
    assert accepted.exit_code == 0, accepted.output
    assert registry.current("gate-cli") == strong
    listed = fusion(run, "models", "list", "gate-cli")
    assert listed.exit_code == 0 and strong in listed.output and "CURRENT" in listed.output
    back = fusion(run, "models", "rollback", "gate-cli", "--reason", "checking the rollback")
    assert back.exit_code == 0, back.output
    assert registry.current("gate-cli") == weak
    assert worse in fusion(run, "models", "list").output
