"""The campaign readout page: headline figures, suppressed cells, plots, escaping."""

from __future__ import annotations

import html
import re
from pathlib import Path

import polars as pl
import pytest

from fusion.campaigns.readout import Readout, read_out, write_readout
from fusion.reports.campaign import PAGE_FILE, PLOT_FILES, campaign_page
from tests.fusion.campaigns.test_readout import ASSIGNED, hand_made

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def readout() -> Readout:
    return read_out(*hand_made())


def _table(page: str, name: str) -> str:
    match = re.search(rf'<table id="{name}">.*?</table>', page, re.S)
    assert match, name
    return match.group(0)


def test_headline_shows_lift_money_checks_and_decision(readout: Readout, tmp_path: Path):
    path = campaign_page(readout, tmp_path)
    assert path == tmp_path / PAGE_FILE
    page = path.read_text()
    headline = re.search(r'<div class="headline">(.*?)\n</div>', page, re.S)
    assert headline
    figures = html.unescape(headline.group(1))
    for text in (
        "2.00×",  # relative lift, 20% / 10%
        "+10.0 pp",  # absolute lift
        "95% CI +3.0 pp to +17.0 pp",  # Newcombe
        "Incremental converted",
        "20.0",  # 0.1 x 200 treated
        "455.6%",  # ROI (2,000 - 360) / 360
        "Sample ratio",
        "OK",
        "treatment 200 / control 200",
        "Power reached",
        "81.0%",
        "significant",
        "decided at the fixed horizon of 195 per arm",
    ):
        assert text in figures, text


def test_interim_page_says_when_it_will_be_judged(tmp_path: Path):
    interim = read_out(*hand_made(), planned=(250, 250))
    page = campaign_page(interim, tmp_path).read_text()
    assert "interim: fixed horizon, judged at 250 per arm" in page
    assert "significant" not in re.sub(r"<h2>Methods</h2>.*", "", page, flags=re.S)


def test_withheld_cells_read_suppressed(readout: Readout, tmp_path: Path):
    page = campaign_page(readout, tmp_path).read_text()
    branches = _table(page, "by_branch")
    b03 = re.search(r'<th scope="row">B03</th>(.*?)</tr>', branches, re.S)
    assert b03 and b03.group(1).count("suppressed") == 8  # every cell of the row
    frame = readout.breakdowns["by_branch"]
    shown = (
        "n_treatment",
        "successes_treatment",
        "rate_treatment",
        "n_control",
        "successes_control",
        "rate_control",
        "lift",
        "lift_low",
    )
    withheld = sum(frame[c].null_count() for c in shown)
    assert branches.count('class="sup"') == withheld
    arms = _table(page, "arms")
    assert arms.count('class="sup"') == readout.arms["suppressed_cells"].list.len().sum()


def test_a_readout_with_nothing_publishable_still_renders(tmp_path: Path):
    campaign, assignments, events = hand_made()
    small = assignments.filter(pl.col("customer_id") % 200 < 8)  # a few customers per arm
    readout = read_out(campaign, small, events, planned=(250, 250))
    assert readout.comparison is None
    page = campaign_page(readout, tmp_path).read_text()
    assert "<strong>suppressed</strong>Relative lift" in page
    for name in PLOT_FILES.values():
        assert (tmp_path / name).read_bytes().startswith(PNG)


def test_plots_are_pngs_and_reproducible(readout: Readout, tmp_path: Path):
    first = write_readout(readout, tmp_path / "a")
    second = write_readout(readout, tmp_path / "b")
    for name in PLOT_FILES:
        data = first[name].read_bytes()
        assert data.startswith(PNG)
        assert data == second[name].read_bytes(), name
    assert first["html"].read_bytes() == second["html"].read_bytes()
    page = first["html"].read_text()
    for name in PLOT_FILES.values():
        assert f'src="{name}"' in page


def test_group_labels_are_escaped(tmp_path: Path):
    campaign, assignments, events = hand_made()
    tagged = assignments.with_columns(
        segment=pl.when(pl.col("segment") == "V1").then(pl.lit("<b>V1</b>")).otherwise("segment")
    )
    page = campaign_page(read_out(campaign, tagged, events), tmp_path).read_text()
    assert "<b>V1</b>" not in page
    assert "&lt;b&gt;V1&lt;/b&gt;" in page
    assert ASSIGNED.isoformat() not in page  # no assignment times either
