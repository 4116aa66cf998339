"""`fusion journey ...` end to end on a run folder: declare, list, show, promote (and a refused
gate), load events (and a bad row), run a range of days, rerun a day (a no-op), a day out of
order, the dry run, the funnel, the readout, close.

One module fixture makes a run folder as `fusion score` leaves it without training (a store of
500 customers, their feature snapshot and score files: `tests.support.campaign_banks`) and
writes their first 30 days of events (`tests.support.journeys.journey_events`); each test runs
its commands through CliRunner on it, in the order the story needs.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from fusion.pipeline.bank import open_bank
from fusion.runfolder import RunFolder
from labs.cli import app
from labs.cli.terminal import console
from tests.support.campaign_banks import campaign_bank
from tests.support.journeys import DAY0, EXAMPLES, journey_events

runner = CliRunner()
CUSTOMERS = 500

_SCORED = """
name = "score-push"
priority = 3
goal = "bind_card"
control_share = 0.5

[stages]
whitelist = [1000001]

[stages.ab]
baseline_rate = 0.2
minimum_detectable_effect = 0.1

[[nodes]]
id = "registered"
kind = "entry"
stage = "activate"
next = "likely"

[[nodes]]
id = "likely"
kind = "condition"
when = { on = "score", model = "acquisition", op = ">=", value = 0.5 }
then = "push"
else = "done"

[[nodes]]
id = "push"
kind = "action"
channel = "app_push"
content_id = "bind-card-howto"
next = "done"

[[nodes]]
id = "done"
kind = "exit"
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("journey-cli")
    root = tmp / "run"
    campaign_bank(root, tmp / "duckdb-extensions", n=CUSTOMERS)
    events = journey_events(CUSTOMERS, days=30)
    events.write_parquet(root / "events.parquet")
    (root / "score-push.toml").write_text(_SCORED)
    return root


@pytest.fixture(autouse=True)
def wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tables whole: the CLI's console took its width when first imported, whatever COLUMNS says
    now (an earlier module of the same worker may have imported it on a narrow terminal)."""
    monkeypatch.setattr(console, "width", 200)


def invoke(run: Path, *args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["journey", *args, "--run", str(run)], env={"COLUMNS": "200"})
    return result.exit_code, " ".join(result.output.split())


def day(n: int) -> str:
    return (DAY0 + timedelta(days=n)).isoformat()


@pytest.mark.slow  # twenty days of the engine through the command line
def test_the_journey_story_through_the_command_line(run: Path, tmp_path: Path):
    push = str(EXAMPLES / "activation-push.toml")
    code, out = invoke(run, "create", push)
    assert code == 0 and "declared (version 1, stage draft" in out
    assert invoke(run, "create", push)[1].count("unchanged") == 1
    assert invoke(run, "create", str(run / "score-push.toml"))[0] == 0
    code, out = invoke(run, "list")
    assert code == 0 and "activation-push" in out and "score-push" in out and "draft" in out

    # Promotion: a skipped stage names the gate `order` and exits 2; the next stage passes.
    code, out = invoke(run, "promote", "activation-push", "--to", "ab")
    assert code == 2 and "stages are never skipped" in out
    for name in ("activation-push", "score-push"):
        code, out = invoke(run, "promote", name, "--actor", "ana")
        assert code == 0 and "draft -> whitelist" in out
    code, out = invoke(run, "promote", "activation-push")
    assert code == 2 and "whitelist_touched" in out

    # Events in, then the days: a range with a bar, a rerun that writes nothing.
    code, out = invoke(run, "events", str(run / "events.parquet"), "--source", "app")
    assert code == 0 and "refused" in out and " 0 refused" in out
    for name in ("activation-push", "score-push"):  # straight to full launch for the story
        with open_bank(RunFolder(run)) as bank:
            bank.store.execute(
                "UPDATE journey_strategies SET stage = 'full' WHERE strategy_id = ?", [name]
            )
    code, out = invoke(run, "run", "--from", day(0), "--to", day(19))
    assert code == 0 and f"day {day(19)}:" in out and "touches delivered" in out
    code, out = invoke(run, "run", "--day", day(5))
    assert code == 0 and "already done; nothing written" in out
    code, out = invoke(run, "run", "--day", day(-30))
    assert code == 2 and "days run in order" in out
    code, out = invoke(run, "run", "--day", day(2), "--from", day(3))
    assert code == 2 and "not both" in out
    with open_bank(RunFolder(run), read_only=True) as bank:
        runs = bank.store.execute("SELECT count(*) FROM journey_runs").fetchone()[0]
        touched = bank.store.execute(
            "SELECT count(*) FROM journey_touches WHERE strategy_id = 'score-push'"
        ).fetchone()[0]
    assert runs == 20 and touched > 0  # the score condition read the run's score files

    code, out = invoke(run, "dry-run", "--day", day(20))
    assert code == 0 and "Dry run of" in out and "still-unbound" in out
    code, out = invoke(run, "funnel", "--as-of", day(19), "-k", "5")
    assert code == 0 and "Cohort funnel" in out
    code, out = invoke(run, "readout", "activation-push", "--as-of", day(19), "--out",
                       str(tmp_path / "readout"))  # fmt: skip
    assert code in (0, 1) and "Arms" in out and "converted" in out
    assert (tmp_path / "readout" / "readout.html").is_file()
    assert (tmp_path / "readout" / "opt_outs.json").is_file()

    code, out = invoke(run, "show", "activation-push")
    assert code == 0 and "draft -> whitelist by ana" in out and '"goal": "bind_card"' in out
    code, out = invoke(run, "close", "score-push")
    assert code == 0 and "-> closed" in out
    code, out = invoke(run, "promote", "score-push")
    assert code == 2 and "closed" in out


def test_a_bad_event_row_is_refused_by_its_line_and_costs_nothing_else(run: Path, tmp_path: Path):
    bad = tmp_path / "events.csv"
    pl.DataFrame(
        {
            "customer_id": [1_000_001, 1_000_002],
            "event": ["login", "teleport"],
            "occurred_at": ["2026-10-03T10:00:00", "2026-10-03T10:00:00"],
        }
    ).write_csv(bad)
    code, out = invoke(run, "events", str(bad))
    assert code == 1 and "1 recorded" in out and "refused line 3" in out


def test_usage_errors_exit_2_with_one_line(run: Path, tmp_path: Path):
    broken = tmp_path / "broken.toml"
    broken.write_text((EXAMPLES / "idle-sms.toml").read_text().replace('"sms"', '"pigeon"'))
    code, out = invoke(run, "create", str(broken))
    assert code == 2 and "nodes" in out and "channel" in out and "'sms'" in out
    code, out = invoke(run, "show", "no-such-strategy")
    assert code == 2 and "there is no strategy" in out
    code, out = invoke(run, "run")
    assert code == 2 and "--day" in out
