"""`fusion campaign ...` end to end on a run folder: declare, plan two overlapping campaigns, every
refused promotion with its gate, deliveries, outcome events, the readout, list, show, close.

One module fixture makes a run folder as `fusion score` leaves it (a store of 6,000 customers,
their feature snapshot and score files drawn from a seed: no model is trained, the planner reads
the same files either way) and runs the whole story through CliRunner, keeping every command's
result; each test reads the part of the story it checks. The campaigns are named
cli-rescue and cli-coupon (the demo runs its own rescue-call and food-coupon-sms).
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from click.testing import Result
from typer.testing import CliRunner

from fusion.pipeline.bank import Bank, open_bank
from fusion.runfolder import RunFolder
from labs.cli import app
from tests.support.campaign_banks import campaign_bank

pytestmark = pytest.mark.slow  # the whole campaign loop through the CLI, one story

runner = CliRunner()

RESCUE, COUPON = "cli-rescue", "cli-coupon"
WINDOW = "2027-06-01"  # after every window the demo's own campaigns plan

_DECLARATION = """
name = "{name}"
description = "A test campaign of the CLI."
priority = {priority}
window_days = 28

[objective]
event = "{event}"
value = {value}
cost_per_contact = {cost}

[audience]
source = "model"
model = "{model}"
top_share = {top_share}

[channel]
kind = "{channel}"
capacity_per_branch_per_day = {capacity}

[stages]
whitelist = {whitelist}
pilot_share = 0.5

[stages.ab]
baseline_rate = {baseline}
minimum_detectable_effect = 0.02

[stages.guardrails]
min_delivered = 20
"""


@dataclass
class Story:
    """The run folder, the campaigns' whitelists, every command's result, and what was kept."""

    run: Path
    whitelists: dict[str, list[int]]
    results: dict[str, Result] = field(default_factory=dict)
    delivered_bytes: dict[str, bytes] = field(default_factory=dict)
    redelivered_bytes: dict[str, bytes] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)

    def invoke(self, key: str, *args: str) -> Result:
        """Run `fusion campaign <args> --run <run>` and keep its result under `key`."""
        result = runner.invoke(app, ["campaign", *args, "--run", str(self.run)])
        self.results[key] = result
        return result

    def ok(self, key: str, *args: str) -> Result:
        """Run a step the story needs to succeed (exit 0), and keep it."""
        result = self.invoke(key, *args)
        assert result.exit_code == 0, f"{key}: {result.output}"
        return result


def _flat(result: Result) -> str:
    return " ".join(result.output.split())


def _first_line(result: Result) -> str:
    return result.output.strip().splitlines()[0]


@contextmanager
def _bank(run: Path) -> Iterator[Bank]:
    with open_bank(RunFolder(run), read_only=True) as bank:
        yield bank


def _assigned(run: Path, name: str) -> pl.DataFrame:
    with _bank(run) as bank:
        return bank.store.execute(
            "SELECT customer_id, stage, arm FROM assignments WHERE campaign_id = ?", [name]
        ).pl()


def _events_csv(path: Path, rows: list[tuple[str, int, str]], *, at: datetime) -> Path:
    """Write funnel events (campaign, customer, event) occurring at `at` as a CSV file."""
    stamp = at.replace(tzinfo=None).isoformat(timespec="microseconds")
    pl.DataFrame(
        {
            "campaign_id": [r[0] for r in rows],
            "customer_id": [r[1] for r in rows],
            "event": [r[2] for r in rows],
            "occurred_at": [stamp] * len(rows),
        },
        schema={
            "campaign_id": pl.String,
            "customer_id": pl.Int64,
            "event": pl.String,
            "occurred_at": pl.String,
        },
    ).write_csv(path)
    return path


def _delivered_ids(run: Path, name: str, version: int) -> list[int]:
    files = sorted((run / "deliveries" / name / f"v{version}").rglob("*.parquet"))
    assert files, f"no delivery files of {name} v{version}"
    return pl.concat(pl.read_parquet(f) for f in files)["customer_id"].to_list()


def _folder_bytes(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*.*"))}


def _declare(story: Story, tmp: Path) -> None:
    """Create both campaigns (TOML and JSON), again, and from a bad and a missing file."""
    rescue = _DECLARATION.format(
        name=RESCUE, priority=1, event="converted", value=120.0, cost=3.0, model="rescue",
        top_share=0.5, channel="call_centre", capacity=60,
        whitelist=story.whitelists[RESCUE], baseline=0.01,
    )  # fmt: skip
    (tmp / "rescue.toml").write_text(rescue)
    story.ok("create", "create", str(tmp / "rescue.toml"), "--actor", "tester")
    story.ok("create_again", "create", str(tmp / "rescue.toml"))
    coupon = _DECLARATION.format(
        name=COUPON, priority=2, event="responded", value=40.0, cost=0.05, model="uplift",
        top_share=1.0, channel="sms", capacity=2000,
        whitelist=story.whitelists[COUPON], baseline=0.05,
    )  # fmt: skip
    (tmp / "coupon.json").write_text(json.dumps(tomllib.loads(coupon)))
    story.ok("create_json", "create", str(tmp / "coupon.json"))
    (tmp / "bad.toml").write_text(rescue.replace("value = 120.0", 'value = "120"'))
    story.invoke("create_bad", "create", str(tmp / "bad.toml"))
    story.invoke("create_missing", "create", str(tmp / "no-such.toml"))


def _whitelist(story: Story, tmp: Path) -> None:
    """Promote both to the whitelist, plan, and meet each gate refusal on the way to the pilot."""
    story.invoke("skip_stage", "promote", RESCUE, "--to", "pilot")
    story.ok("to_whitelist", "promote", RESCUE)
    story.ok("to_whitelist_coupon", "promote", COUPON, "--to", "whitelist")
    story.invoke("plan_whitelist", "plan", RESCUE, COUPON, "--window-start", WINDOW)
    story.invoke("before_delivery", "promote", RESCUE)
    story.ok("deliver_whitelist", "deliver", RESCUE)
    story.ok("deliver_whitelist_coupon", "deliver", COUPON)
    story.invoke("before_events", "promote", RESCUE)
    named = [(n, c, "delivered") for n, ids in story.whitelists.items() for c in ids]
    events = _events_csv(tmp / "whitelist.csv", named, at=datetime.now(UTC))
    story.ok("whitelist_events", "outcomes", str(events), "--source", "call-centre")
    story.ok("to_pilot", "promote", RESCUE)
    story.ok("to_pilot_coupon", "promote", COUPON)


def _pilot(story: Story, tmp: Path) -> None:
    """Plan the pilots together, deliver (twice), send events, meet the pilot's gates."""
    story.invoke("plan_pilot", "plan", RESCUE, COUPON, "--window-start", WINDOW)
    story.invoke("plan_pilot_again", "plan", RESCUE, COUPON, "--window-start", WINDOW)
    story.ok("deliver_pilot", "deliver", RESCUE)
    story.ok("deliver_pilot_coupon", "deliver", COUPON)
    folder = story.run / "deliveries" / COUPON / "v2"
    story.delivered_bytes = _folder_bytes(folder)
    story.ok("deliver_again", "deliver", COUPON)
    story.redelivered_bytes = _folder_bytes(folder)

    # The rescue pilot: every call delivered, 5% of them complain (the limit is 1%).
    called = _delivered_ids(story.run, RESCUE, 2)
    complaints = called[: max(2, len(called) // 20)]
    rows = [(RESCUE, c, "delivered") for c in called] + [
        (RESCUE, c, "complained") for c in complaints
    ]
    story.ok(
        "rescue_events", "outcomes", str(_events_csv(tmp / "r.csv", rows, at=datetime.now(UTC)))
    )
    story.invoke("guardrail", "promote", RESCUE)

    # The coupon pilot: every SMS delivered; a fifth of the treated and a tenth of the control
    # respond.
    texted = _delivered_ids(story.run, COUPON, 2)
    arms = _assigned(story.run, COUPON).filter(pl.col("stage") == "pilot")
    control = arms.filter(pl.col("arm") == "control")["customer_id"].to_list()
    rows = [(COUPON, c, "delivered") for c in texted]
    rows += [(COUPON, c, "responded") for c in texted[::5]]
    rows += [(COUPON, c, "responded") for c in control[::10]]
    coupon_events = _events_csv(tmp / "c.csv", rows, at=datetime.now(UTC))
    story.ok("coupon_events", "outcomes", str(coupon_events))
    story.ok("coupon_events_again", "outcomes", str(coupon_events))
    story.ok("to_ab_coupon", "promote", COUPON)
    story.invoke("before_planned_size", "promote", COUPON, "--to", "full")
    story.files["coupon_events"] = coupon_events

    # Bad rows among good ones.
    bad = tmp / "bad-events.csv"
    later = (datetime.now(UTC) + timedelta(days=2)).replace(tzinfo=None).isoformat()
    now = datetime.now(UTC).replace(tzinfo=None).isoformat()
    bad.write_text(
        "campaign_id,customer_id,event,occurred_at,amount\n"
        f"{COUPON},{control[1]},converted,{now},55.5\n"  # good: a control customer converts
        f"{COUPON},{texted[1]},bought,{now},\n"  # unknown event
        f"{COUPON},{texted[2]},responded,{later},\n"  # in the future
        f"{COUPON},{control[2]},delivered,{now},\n"  # a control customer is never contacted
        f"{COUPON},5,responded,{now},\n"  # not a customer
        f"{COUPON},{texted[3]},responded,{now},12\n"  # an amount on a responded event
        f"{COUPON},{texted[4]},responded,yesterday,\n"  # no date-time
        f"no-such-campaign,{texted[5]},responded,{now},\n"  # unknown campaign
    )
    story.invoke("bad_events", "outcomes", str(bad))
    many = tmp / "many-bad.csv"
    many.write_text(
        "campaign_id,customer_id,event,occurred_at\n"
        + "".join(f"{COUPON},{c},bought,{now}\n" for c in texted[10:22])
    )
    story.invoke("many_bad_events", "outcomes", str(many))


def _metrics(story: Story, tmp: Path) -> None:
    """Record an AUM metric of the coupon's pilot: a pre-period, and 1,000 more when treated."""
    arms = _assigned(story.run, COUPON).filter(pl.col("stage") == "pilot")
    rng = np.random.default_rng(5)
    pre = rng.lognormal(10, 1, arms.height)
    metrics = arms.select(
        campaign_id=pl.lit(COUPON),
        customer_id="customer_id",
        metric=pl.lit("aum"),
        value=pl.Series(pre * 1.01)
        + pl.when(pl.col("arm") == "treatment").then(1_000).otherwise(0),
        pre_value=pl.Series(pre),
        measured_at=pl.lit(datetime(2026, 11, 1)),
    )
    metrics.write_parquet(tmp / "metrics.parquet")
    story.ok("metrics", "metrics", str(tmp / "metrics.parquet"))
    story.invoke("metrics_bad", "metrics", str(tmp / "bad-events.csv"))


def _tamper(story: Story) -> None:
    """Move a third of the coupon's control customers into treatment, as a broken feed would."""
    with open_bank(RunFolder(story.run)) as bank:
        bank.store.execute(
            "UPDATE assignments SET arm = 'treatment' WHERE campaign_id = ? AND arm = 'control' "
            "AND customer_id % 3 = 0",
            [COUPON],
        )


@pytest.fixture(scope="module")
def story(tmp_path_factory: pytest.TempPathFactory) -> Story:
    tmp = tmp_path_factory.mktemp("cli-campaigns")
    run = tmp / "run"
    campaign_bank(run, tmp / "duckdb-extensions", n=6_000)
    features = next((run / "features").glob("*/features.parquet"))
    ids = pl.read_parquet(features, columns=["customer_id"])["customer_id"].sort().to_list()
    # Named test customers away from the demo's own (its first three).
    story = Story(run, {RESCUE: ids[100:103], COUPON: ids[200:203]})
    _declare(story, tmp)
    _whitelist(story, tmp)
    _pilot(story, tmp)
    _metrics(story, tmp)
    story.invoke("readout", "readout", COUPON, "-k", "10")
    story.ok("list", "list")
    story.ok("show", "show", RESCUE)
    _tamper(story)
    story.invoke("readout_tampered", "readout", COUPON, "--out", str(tmp / "tampered"))
    story.ok("close", "close", RESCUE)
    story.invoke("promote_closed", "promote", RESCUE)
    story.invoke("bad_window", "plan", COUPON, "--window-start", "01/06/2027")
    story.invoke("unknown", "deliver", "no-such-campaign")
    return story


def _refused(result: Result, gate: str) -> str:
    """Return the refusal's line after checking it: exit 2, one line naming the gate."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith(f"error: gate {gate}: "), lines[0]
    return lines[0]


def test_create_says_created_then_unchanged(story: Story):
    created = _flat(story.results["create"])
    assert f"campaign {RESCUE}: created" in created
    assert "version 1" in created and "stage draft" in created
    assert f"campaign {RESCUE}: unchanged" in _flat(story.results["create_again"])
    assert f"campaign {COUPON}: created" in _flat(story.results["create_json"])


def test_a_bad_declaration_names_its_field_on_the_first_line(story: Story):
    bad = story.results["create_bad"]
    assert bad.exit_code == 2
    assert bad.output.count("\n") == 1, bad.output  # one line
    line = _first_line(bad)
    assert line.startswith("error: ") and ": campaign declaration: objective.value: " in line
    assert "Traceback" not in bad.output
    missing = story.results["create_missing"]
    assert missing.exit_code == 2 and missing.output.count("\n") == 1, missing.output
    assert _first_line(missing).endswith(
        "no-such.toml does not exist: give the path of the campaign declaration; see the "
        "example in docs/campaigns.md"
    )
    assert "Traceback" not in missing.output


def test_plan_prints_every_rule_and_no_customer_is_in_both_campaigns(story: Story):
    plan = _flat(story.results["plan_pilot"])
    rows = (
        "audience", "already_assigned", "suppressed:do-not-disturb", "suppressed:opt-out",
        "complaint", "frequency_cap", "cooling_off", "stage_quota", "assigned_elsewhere",
        "lost_arbitration", "capacity", "treatment", "control", "sample-ratio p",
    )  # fmt: skip
    for row in rows:
        assert row in plan, row
    rescue, coupon = _assigned(story.run, RESCUE), _assigned(story.run, COUPON)
    assert rescue.filter(pl.col("stage") == "pilot").height > 0
    assert coupon.filter(pl.col("stage") == "pilot").height > 0
    # The audiences overlap (the coupon takes the whole uplift ranking); arbitration gave each
    # shared customer to one campaign only.
    both = rescue.join(coupon, on="customer_id")
    assert both.is_empty()
    again = _flat(story.results["plan_pilot_again"])
    assert "planned before" in again and "nothing was written" in again


def test_plans_exit_0_with_no_sample_ratio_finding(story: Story):
    # Assignment is exact within each stratum: a fresh plan's arms always fit the rule.
    for key in ("plan_whitelist", "plan_pilot", "plan_pilot_again"):
        result = story.results[key]
        assert result.exit_code == 0 and "finding" not in result.output, result.output


def test_plan_of_the_whitelist_takes_the_named_customers(story: Story):
    rescue = _assigned(story.run, RESCUE).filter(pl.col("stage") == "whitelist")
    assert sorted(rescue["customer_id"].to_list()) == story.whitelists[RESCUE]
    assert set(rescue["arm"].to_list()) == {"treatment"}


def test_every_wrong_promotion_is_refused_with_its_gate(story: Story):
    assert "'whitelist'" in _refused(story.results["skip_stage"], "order")
    assert "deliver" in _refused(story.results["before_delivery"], "whitelist_delivered")
    assert "0 of 3" in _refused(story.results["before_events"], "whitelist_confirmed")
    assert "limit 1.00%" in _refused(story.results["guardrail"], "complaints")
    assert "planned" in _refused(story.results["before_planned_size"], "ab_size")


def test_passed_promotions_print_their_checks(story: Story):
    to_pilot = _flat(story.results["to_pilot"])
    assert f"campaign {RESCUE}: whitelist -> pilot" in to_pilot
    assert "ok whitelist_delivered" in to_pilot and "ok whitelist_confirmed" in to_pilot
    to_ab = _flat(story.results["to_ab_coupon"])
    assert "pilot -> ab" in to_ab
    for check in ("pilot_delivered", "complaints", "opt_outs", "sample_ratio"):
        assert f"ok {check}" in to_ab


def test_deliver_twice_writes_nothing_new_and_the_same_bytes(story: Story):
    first = _flat(story.results["deliver_pilot_coupon"])
    assert "delivery v2" in first and "rows in" in first and "folder:" in first
    again = _flat(story.results["deliver_again"])
    assert "nothing new to deliver" in again and "v2" in again
    assert story.delivered_bytes and story.delivered_bytes == story.redelivered_bytes
    # No control customer in any file.
    control = _assigned(story.run, COUPON).filter(pl.col("arm") == "control")["customer_id"]
    assert not set(_delivered_ids(story.run, COUPON, 2)) & set(control.to_list())


def test_outcomes_are_recorded_once(story: Story):
    first = re.search(r"events: ([\d,]+) recorded, 0 already recorded, 0 refused",
                      _flat(story.results["coupon_events"]))  # fmt: skip
    assert first and int(first[1].replace(",", "")) > 0
    again = _flat(story.results["coupon_events_again"])
    assert again.startswith("events: 0 recorded") and "0 refused" in again


def test_bad_event_rows_exit_1_with_their_reasons(story: Story):
    bad = story.results["bad_events"]
    assert bad.exit_code == 1, bad.output
    text = _flat(bad)
    assert "events: 1 recorded, 0 already recorded, 7 refused" in text
    for reason in ("unknown event", "in the future", "control customers are never contacted",
                   "unknown customer", "carries no amount", "not a date-time",
                   "unknown campaign"):  # fmt: skip
        assert reason in text, reason
    assert "line 3: unknown event" in text  # the first data row is line 2
    many = story.results["many_bad_events"]
    assert many.exit_code == 1
    text = _flat(many)
    assert "12 refused" in text and "12 x unknown event" in text
    assert "first refused: line 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, ..." in text


def test_readout_prints_the_figures_and_writes_files_without_customer_ids(story: Story):
    result = story.results["readout"]
    assert result.exit_code == 0, result.output
    text = _flat(result)
    for figure in ("Arms", "treatment", "control", "lift:", "CI", "incremental responded",
                   "ROI", "sample ratio: ok", "power", "decision: interim"):  # fmt: skip
        assert figure in text, figure
    folder = story.run / "reports" / "campaigns" / COUPON
    page, document = folder / "readout.html", folder / "readout.json"
    assert f"report: {page}" in result.output  # one line, whatever the terminal's width
    assert (folder / "readout.parquet").is_file()
    readout = json.loads(document.read_text())
    assert readout["status"] == "interim" and readout["decision"] is None
    ids = {str(c) for c in _assigned(story.run, COUPON)["customer_id"].to_list()}
    for path in (page, document):
        words = set(re.findall(r"\d+", path.read_text()))
        assert not words & ids, path.name
        assert "customer_id" not in path.read_text()


def test_a_readout_with_a_sample_ratio_mismatch_exits_1(story: Story):
    result = story.results["readout_tampered"]
    assert result.exit_code == 1, result.output
    text = _flat(result)
    assert "sample ratio: MISMATCH" in text
    assert "finding: sample-ratio mismatch" in text


def test_list_show_and_close(story: Story):
    listed = _flat(story.results["list"])
    assert RESCUE in listed and COUPON in listed and "call_centre" in listed
    shown = _flat(story.results["show"])
    assert '"name": "cli-rescue"' in shown and "stage history" in shown
    assert "draft -> whitelist" in shown and "whitelist -> pilot" in shown
    assert "pilot -> closed" in _flat(story.results["close"])
    closed = story.results["promote_closed"]
    assert closed.exit_code == 2 and "closed" in _first_line(closed)


def test_usage_errors_exit_2_without_a_traceback(story: Story):
    for key in ("bad_window", "unknown"):
        result = story.results[key]
        assert result.exit_code == 2, result.output
        assert "Traceback" not in result.output
    assert "no campaign 'no-such-campaign'" in _flat(story.results["unknown"])


def test_metrics_are_recorded_and_the_readout_adjusts_them(story: Story):
    assert "metric rows recorded from metrics.parquet" in story.results["metrics"].stderr
    bad = story.results["metrics_bad"]
    assert bad.exit_code == 2 and "is not a metrics file (Parquet) file" in _flat(bad)
    readout = json.loads(
        (story.run / "reports" / "campaigns" / COUPON / "readout.json").read_text()
    )
    assert "aum" in json.dumps(readout["adjusted"])
