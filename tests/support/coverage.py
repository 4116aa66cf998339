"""A really matched store, and an independent disclosure audit of the tables reported on it.

`MatchedStore` builds a bank the production way: a vendor users file packed and sealed with real
keys, ingested, a bank extract loaded (`fusion.match.load_extract`) and matched
(`fusion.match.match`). `audit` checks published tables against the truth without the code under
test: the coverage tests and the match-report tests share both.
"""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import polars as pl

from contracts.taxonomy import load_taxonomy
from fusion.ingest import Inbox, ingest_file
from fusion.match import load_extract, match
from fusion.reports.coverage import CoverageReport, coverage_report
from fusion.store import Store
from matcher.keyring import init_local_pair
from matcher.pack import pack_users

__all__ = [
    "COUNTS",
    "DATA_TIME",
    "NOW",
    "SNAPSHOT",
    "MatchedStore",
    "audit",
    "audit_coverage",
    "rows_by",
]

SNAPSHOT = date(2026, 9, 30)
DATA_TIME = datetime(2026, 9, 30, 6, tzinfo=UTC)
NOW = datetime(2026, 10, 1, 9, tzinfo=UTC)
COUNTS = ("customers", "keyed", "invalid", "duplicated", "matched")


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

    def report(self, k: int = 10) -> CoverageReport:
        with self.store(read_only=True) as store:
            return coverage_report(store, snapshot_date=SNAPSHOT, salt_epoch=self.epoch, k=k)


def rows_by(frame: pl.DataFrame, column: str) -> dict[object, dict[str, object]]:
    """Return the table's rows keyed by their group column."""
    return {row[column]: row for row in frame.iter_rows(named=True)}


# -- an independent disclosure audit ------------------------------------------------------------
# The attacker knows every published cell and the identities between cells. A sum w.x of withheld
# cells is known exactly when w lies in the row space of the identities restricted to withheld
# cells (rank test). Checked: each withheld cell and each sum of up to 3 withheld parts of one
# identity whose true value is under k; and every identity's exposed sum of withheld parts.
Cell = tuple[object, str]


Identities = list[tuple[Cell | None, list[Cell]]]


def audit(
    values: dict[Cell, int], published: dict[Cell, bool], identities: Identities, k: int
) -> list[str]:
    """Return every small withheld group a reader could recompute (empty: the table is safe)."""
    hidden = [c for c in values if not published[c]]
    index = {c: i for i, c in enumerate(hidden)}
    matrix = _identity_matrix(index, published, identities)
    rank = np.linalg.matrix_rank(matrix) if matrix.size else 0

    def known(group: tuple[Cell, ...]) -> bool:
        w = np.zeros(len(hidden))
        for c in group:
            w[index[c]] = 1
        return np.linalg.matrix_rank(np.vstack([matrix, w])) == rank

    problems = []
    for total, parts in identities:
        withheld = [p for p in parts if not published[p]]
        exposed = total is None or published[total]
        if exposed and withheld and sum(values[p] for p in withheld) < k:
            problems.append(f"exposed sum {withheld}")
        groups = (g for size in (1, 2, 3) for g in itertools.combinations(withheld, size))
        problems += [f"known {g}" for g in groups if sum(values[c] for c in g) < k and known(g)]
    return problems


def _identity_matrix(
    index: dict[Cell, int], published: dict[Cell, bool], identities: Identities
) -> np.ndarray:
    """Return the identities as rows over the withheld cells (published cells are constants)."""
    rows = []
    for total, parts in identities:
        row = np.zeros(len(index))
        for p in parts:
            if not published[p]:
                row[index[p]] += 1
        if total is not None and not published[total]:
            row[index[total]] -= 1
        rows.append(row)
    return np.array(rows) if rows else np.zeros((0, len(index)))


def audit_coverage(
    frame: pl.DataFrame,
    column: str | None,
    expected: dict[object, dict[str, int]],
    overall: pl.DataFrame | None,
    k: int,
) -> list[str]:
    """Return the audit's findings for one coverage table (and its margin, when given)."""
    rows = rows_by(frame, column) if column else {None: frame.row(0, named=True)}
    values: dict[Cell, int] = {}
    published: dict[Cell, bool] = {}
    identities: Identities = []
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
