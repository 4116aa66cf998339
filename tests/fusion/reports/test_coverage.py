"""Coverage and penetration on a crafted, really matched store: exact numbers and k-anonymity.

The store is built the production way (`tests.support.coverage.MatchedStore`). Expected numbers
are computed here row by row in plain Python, independently of the SQL.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import polars as pl
import pytest

from contracts.errors import ConfigError
from contracts.taxonomy import load_taxonomy
from fusion.match import load_extract
from fusion.reports.coverage import AGE_BANDS, TABLES, CoverageReport, coverage_report
from tests.support.coverage import (
    COUNTS,
    NOW,
    SNAPSHOT,
    Cell,
    Identities,
    MatchedStore,
    audit,
    audit_coverage,
    rows_by,
)

K = 10


# -- the crafted bank ---------------------------------------------------------------------------
# branch: (customers, invalid phones, pairs of customers sharing a phone, matched customers)
BRANCHES = {
    "B_BIG1": (900, 12, 5, 400),
    "B_BIG2": (500, 10, 6, 250),
    "B_MID": (60, 9, 4, 20),
    "B_TINY": (5, 1, 1, 2),
}
TINY_LEVEL = 5  # only the tiny branch has it, so the level-5 row is tiny too
FOOD, GAMES, SOCIAL, LOTTERY = 24, 1, 5, 25  # category ids (contracts.taxonomy)


@dataclass(frozen=True)
class Customer:
    customer_id: int
    branch_id: str
    phone: str
    age: int
    level: int
    registered: bool
    status: str  # ok | invalid | duplicated
    at_vendor: bool

    @property
    def matched(self) -> bool:
        return self.at_vendor and self.status == "ok"

    @property
    def age_band(self) -> str:
        for band in AGE_BANDS:
            low, _, high = band.partition("-")
            if int(low.rstrip("+")) <= self.age <= (int(high) if high else 200):
                return band
        raise AssertionError(self.age)


def _customers() -> list[Customer]:
    rows: list[Customer] = []
    for b, (branch, (n, invalid, pairs, matched)) in enumerate(BRANCHES.items()):
        for i in range(n):
            g = len(rows)
            if i < invalid:
                phone, status = "12345", "invalid"
            elif i < invalid + 2 * pairs:
                phone, status = f"137{b:02d}{(i - invalid) // 2:06d}", "duplicated"
            else:
                phone, status = f"139{g:08d}", "ok"
            tiny = branch == "B_TINY"
            rows.append(
                Customer(
                    customer_id=1_000 + g,
                    branch_id=branch,
                    # dirty, as a real extract writes them
                    phone=f"+86 {phone[:3]} {phone[3:]}" if g % 3 == 0 else phone,
                    age=18 + (g * 7) % 75,
                    level=TINY_LEVEL if tiny else 1 + g % 3,
                    registered=False if tiny else g % 2 == 0,
                    status=status,
                    # the vendor holds every shared phone (they must still not match)
                    at_vendor=status == "duplicated"
                    or (status == "ok" and i - invalid - 2 * pairs < matched),
                )
            )
    return rows


CUSTOMERS = _customers()


def _extract() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "customer_id": [c.customer_id for c in CUSTOMERS],
            "branch_id": [c.branch_id for c in CUSTOMERS],
            "phone": [c.phone for c in CUSTOMERS],
            "id_number": ["11010519491231002X"] * len(CUSTOMERS),
            "age": [c.age for c in CUSTOMERS],
            "customer_level": [c.level for c in CUSTOMERS],
            "mb_registered": [c.registered for c in CUSTOMERS],
            "aum_month_avg": [1_000.0] * len(CUSTOMERS),
        },
        schema_overrides={"age": pl.Int16, "customer_level": pl.Int8},
    )


def _first_app(category: int) -> int:
    apps = load_taxonomy().apps.filter(pl.col("category_id") == category).sort("popularity_rank")
    return int(apps["app_id"][0])


def _second_app(category: int) -> int:
    apps = load_taxonomy().apps.filter(pl.col("category_id") == category).sort("popularity_rank")
    return int(apps["app_id"][1])


def _apps(c: Customer, j: int, unregistered_seen: int) -> list[int]:
    """Apps of the j-th customer at the vendor (rules chosen to exercise every path)."""
    apps = []
    if j % 3 == 0:
        apps.append(_first_app(FOOD))
    if j % 6 == 0:
        apps.append(_second_app(FOOD))  # two apps of one category count once
    if (c.registered and j % 4 == 0) or j % 5 == 0:
        apps.append(_first_app(GAMES))
    if not (c.registered and j < 4):  # two registered matched customers do not use social
        apps.append(_first_app(SOCIAL))
    if not c.registered and unregistered_seen < 3:  # three lottery users: suppressed
        apps.append(_first_app(LOTTERY))
    return apps


def _users() -> tuple[pl.DataFrame, dict[int, list[int]]]:
    phones, app_lists, apps_of = [], [], {}
    unregistered_seen = 0
    for j, c in enumerate(c for c in CUSTOMERS if c.matched):
        apps = _apps(c, j, unregistered_seen)
        unregistered_seen += not c.registered
        phones.append(c.phone)
        app_lists.append(apps)
        apps_of[c.customer_id] = apps
    # Shared phones (once each: the vendor keeps one user per phone) and non-customers.
    shared = {c.phone.replace("+86 ", "").replace(" ", "") for c in CUSTOMERS if c.at_vendor}
    others = [p for p in sorted(shared) if p.startswith("137")]
    for phone in [*others, *(f"158{i:08d}" for i in range(40))]:
        phones.append(phone)
        app_lists.append([_first_app(FOOD)])
    n = len(phones)
    frame = pl.DataFrame(
        {
            "phone": phones,
            "app_ids": app_lists,
            "app_days": [[5] * len(a) for a in app_lists],
            "app_sessions": [[3] * len(a) for a in app_lists],
            "tag_ids": [[1]] * n,
            "tag_weights": [[0.5]] * n,
        },
        schema_overrides={
            "app_ids": pl.List(pl.Int32),
            "app_days": pl.List(pl.Int16),
            "app_sessions": pl.List(pl.Int32),
            "tag_ids": pl.List(pl.Int32),
            "tag_weights": pl.List(pl.Float32),
        },
    )
    return frame, apps_of


USERS, APPS_OF = _users()


@pytest.fixture(scope="module")
def bank(tmp_path_factory: pytest.TempPathFactory) -> MatchedStore:
    return MatchedStore(tmp_path_factory.mktemp("coverage"), _extract(), USERS)


@pytest.fixture(scope="module")
def report(bank: MatchedStore) -> CoverageReport:
    return bank.report()


# -- expected numbers, by hand ------------------------------------------------------------------
GROUPS: dict[str, tuple[str, Callable[[Customer], object]]] = {
    "by_branch": ("branch_id", lambda c: c.branch_id),
    "by_age_band": ("age_band", lambda c: c.age_band),
    "by_level": ("customer_level", lambda c: c.level),
    "by_registration": ("mb_registered", lambda c: c.registered),
}


def _expected(customers: list[Customer]) -> dict[str, int]:
    return {
        "customers": len(customers),
        "keyed": sum(c.status == "ok" for c in customers),
        "invalid": sum(c.status == "invalid" for c in customers),
        "duplicated": sum(c.status == "duplicated" for c in customers),
        "matched": sum(c.matched for c in customers),
    }


def _expected_groups(table: str) -> dict[object, dict[str, int]]:
    _, key = GROUPS[table]
    groups: dict[object, list[Customer]] = defaultdict(list)
    for c in CUSTOMERS:
        groups[key(c)].append(c)
    return {g: _expected(members) for g, members in groups.items()}


def _expected_penetration() -> dict[int, dict[str, int]]:
    category_of = dict(load_taxonomy().apps.select("app_id", "category_id").iter_rows())
    users: dict[int, Counter[bool]] = defaultdict(Counter)
    for c in CUSTOMERS:
        if c.matched:
            for category in {category_of[a] for a in APPS_OF[c.customer_id]}:
                users[category][c.registered] += 1
    matched = Counter(c.registered for c in CUSTOMERS if c.matched)
    return {
        category: {
            "registered_matched": matched[True],
            "registered_users": users[category][True],
            "unregistered_matched": matched[False],
            "unregistered_users": users[category][False],
        }
        for category in range(1, 27)
    }


def audit_penetration(
    frame: pl.DataFrame, expected: dict[int, dict[str, int]], k: int
) -> list[str]:
    rows = rows_by(frame, "category_id")
    values: dict[Cell, int] = {}
    published: dict[Cell, bool] = {}
    identities: Identities = []
    for category, counts in expected.items():
        for name, value in counts.items():
            values[category, name] = value
            published[category, name] = rows[category][name] is not None
        for side in ("registered", "unregistered"):
            values[category, f"{side}_non_users"] = (
                counts[f"{side}_matched"] - counts[f"{side}_users"]
            )
            published[category, f"{side}_non_users"] = False
            identities.append(
                (
                    (category, f"{side}_matched"),
                    [(category, f"{side}_users"), (category, f"{side}_non_users")],
                )
            )
    return audit(values, published, identities, k)


# -- tests --------------------------------------------------------------------------------------


def test_overall_counts_equal_the_crafted_bank(report: CoverageReport):
    assert report.overall.select(COUNTS).row(0) == (1465, 1401, 32, 32, 672)
    assert report.overall["coverage"][0] == pytest.approx(672 / 1465)
    assert report.overall["keyed_coverage"][0] == pytest.approx(672 / 1401)
    assert report.overall["suppressed"].to_list() == [False]
    assert (report.snapshot_date, report.k, list(report.tables())) == (SNAPSHOT, K, list(TABLES))


@pytest.mark.parametrize("table", sorted(GROUPS))
def test_published_cells_equal_hand_counts_and_small_ones_are_withheld(
    report: CoverageReport, table: str
):
    column, _ = GROUPS[table]
    expected = _expected_groups(table)
    rows = rows_by(getattr(report, table), column)
    assert set(rows) == set(expected)
    for group, counts in expected.items():
        row = rows[group]
        for name, value in counts.items():
            assert row[name] is None or row[name] == value, (table, group, name)
            if value < K:
                assert row[name] is None, (table, group, name)
        if row["coverage"] is not None:
            assert row["coverage"] == pytest.approx(counts["matched"] / counts["customers"])
        if row["keyed_coverage"] is not None:
            assert row["keyed_coverage"] == pytest.approx(counts["matched"] / counts["keyed"])
        withheld = [c for c in (*COUNTS, "coverage", "keyed_coverage") if row[c] is None]
        assert row["suppressed_cells"] == withheld and row["suppressed"] == bool(withheld)


def test_tiny_branch_is_withheld_everywhere_it_is_a_row_and_big_branches_are_not(
    report: CoverageReport,
):
    branches = rows_by(report.by_branch, "branch_id")
    cells = [*COUNTS, "coverage", "keyed_coverage"]
    assert branches["B_TINY"]["suppressed_cells"] == cells
    assert all(branches["B_TINY"][c] is None for c in cells)
    levels = rows_by(report.by_level, "customer_level")
    assert levels[TINY_LEVEL]["suppressed_cells"] == cells
    for big in ("B_BIG1", "B_BIG2"):
        assert branches[big]["suppressed"] is False
        assert branches[big]["invalid"] == BRANCHES[big][1]
        assert branches[big]["matched"] == BRANCHES[big][3]


def test_secondary_suppression_protects_the_tiny_branch(report: CoverageReport):
    branches = rows_by(report.by_branch, "branch_id")
    # B_MID's own invalid (9) and shared (8) phones are small; its customers, keyed and
    # matched are withheld only so that overall - B_BIG1 - B_BIG2 is not the tiny branch alone.
    assert branches["B_MID"]["suppressed_cells"] == [*COUNTS, "coverage", "keyed_coverage"]
    assert report.overall["customers"][0] - 900 - 500 == 65  # two branches, not one


@pytest.mark.parametrize("table", [*sorted(GROUPS), "overall", "penetration"])
def test_no_small_withheld_group_can_be_computed_from_published_cells(
    report: CoverageReport, table: str
):
    if table == "penetration":
        problems = audit_penetration(report.penetration, _expected_penetration(), K)
    elif table == "overall":
        problems = audit_coverage(report.overall, None, {None: _expected(CUSTOMERS)}, None, K)
    else:
        column, _ = GROUPS[table]
        problems = audit_coverage(
            getattr(report, table), column, _expected_groups(table), report.overall, K
        )
    assert not problems


def test_penetration_shares_and_their_suppression(report: CoverageReport):
    expected = _expected_penetration()
    rows = rows_by(report.penetration, "category_id")
    assert sorted(rows) == list(range(1, 27))
    assert rows[FOOD]["code"] == "food_delivery" and rows[SOCIAL]["name"] == "Social"
    for category, counts in expected.items():
        row = rows[category]
        for name, value in counts.items():
            assert row[name] is None or row[name] == value, (category, name)
            if value < K:
                assert row[name] is None
        for side in ("registered", "unregistered"):
            users, matched = counts[f"{side}_users"], counts[f"{side}_matched"]
            if users < K or matched - users < K:  # a small group of users or of non-users
                assert row[f"{side}_share"] is None, (category, side)
            else:
                assert row[f"{side}_share"] == pytest.approx(users / matched)
    food = rows[FOOD]
    assert food["suppressed"] is False
    assert food["ratio"] == pytest.approx(
        (food["unregistered_users"] / food["unregistered_matched"])
        / (food["registered_users"] / food["registered_matched"])
    )
    # Two registered customers do not use social apps, no unregistered one fails to: the
    # shares would reveal those groups, so they and the ratio are withheld.
    assert {"registered_users", "registered_share", "unregistered_users", "ratio"} <= set(
        rows[SOCIAL]["suppressed_cells"]
    )
    assert rows[LOTTERY]["unregistered_users"] is None and rows[LOTTERY]["ratio"] is None
    assert rows[GAMES]["suppressed"] is False
    # Denominators are the by_registration matched cells.
    registration = rows_by(report.by_registration, "mb_registered")
    assert food["registered_matched"] == registration[True]["matched"]
    assert food["unregistered_matched"] == registration[False]["matched"]


def test_denominators_withheld_in_by_registration_are_withheld_in_penetration(
    bank: MatchedStore,
):
    # k above the registered group's matched count: that cell goes, and with it every share.
    registered_matched = sum(c.matched and c.registered for c in CUSTOMERS)
    report = bank.report(k=registered_matched + 1)
    assert report.by_registration["matched"].is_null().all()
    assert report.penetration["registered_matched"].is_null().all()
    assert report.penetration["unregistered_matched"].is_null().all()
    assert report.penetration["ratio"].is_null().all()


def test_to_parquet_writes_every_table_with_its_nulls(report: CoverageReport, tmp_path: Path):
    written = report.to_parquet(tmp_path / "out")
    assert list(written) == list(TABLES)
    for name, path in written.items():
        assert pl.read_parquet(path).equals(report.tables()[name])
    metadata = pl.read_parquet_metadata(written["by_branch"])
    assert metadata["k"] == str(K) and metadata["snapshot_date"] == SNAPSHOT.isoformat()


def test_refusals(bank: MatchedStore):
    with bank.store(read_only=True) as store:
        with pytest.raises(ConfigError, match="positive integer"):
            coverage_report(store, snapshot_date=SNAPSHOT, salt_epoch=bank.epoch, k=0)
        with pytest.raises(ConfigError, match="no customers"):
            coverage_report(store, snapshot_date=date(2026, 1, 1), salt_epoch=bank.epoch)
        with pytest.raises(ConfigError, match="no customers"):
            coverage_report(store, snapshot_date=SNAPSHOT, salt_epoch="e-other")


def test_a_stale_or_missing_match_run_is_refused(tmp_path: Path):
    stale = MatchedStore(tmp_path, _extract(), USERS)
    with stale.store() as store:
        load_extract(
            store,
            _extract().head(1200),
            epoch=stale.bank.current_salt(),
            snapshot_date=SNAPSHOT,
            now=NOW,
        )
    with stale.store(read_only=True) as store, pytest.raises(ConfigError, match="match again"):
        coverage_report(store, snapshot_date=SNAPSHOT, salt_epoch=stale.epoch)
    with stale.store() as store:
        store.execute("DELETE FROM match_runs")
    with stale.store(read_only=True) as store, pytest.raises(ConfigError, match="no match run"):
        coverage_report(store, snapshot_date=SNAPSHOT, salt_epoch=stale.epoch)


def test_by_identifier_says_what_each_identifier_added_and_hides_what_subtraction_reveals(
    bank: MatchedStore, report: CoverageReport
):
    """The run was not told a priority: it keeps the types some customer holds a key of. Every
    customer gives the same ID number here, which keys nobody, so only the phone is left."""
    with bank.store(read_only=True) as store:
        (raw,) = store.execute("SELECT by_identifier FROM match_runs").fetchone()
    truth = json.loads(raw)
    table = rows_by(report.by_identifier, "id_type")
    assert list(table) == list(truth) == ["mobile"]
    expected = _expected(CUSTOMERS)
    assert truth["mobile"] == {
        "keyed": expected["keyed"],
        "linked": expected["matched"],
        "matched": expected["matched"],
        "conflicts": 0,
    }
    names = ("keyed", "linked", "matched")
    values = {(t, c): truth[t][c] for t in truth for c in names}
    values |= {(t, "_unlinked"): truth[t]["keyed"] - truth[t]["linked"] for t in truth}
    values |= {(t, "_not_added"): truth[t]["linked"] - truth[t]["matched"] for t in truth}
    published = {cell: cell[1] in names and table[cell[0]][cell[1]] is not None for cell in values}
    identities: Identities = [
        *(((t, "keyed"), [(t, "linked"), (t, "_unlinked")]) for t in truth),
        *(((t, "linked"), [(t, "matched"), (t, "_not_added")]) for t in truth),
        (None, [(t, "matched") for t in truth]),  # the overall row publishes the total
    ]
    assert audit(values, published, identities, K) == []
    # What the phone added is the headline; linked - matched (0) would show, so linked is not.
    mobile = table["mobile"]
    assert mobile["matched"] == expected["matched"] and mobile["linked"] is None
    assert mobile["gain"] == pytest.approx(expected["matched"] / expected["customers"])
    assert mobile["conflicts"] is None  # zero customers: under k
