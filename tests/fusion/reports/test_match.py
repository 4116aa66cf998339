"""The match report of a small, really matched world: it renders, shows what it withholds, and
holds no identifier."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import date
from html.parser import HTMLParser
from pathlib import Path

import polars as pl
import pytest
from PIL import Image

from fusion.reports.coverage import TABLES, CoverageReport
from fusion.reports.match import REPORT_FILE, write_match_report
from labs.world import WorldConfig, WorldFiles, generate_world
from matcher.identity import normalize_id_numbers, normalize_phones
from matcher.psi import customer_keys
from tests.support.coverage import COUNTS, SNAPSHOT, MatchedStore, audit_coverage

K = 10
PLOTS = (
    "coverage_by_branch.png",
    "coverage_by_age_band.png",
    "coverage_by_level.png",
    "coverage_by_registration.png",
    "penetration_by_category.png",
)


@dataclass(frozen=True)
class Rendered:
    world: WorldFiles
    bank: MatchedStore
    report: CoverageReport
    page: Path


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Rendered:
    root = tmp_path_factory.mktemp("report")
    generate_world(WorldConfig(customers=1_500, seed=3, snapshot_date=SNAPSHOT), root / "world")
    world = WorldFiles(root / "world")
    extract = pl.read_parquet(world.customers)
    bank = MatchedStore(root, extract, pl.read_parquet(world.vendor_users))
    report = bank.report(K)
    return Rendered(world, bank, report, write_match_report(report, root / "reports"))


class _Tables(HTMLParser):
    """Collect each <table id=...> as rows of cell texts, and every src/href on the page."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = defaultdict(list)
        self.links: list[str] = []
        self._table: str | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        self.links += [v for a, v in attrs if a in ("src", "href") and v]
        if tag == "table":
            self._table = found.get("id")
        elif tag == "tr" and self._table:
            self.tables[self._table].append([])
        elif tag in ("td", "th") and self._table:
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self._table = None
        elif tag in ("td", "th") and self._table and self._cell is not None:
            self.tables[self._table][-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def _parse(page: Path) -> _Tables:
    parser = _Tables()
    parser.feed(page.read_text(encoding="utf-8"))
    return parser


def test_page_references_valid_pngs_and_parquet_beside_it(rendered: Rendered):
    page, out = rendered.page, rendered.page.parent
    assert page.name == REPORT_FILE and page.is_file()
    parsed = _parse(page)
    assert set(PLOTS) <= set(parsed.links)
    for link in parsed.links:
        assert (out / link).is_file(), link  # relative, local, nothing fetched
    for plot in PLOTS:
        with Image.open(out / plot) as image:
            image.verify()
            assert image.format == "PNG" and image.size[0] > 400
    for name, table in rendered.report.tables().items():
        assert pl.read_parquet(out / f"{name}.parquet").equals(table)
    text = page.read_text(encoding="utf-8").lower()
    assert "<script" not in text and "http://" not in text and "https://" not in text
    assert "@import" not in text and "url(" not in text
    assert f"k = {K}" in text


def test_suppressed_cells_read_suppressed_on_the_page_and_are_null_in_parquet(
    rendered: Rendered,
):
    report, out = rendered.report, rendered.page.parent
    tables = _parse(rendered.page).tables
    assert set(tables) == set(TABLES)
    withheld = 0
    for name, frame in report.tables().items():
        body = tables[name][1:]  # the first row is the header
        assert len(body) == frame.height
        parquet = pl.read_parquet(out / f"{name}.parquet")
        shown = [c for c in frame.columns if c in _value_columns(name)]
        for html_row, row, stored in zip(
            body, frame.iter_rows(named=True), parquet.iter_rows(named=True), strict=True
        ):
            cells = dict(zip(shown, html_row[1:], strict=True))
            for column in shown:
                is_withheld = column in row["suppressed_cells"]
                assert (cells[column] == "suppressed") == is_withheld, (name, column)
                assert (stored[column] is None) == is_withheld, (name, column)
            withheld += len(row["suppressed_cells"])
    assert withheld > 0  # a 1,500-customer world has small branches and levels
    notes = rendered.page.read_text(encoding="utf-8")
    assert f"fewer than {K} customers, or recoverable by subtraction" in notes


def _value_columns(table: str) -> tuple[str, ...]:
    if table == "by_identifier":
        return ("keyed", "linked", "matched", "conflicts", "gain")
    if table == "penetration":
        return (
            "registered_matched",
            "registered_users",
            "registered_share",
            "unregistered_matched",
            "unregistered_users",
            "unregistered_share",
            "ratio",
        )
    return ("customers", "keyed", "invalid", "duplicated", "matched", "coverage", "keyed_coverage")


def test_world_numbers_match_the_truth_and_pass_the_disclosure_audit(rendered: Rendered):
    extract = pl.read_parquet(rendered.world.customers)
    truth = set(pl.read_parquet(rendered.world.intersection)["customer_id"].to_list())
    keys = customer_keys(
        extract["customer_id"], extract["phone"], rendered.bank.bank.current_salt()
    ).keys
    people = extract.join(keys.select("customer_id", "key_status"), on="customer_id")
    expected: dict[object, dict[str, int]] = defaultdict(lambda: dict.fromkeys(COUNTS, 0))
    for row in people.iter_rows(named=True):
        group = expected[row["branch_id"]]
        group["customers"] += 1
        group[{"ok": "keyed"}.get(row["key_status"], row["key_status"])] += 1
        group["matched"] += row["customer_id"] in truth
    report = rendered.report
    assert report.overall["matched"][0] == len(truth)
    assert not audit_coverage(report.by_branch, "branch_id", expected, report.overall, K)


def test_no_phone_id_number_or_key_in_any_written_byte(rendered: Rendered):
    extract = pl.read_parquet(rendered.world.customers)
    users = pl.read_parquet(rendered.world.vendor_users)
    phones = normalize_phones(pl.concat([extract["phone"], users["phone"]])).values.drop_nulls()
    ids = normalize_id_numbers(extract["id_number"]).values.drop_nulls()
    keys = (
        customer_keys(extract["customer_id"], extract["phone"], rendered.bank.bank.current_salt())
        .keys["key"]
        .drop_nulls()
    )
    needles = [
        *(p.encode() for p in phones.to_list()),
        *(i.encode() for i in ids.to_list()),
        *(k.hex().encode() for k in keys.to_list()[:300]),
        *(k for k in keys.to_list()[:300]),
    ]
    files = [f for f in rendered.page.parent.iterdir() if f.is_file()]
    assert len(files) == 1 + len(PLOTS) + len(TABLES)
    for f in files:
        blob = f.read_bytes()
        for needle in needles:
            assert needle not in blob, f.name


@pytest.mark.slow  # over a second: out of the inner loop
def test_rewriting_a_report_replaces_it(rendered: Rendered, tmp_path: Path):
    first = write_match_report(rendered.report, tmp_path)
    again = write_match_report(rendered.report, tmp_path)
    assert first == again and first.read_bytes() == rendered.page.read_bytes()
    assert not [f for f in tmp_path.iterdir() if f.name.startswith(".")]
    assert rendered.report.snapshot_date == date(2026, 9, 30)
