"""Deliveries: treated customers only, versioned, idempotent, and whole after a SIGKILL."""

from __future__ import annotations

import hashlib
from datetime import date
from pathlib import Path

import polars as pl
import pytest

from contracts.errors import CampaignError
from fusion.campaigns.delivery import DELIVERY_COLUMNS, deliver
from fusion.pipeline.campaigns import deliver_campaign, plan_window
from fusion.runfolder import RunFolder
from tests.support.campaign_banks import (
    T0,
    campaign_bank,
    declaration,
    declare,
    killed_mid_commit,
    open_campaign_bank,
)

DAY = date(2026, 10, 2)


def _planned(folder: RunFolder, ext_dir: Path) -> None:
    with open_campaign_bank(folder, ext_dir) as bank:
        declare(bank, declaration("calls"))
        bank.store.execute("UPDATE campaigns SET stage = 'pilot'")
        plan_window(bank, ["calls"], window_start=DAY, actor="t", now=T0)


def _digests(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def folder(tmp_path: Path, ext_dir: Path) -> RunFolder:
    folder = campaign_bank(tmp_path / "run", ext_dir)
    _planned(folder, ext_dir)
    return folder


def test_a_delivery_holds_the_treated_only_and_nothing_but_ids(folder, ext_dir):
    with open_campaign_bank(folder, ext_dir) as bank:
        delivery = deliver_campaign(bank, "calls", now=T0)
        arms = bank.store.execute(
            "SELECT customer_id, arm FROM assignments WHERE campaign_id = 'calls'"
        ).pl()
        contacts = bank.store.execute("SELECT count(*) FROM contacts").fetchone()
    rows = pl.concat([pl.read_parquet(f["parquet"]) for f in delivery.files.values()])
    assert tuple(rows.columns) == DELIVERY_COLUMNS
    treated = set(arms.filter(pl.col("arm") == "treatment")["customer_id"].to_list())
    assert set(rows["customer_id"].to_list()) == treated
    assert contacts == (len(treated),)
    assert delivery.version == 1 and delivery.new
    csv = pl.concat([pl.read_csv(f["csv"]) for f in delivery.files.values()])
    assert csv.height == rows.height


def test_delivering_again_changes_nothing_and_lost_files_come_back_the_same(folder, ext_dir):
    with open_campaign_bank(folder, ext_dir) as bank:
        first = deliver_campaign(bank, "calls", now=T0)
        before = _digests(folder.deliveries)
        again = deliver_campaign(bank, "calls", now=T0)
        assert (again.version, again.new) == (1, False)
        assert _digests(folder.deliveries) == before
        some = next(iter(first.files.values()))["parquet"]
        some.unlink()
        deliver_campaign(bank, "calls", now=T0)
    assert _digests(folder.deliveries) == before


def test_a_draft_has_nothing_to_deliver(tmp_path: Path, ext_dir: Path):
    folder = campaign_bank(tmp_path / "draft", ext_dir)
    with open_campaign_bank(folder, ext_dir) as bank:
        declare(bank, declaration("calls"))
        with pytest.raises(CampaignError, match="nothing to deliver"):
            deliver(bank.store, "calls", out_dir=folder.deliveries, now=T0)


@pytest.mark.slow  # a subprocess killed mid-commit, two stores
def test_sigkill_mid_delivery_leaves_the_store_as_before_and_a_rerun_the_same_files(
    tmp_path: Path, ext_dir: Path
):
    killed, clean = (campaign_bank(tmp_path / n, ext_dir) for n in ("killed", "clean"))
    for each in (killed, clean):
        _planned(each, ext_dir)
    killed_mid_commit(
        killed, ext_dir, 'deliver_campaign(bank, "calls", now=datetime(2026, 10, 1, 9))'
    )
    with open_campaign_bank(killed, ext_dir) as bank:
        assert bank.store.execute("SELECT count(*) FROM deliveries").fetchone() == (0,)
        assert bank.store.execute("SELECT count(*) FROM contacts").fetchone() == (0,)
        deliver_campaign(bank, "calls", now=T0)
    with open_campaign_bank(clean, ext_dir) as bank:
        deliver_campaign(bank, "calls", now=T0)
    assert _digests(killed.deliveries) == _digests(clean.deliveries)
    assert _digests(killed.deliveries)
