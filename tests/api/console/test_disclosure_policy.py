"""The console's two disclosure policies: a campaign's operational counts exact to its
marketers (as the API gives them), k-anonymised to head-office analysts; `disclose` itself."""

from __future__ import annotations

import re
from collections.abc import Callable

import httpx
import polars as pl
import pytest

from contracts.errors import ConfigError
from fusion.reports.disclosure import DisclosurePolicy, Layout, disclose, suppress
from tests.support.server import ServedRun, bearer

CAMPAIGN = "console-exact"
_LAYOUT = Layout(counts=("audience", "assigned"), sums=(("audience", ("assigned",)),))


def test_operational_tables_are_exact_and_k_anonymous_ones_are_suppressed():
    frame = pl.DataFrame({"plan": ["a", "b"], "audience": [3, 400], "assigned": [3, 120]})
    exact = disclose(frame, _LAYOUT, policy=DisclosurePolicy.OPERATIONAL, k=10)
    assert exact.drop("suppressed_cells", "suppressed").equals(frame)
    assert exact["suppressed_cells"].to_list() == [[], []] and not exact["suppressed"].any()
    private = disclose(frame, _LAYOUT, policy=DisclosurePolicy.K_ANONYMOUS, k=10)
    assert private.equals(suppress(frame, _LAYOUT, k=10))
    assert private["audience"].to_list() == [None, 400]
    with pytest.raises(ConfigError, match="lacks the counts"):
        disclose(frame.drop("assigned"), _LAYOUT, policy=DisclosurePolicy.OPERATIONAL, k=10)
    with pytest.raises(ConfigError, match="k must be"):
        disclose(frame, _LAYOUT, policy=DisclosurePolicy.OPERATIONAL, k=0)


def _plan_cells(page: str, row: str) -> list[str]:
    found = re.search(rf'<tr><th scope="row">{row}</th>(.*?)</tr>', page)
    assert found is not None, row
    return re.findall(r"<td[^>]*>([^<]*)</td>", found.group(1))


@pytest.mark.slow
def test_marketers_read_their_campaigns_counts_exactly_as_the_api_answers(
    served: ServedRun,
    marketer_token: str,
    sign_in: Callable[[str], httpx.Client],
    declare: Callable[[str, list[int]], None],
    customer_ids: list[int],
):
    declare(CAMPAIGN, customer_ids[10:13])
    api = httpx.Client(base_url=served.url, headers=bearer(marketer_token), timeout=120)
    with api:
        promoted = api.post(f"/v1/campaigns/{CAMPAIGN}/promote", json={"to_stage": "whitelist"})
        assert promoted.status_code == 200, promoted.text
        answer = api.post(
            "/v1/campaigns/plan", json={"campaigns": [CAMPAIGN], "window_start": "2029-03-05"}
        )
        assert answer.status_code == 200, answer.text
        delivered = api.post(f"/v1/campaigns/{CAMPAIGN}/deliveries")
        assert delivered.status_code == 201, delivered.text
    (plan,) = answer.json()["plans"]
    assert 0 < plan["assigned"] < 10, "a whitelist: counts under k"
    page = sign_in(marketer_token).get(f"/console/campaigns/{CAMPAIGN}").text
    for row in ("audience", "assigned", "treatment", "control"):
        assert _plan_cells(page, row) == [f"{plan[row]:,}"], row
    for rule, removed in plan["removed"].items():
        assert _plan_cells(page, rule.replace("_", " ")) == [f"{removed:,}"], rule
    versions = httpx.get(f"{served.url}/v1/campaigns/{CAMPAIGN}/deliveries",
                         headers=bearer(marketer_token)).json()["versions"]  # fmt: skip
    for branch, entry in versions[0]["branches"].items():
        assert f'<td>{branch}</td><td class="num">{entry["rows"]:,}</td>' in page
    assert "suppressed</td>" not in page
    analyst = sign_in(served.tokens.head_office).get(f"/console/campaigns/{CAMPAIGN}").text
    assert _plan_cells(analyst, "assigned") == ["suppressed"]
    assert "exact counts are for the campaign" in analyst
