"""The monitoring page and the home page's monitoring panel: the figures `fusion monitor`
stored (read back by `read_monitoring`), head office only, with the report's own plots."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import polars as pl
import pytest

from fusion.pipeline.monitoring import LATEST_FILE, MonitoringReport
from tests.api.console.conftest import DRIFTED
from tests.support.server import ServedRun

pytestmark = pytest.mark.slow


def test_the_page_shows_the_stored_result_and_its_plots(
    served: ServedRun,
    monitored: MonitoringReport,
    marketer_token: str,
    sign_in: Callable[[str], httpx.Client],
):
    marketer = sign_in(marketer_token)
    page = marketer.get("/console/monitoring")
    assert page.status_code == 200, page.text
    latest = json.loads((served.folder.reports / LATEST_FILE).read_text())
    assert latest["status"] == "alert" and '<strong id="verdict">alert</strong>' in page.text
    for name, model in latest["models"].items():  # the PSI `fusion monitor` wrote, per model
        assert f'<th scope="row">{name}</th><td>{model["version"]}</td>' in page.text
        assert f'<td class="num">{model["score_psi"]:.3f}</td>' in page.text
    age = monitored.stability.filter(
        (pl.col("model") == "acquisition") & (pl.col("name") == DRIFTED)
    ).row(0, named=True)
    assert age["status"] == "alert"
    assert (
        f'<th scope="row">{DRIFTED}</th><td class="num">{age["index"]:.3f}</td>'
        '<td class="fail">a shift to act on</td>'
    ) in page.text
    # What moved: worded as `fusion monitor` words its findings, alerts first.
    assert f"<strong>alert</strong>: acquisition CSI of {DRIFTED} = {age['index']:.3f}" in page.text
    for row in monitored.realised.iter_rows(named=True):  # a count under k stays withheld
        if row["observed"] < 10:
            assert f"control successes {row['observed']} " not in page.text
            assert f'<td class="num">{row["observed"]}</td>' not in page.text
    assert monitored.plots and all(
        f'src="/console/monitoring/plots/{name}"' in page.text for name in monitored.plots
    )
    for name in monitored.plots:
        plot = marketer.get(f"/console/monitoring/plots/{name}")
        assert plot.status_code == 200 and plot.content.startswith(b"\x89PNG")
        assert plot.content == (monitored.folder / name).read_bytes()
    for name in ("bins.parquet", "monitoring.json", "..%2fmonitoring-latest.json", "x.png"):
        assert marketer.get(f"/console/monitoring/plots/{name}").status_code == 404, name


def test_home_shows_the_monitoring_alerts_to_head_office(
    served: ServedRun, monitored: MonitoringReport, sign_in: Callable[[str], httpx.Client]
):
    age = monitored.stability.filter(pl.col("name") == DRIFTED)["index"][0]
    first = f"acquisition CSI of {DRIFTED} = {age:.3f}"
    for token in (served.tokens.admin, served.tokens.head_office):
        home = sign_in(token).get("/console")
        assert home.status_code == 200
        assert 'id="monitoring-verdict"' in home.text and "<strong>alert</strong>" in home.text
        assert first in home.text and 'href="/console/monitoring"' in home.text
    for token in (served.tokens.analyst, served.tokens.campaign_tool):
        client = sign_in(token)
        assert "monitoring-verdict" not in client.get("/console").text
        assert client.get("/console/monitoring").status_code == 403
        assert client.get(f"/console/monitoring/plots/{monitored.plots[0]}").status_code == 403
