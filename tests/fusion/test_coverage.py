"""Coverage and penetration on a crafted, really matched store: exact numbers and k-anonymity.

The store is built the production way: a vendor users file packed and sealed with real keys,
ingested, a bank extract loaded (`fusion.match.load_extract`) and matched (`fusion.match.match`).
Expected numbers are computed here row by row in plain Python, independently of the SQL.
"""

from __future__ import annotations

import itertools
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts.errors import ConfigError
from contracts.taxonomy import load_taxonomy
from fusion.coverage import (
    _COVERAGE_LAYOUT,
    AGE_BANDS,
    TABLES,
    CoverageReport,
    _suppress,
    coverage_report,
)
from fusion.ingest import Inbox, ingest_file
from fusion.match import load_extract, match
from fusion.store import Store
from matcher.keyring import init_local_pair
from matcher.pack import pack_users

SNAPSHOT = date(2026, 9, 30)
DATA_TIME = datetime(2026, 9, 30, 6, tzinfo=UTC)
NOW = datetime(2026, 10, 1, 9, tzinfo=UTC)
K = 10


class MatchedStore:
    """A bank and a vendor keyring, one ingested vendor batch, one loaded and matched extract."""

    def __init__(self, root: Path, extract: pl.DataFrame, users: pl.DataFrame) -> None:
        self.root = root
        self.bank, vendor = init_local_pair(
            root / "bank-keys", root / "vendor-keys", vendor_id="vendor-a"
        )
        inbox = Inbox(root / "bank").ensure()
        users_path = root / "users.parquet"
        users.write_parquet(users_path)
        sealed = inbox.inbox / "b.sealed"
        pack_users(users_path, sealed, keyring=vendor, now=DATA_TIME)
        users_path.unlink()
        self.epoch = self.bank.current_salt().epoch_id
        with self.store() as store:
            store.load_taxonomy(load_taxonomy())
            outcome = ingest_file(sealed, store=store, keyring=self.bank, inbox=inbox, now=NOW)
            assert outcome.status == "loaded", outcome
            load_extract(
                store, extract, epoch=self.bank.current_salt(), snapshot_date=SNAPSHOT, now=NOW
            )
            match(store, epoch_id=self.epoch, snapshot_date=SNAPSHOT, now=NOW)

    def store(self, *, read_only: bool = False) -> Store:
        path = self.root / "bank" / "fusion.duckdb"
        return Store.open(path, key=self.bank.store_key(), read_only=read_only)

    def report(self, k: int = K) -> CoverageReport:
        with self.store(read_only=True) as store:
            return coverage_report(store, snapshot_date=SNAPSHOT, salt_epoch=self.epoch, k=k)


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
COUNTS = ("customers", "keyed", "invalid", "duplicated", "matched")
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


def _rows(frame: pl.DataFrame, column: str) -> dict[object, dict[str, object]]:
    return {row[column]: row for row in frame.iter_rows(named=True)}


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


# -- an independent disclosure audit ------------------------------------------------------------
# The attacker knows every published cell and the identities between cells. A sum w.x of withheld
# cells is known exactly when w lies in the row space of the identities restricted to withheld
# cells (rank test). Checked: each withheld cell and each sum of up to 3 withheld parts of one
# identity whose true value is under k; and every identity's exposed sum of withheld parts.
Cell = tuple[object, str]


def audit(
    values: dict[Cell, int],
    published: dict[Cell, bool],
    identities: list[tuple[Cell | None, list[Cell]]],
    k: int,
) -> list[str]:
    hidden = [c for c in values if not published[c]]
    index = {c: i for i, c in enumerate(hidden)}
    rows = []
    for total, parts in identities:
        row = np.zeros(len(hidden))
        for p in parts:
            if not published[p]:
                row[index[p]] += 1
        if total is not None and not published[total]:
            row[index[total]] -= 1
        rows.append(row)
    matrix = np.array(rows) if rows else np.zeros((0, len(hidden)))
    rank = np.linalg.matrix_rank(matrix) if matrix.size else 0

    def known(group: tuple[Cell, ...]) -> bool:
        w = np.zeros(len(hidden))
        for c in group:
            w[index[c]] = 1
        return np.linalg.matrix_rank(np.vstack([matrix, w])) == rank

    problems = []
    for total, parts in identities:
        withheld = [p for p in parts if not published[p]]
        if (total is None or published[total]) and withheld:
            if sum(values[p] for p in withheld) < k:
                problems.append(f"exposed sum {withheld}")
        for size in (1, 2, 3):
            for group in itertools.combinations(withheld, size):
                if sum(values[c] for c in group) < k and known(group):
                    problems.append(f"known {group}")
    return problems


def audit_coverage(
    frame: pl.DataFrame,
    column: str | None,
    expected: dict[object, dict[str, int]],
    overall: pl.DataFrame | None,
    k: int,
) -> list[str]:
    rows = _rows(frame, column) if column else {None: frame.row(0, named=True)}
    values: dict[Cell, int] = {}
    published: dict[Cell, bool] = {}
    identities: list[tuple[Cell | None, list[Cell]]] = []
    for group, counts in expected.items():
        for name, value in counts.items():
            values[group, name] = value
            published[group, name] = rows[group][name] is not None
            assert rows[group][name] in (None, value)
        values[group, "unmatched"] = counts["keyed"] - counts["matched"]
        published[group, "unmatched"] = False
        identities.append(
            ((group, "customers"), [(group, "keyed"), (group, "invalid"), (group, "duplicated")])
        )
        identities.append(((group, "keyed"), [(group, "matched"), (group, "unmatched")]))
    if overall is not None:
        for name in COUNTS:
            if overall[name][0] is not None:
                identities.append((None, [(g, name) for g in expected]))
    return audit(values, published, identities, k)


def audit_penetration(
    frame: pl.DataFrame, expected: dict[int, dict[str, int]], k: int
) -> list[str]:
    rows = _rows(frame, "category_id")
    values: dict[Cell, int] = {}
    published: dict[Cell, bool] = {}
    identities: list[tuple[Cell | None, list[Cell]]] = []
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
    rows = _rows(getattr(report, table), column)
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
    branches = _rows(report.by_branch, "branch_id")
    cells = [*COUNTS, "coverage", "keyed_coverage"]
    assert branches["B_TINY"]["suppressed_cells"] == cells
    assert all(branches["B_TINY"][c] is None for c in cells)
    levels = _rows(report.by_level, "customer_level")
    assert levels[TINY_LEVEL]["suppressed_cells"] == cells
    for big in ("B_BIG1", "B_BIG2"):
        assert branches[big]["suppressed"] is False
        assert branches[big]["invalid"] == BRANCHES[big][1]
        assert branches[big]["matched"] == BRANCHES[big][3]


def test_secondary_suppression_protects_the_tiny_branch(report: CoverageReport):
    branches = _rows(report.by_branch, "branch_id")
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
    rows = _rows(report.penetration, "category_id")
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
    registration = _rows(report.by_registration, "mb_registered")
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


@st.composite
def _tables(draw: st.DrawFn) -> list[dict[str, int]]:
    groups = []
    for _ in range(draw(st.integers(1, 7))):
        keyed = draw(st.integers(0, 60))
        invalid, duplicated = draw(st.integers(0, 14)), draw(st.integers(0, 14))
        matched = draw(st.integers(0, keyed))
        groups.append(
            {
                "customers": keyed + invalid + duplicated,
                "keyed": keyed,
                "invalid": invalid,
                "duplicated": duplicated,
                "matched": matched,
            }
        )
    return groups


@settings(max_examples=60, deadline=None)
@given(groups=_tables(), k=st.sampled_from([3, 10]))
def test_suppression_never_leaves_a_small_group_computable(groups: list[dict[str, int]], k: int):
    frame = pl.DataFrame(groups).with_columns(g=pl.int_range(pl.len()).cast(pl.Int64))
    total = frame.select(pl.col(COUNTS).sum())
    overall = _suppress(total, _COVERAGE_LAYOUT, k=k)
    table = _suppress(frame, _COVERAGE_LAYOUT, k=k, margin=overall)
    expected = {i: g for i, g in enumerate(groups)}
    assert not audit_coverage(overall, None, {None: total.row(0, named=True)}, None, k)
    assert not audit_coverage(table, "g", expected, overall, k)


def test_a_denominator_public_elsewhere_cannot_be_the_only_protection():
    from fusion.coverage import _guard_public_denominators

    table = pl.DataFrame(
        {
            "registered_matched": [None, 500],
            "registered_users": [493, 300],
            "registered_share": [0.986, 0.6],
            "unregistered_matched": [400, 400],
            "unregistered_users": [100, 90],
            "unregistered_share": [0.25, 0.225],
            "ratio": [0.25, 0.375],
            "suppressed_cells": [["registered_matched"], []],
            "suppressed": [True, False],
        },
        schema_overrides={"suppressed_cells": pl.List(pl.String)},
    )
    guarded = _guard_public_denominators(table, withheld=[])
    first = guarded.row(0, named=True)
    assert first["registered_users"] is None and first["ratio"] is None
    assert set(first["suppressed_cells"]) >= {"registered_matched", "registered_users", "ratio"}
    assert guarded.row(1, named=True) == table.row(1, named=True)
    # Withheld upstream too: the denominator is secret everywhere, nothing more to hide.
    assert _guard_public_denominators(table, withheld=["registered_matched"]).equals(table)
