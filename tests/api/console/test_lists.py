"""Lists for marketers (head office: a marketer token has no branch scope) in the console and
the API alike, exact list sizes, no raw identifier in a download, and no other branch's list
for a branch analyst however the address is edited."""

from __future__ import annotations

import io
from collections.abc import Callable

import httpx
import polars as pl
import pyarrow.parquet as pq
import pytest

from contracts.errors import ConfigError
from fusion.lists import LISTS
from fusion.tokens import create_token
from matcher.identity import normalize_device_ids, normalize_id_numbers, normalize_phones
from tests.support.server import NOW, ServedRun, bearer

pytestmark = pytest.mark.slow

LIST_COLUMNS = {"customer_id", "branch_id", "rank", "score", "decile", "model", "model_version"}


def _raw_identifiers(served: ServedRun) -> list[str]:
    """Every customer's phone, ID number and device id, normalised and as written."""
    customers = pl.read_parquet(served.run / "world" / "bank" / "customers.parquet")
    found: set[str] = set()
    for column, normalise in (("phone", normalize_phones), ("id_number", normalize_id_numbers),
                              ("device_id", normalize_device_ids)):  # fmt: skip
        found |= set(normalise(customers[column]).values.drop_nulls().to_list())
        found |= {v.strip() for v in customers[column].drop_nulls().to_list() if len(v) >= 8}
    return sorted(found)


def _holds_no_identifier(content: bytes, identifiers: list[str]) -> None:
    text = content.decode("utf-8")
    assert not [i for i in identifiers if i in text], "a raw identifier in a download"


def test_marketers_read_every_branchs_list_in_the_console_and_the_api(
    served: ServedRun, marketer_token: str, sign_in: Callable[[str], httpx.Client]
):
    with pytest.raises(ConfigError, match="only analyst tokens have branches"):
        create_token(served.service.cursor(), role="marketer", now=NOW, branches=["B001"])
    marketer = sign_in(marketer_token)
    lists_page = marketer.get("/console/lists")
    assert lists_page.status_code == 200 and "suppressed" not in lists_page.text
    identifiers = _raw_identifiers(served)
    smallest: tuple[int, str, str] | None = None
    for name in LISTS:
        for path in sorted((served.folder.lists / name).glob("*.parquet")):
            rows = pq.read_metadata(path).num_rows
            link = f'<a href="/console/lists/{name}/{path.stem}">{path.stem}</a></th>'
            assert f'{link}<td class="num">{rows:,}</td>' in lists_page.text, (name, path.stem)
            smallest = min(smallest or (rows, name, path.stem), (rows, name, path.stem))
    assert smallest is not None
    for name, branch in (("mobile-banking", "B002"), ("rescue", "B001"), smallest[1:]):
        csv = marketer.get(f"/console/lists/{name}/{branch}/csv")
        parquet = marketer.get(f"/console/lists/{name}/{branch}/parquet")
        assert csv.status_code == parquet.status_code == 200, (name, branch)
        api = httpx.get(f"{served.url}/v1/lists/{name}", params={"branch": branch},
                        headers=bearer(marketer_token))  # fmt: skip
        assert api.status_code == 200 and api.content == csv.content, "the API's file, the same"
        frame = pl.read_parquet(io.BytesIO(parquet.content))
        assert set(frame.columns) <= LIST_COLUMNS | {"reason_1", "reason_2", "reason_3"}
        assert frame["branch_id"].unique().to_list() == [branch]
        assert pl.read_csv(io.BytesIO(csv.content)).height == frame.height
        _holds_no_identifier(csv.content, identifiers)
        _holds_no_identifier(frame.write_csv().encode(), identifiers)
    rows, name, branch = smallest  # a size under k is shown as it is: the file has that many
    page = marketer.get(f"/console/lists/{name}/{branch}")
    assert f'<td class="num">{rows:,}</td>' in page.text and "suppressed" not in page.text


def test_a_branch_analyst_cannot_edit_the_address_to_another_branch(
    served: ServedRun, sign_in: Callable[[str], httpx.Client]
):
    analyst = sign_in(served.tokens.analyst)  # branch B001
    for name in LISTS:
        for suffix in ("", "/csv", "/parquet"):
            for branch in ("B002", "B0%30%32", "%42002"):  # percent-encoded: still B002
                answer = analyst.get(f"/console/lists/{name}/{branch}{suffix}")
                assert answer.status_code == 403, (name, branch, suffix)
                assert "customer_id" not in answer.text
        api = httpx.get(f"{served.url}/v1/lists/{name}", params={"branch": "B002"},
                        headers=bearer(served.tokens.analyst))  # fmt: skip
        assert api.status_code == 403
        assert analyst.get(f"/console/lists/{name}/B001/csv").status_code == 200
