"""The `fusion` command refuses the mistakes that used to lose or replace data (issue 22, 1-5).

Each test makes the mistake through the command, as a user would, and asserts the exit code, the
first line of the message and, where the command refused, that the files or the store are as
they were. One demo run is built per module; a test that changes it works on its own copy.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from fusion.runfolder import RunFolder
from fusion.store import Store
from labs.cli import app
from labs.world import WorldFiles
from matcher.keyring import Keyring
from tests.support.cli import first_line, fusion
from tests.support.shared_runs import copy_of, small_demo

pytestmark = pytest.mark.slow  # one demo run (about 15 s), then copies of it

runner = CliRunner()

SNAPSHOT = "2026-09-30"  # the demo's snapshot, matched under the first salt epoch


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> Path:
    """The shared 3k demo run: never changed here."""
    return small_demo(tmp_path_factory, worker_id)[0]


@pytest.fixture
def run(demo_run: Path, tmp_path: Path) -> Path:
    """Return a copy of the demo run for a test that changes it."""
    return copy_of(demo_run, tmp_path / "run")


def digests(*paths: Path) -> dict[str, str]:
    """Return the SHA-256 of every file at or under `paths`, by path."""
    files = [f for p in paths for f in ([p] if p.is_file() else sorted(p.rglob("*")))]
    return {str(f): hashlib.sha256(f.read_bytes()).hexdigest() for f in files if f.is_file()}


def customers_table(run: Path) -> pl.DataFrame:
    """Return the store's customers rows (id, epoch, snapshot, key) in a fixed order."""
    folder = RunFolder(run)
    key = Keyring.open(folder.bank_keys).store_key()
    with Store.open(folder.store, key=key, read_only=True) as store:
        return store.execute(
            "SELECT customer_id, salt_epoch, snapshot_date, key FROM customers "
            "ORDER BY snapshot_date, salt_epoch, customer_id"
        ).pl()


def extract(run: Path) -> Path:
    return WorldFiles(run / "world").customers


def smaller_extract(run: Path, rows: int = 2_000) -> Path:
    """Return another extract: the first `rows` customers of the demo's."""
    path = run / "smaller.parquet"
    pl.read_parquet(extract(run)).head(rows).write_parquet(path)
    return path


def extract_nobody_matches(run: Path) -> Path:
    """Return the demo's customers with valid mobile phones that no vendor user has."""
    path = run / "strangers.parquet"
    frame = pl.read_parquet(extract(run))
    phones = pl.format("1390{}", pl.int_range(pl.len()).cast(pl.String).str.zfill(7))
    nobody = pl.lit(None, dtype=pl.String)  # and no other identifier to match by
    frame.with_columns(phone=phones, id_number=nobody, device_id=nobody).write_parquet(path)
    return path


# -- 1. features after a salt rotation or with a mistyped epoch ----------------------------------


def test_features_after_a_salt_rotation_keep_the_matched_table(run: Path):
    table = run / "features" / SNAPSHOT
    before = digests(table)
    assert fusion(run, "keys", "rotate", "--what", "salt").exit_code == 0

    result = fusion(run, "features", "--snapshot", SNAPSHOT)

    assert result.exit_code == 2, result.output
    assert first_line(result.stderr).startswith(
        f"error: no match run for snapshot {SNAPSHOT} under salt epoch"
    )
    assert "fusion match" in " ".join(result.stderr.split())
    assert digests(table) == before


def test_features_with_a_mistyped_epoch_keep_the_matched_table(run: Path):
    table = run / "features" / SNAPSHOT
    before = digests(table)

    result = fusion(run, "features", "--snapshot", SNAPSHOT, "--epoch", "e2026-12-l")

    assert result.exit_code == 2, result.output
    assert first_line(result.stderr).startswith(
        f"error: no match run for snapshot {SNAPSHOT} under salt epoch e2026-12-l"
    )
    assert digests(table) == before


def test_features_keep_a_table_with_vendor_data_when_the_new_match_found_nobody(run: Path):
    table = run / "features" / SNAPSHOT
    before = digests(table)
    strangers = str(extract_nobody_matches(run))
    replaced = fusion(run, "match", "--extract", strangers, "--snapshot", SNAPSHOT, "--replace")
    assert replaced.exit_code == 1, replaced.output

    result = fusion(run, "features", "--snapshot", SNAPSHOT)

    assert result.exit_code == 2, result.output
    assert first_line(result.stderr).startswith(
        f"error: the match of snapshot {SNAPSHOT} under salt epoch"
    )
    assert digests(table) == before
    forced = fusion(run, "features", "--snapshot", SNAPSHOT, "--replace")
    assert forced.exit_code == 0, forced.output
    assert "0 with vendor data" in forced.output


# -- 2. vendor pack: a fresh file per batch, never over the users file --------------------------


def test_vendor_pack_twice_writes_two_batches_and_says_where(run: Path):
    users = str(WorldFiles(run / "world").vendor_users)

    first = fusion(run, "vendor", "pack", "--users", users)
    assert first.exit_code == 0, first.output
    outbox = RunFolder(run).outbox
    [sealed] = list(outbox.glob("*.sealed"))
    before = digests(sealed)
    second = fusion(run, "vendor", "pack", "--users", users)

    assert second.exit_code == 0, second.output
    assert first_line(second.output).startswith("batch ")
    written = sorted(outbox.glob("*.sealed"))
    assert len(written) == 2 and digests(sealed) == before
    for result in (first, second):
        flat = "".join(result.output.split())
        batch_id = result.output.split()[1]
        assert f"->{outbox / batch_id}.sealed" in flat


def test_vendor_pack_refuses_to_seal_over_the_users_file(run: Path):
    users = WorldFiles(run / "world").vendor_users
    before = digests(users)

    for force in ([], ["--force"]):
        result = fusion(run, "vendor", "pack", "--users", str(users), "--out", str(users), *force)

        assert result.exit_code == 2, result.output
        assert first_line(result.stderr).startswith(
            "error: the sealed batch's output is the users file it is packed from"
        )
        assert digests(users) == before


def test_vendor_pack_refuses_an_existing_out_unless_forced(run: Path):
    users = str(WorldFiles(run / "world").vendor_users)
    out = run / "batch.sealed"
    assert fusion(run, "vendor", "pack", "--users", users, "--out", str(out)).exit_code == 0
    before = digests(out)

    result = fusion(run, "vendor", "pack", "--users", users, "--out", str(out))

    assert result.exit_code == 2, result.output
    assert first_line(result.stderr).startswith("error: the sealed batch's output already exists")
    assert digests(out) == before
    forced = fusion(run, "vendor", "pack", "--users", users, "--out", str(out), "--force")
    assert forced.exit_code == 0, forced.output
    assert digests(out) != before


# -- 3. vendor evaluate: the output is checked before the budget is spent ------------------------


def test_vendor_evaluate_to_a_folder_spends_no_budget(run: Path):
    folder = RunFolder(run)
    epoch = Keyring.open(folder.vendor_keys).current_oprf_epoch()
    request = run / "request.oprf"
    asked = fusion(
        run, "match", "--mode", "oprf", "--epoch", epoch, "--extract", str(extract(run)),
        "--snapshot", SNAPSHOT, "--request-out", str(request),
    )  # fmt: skip
    assert asked.exit_code == 0, asked.output
    out = run / "answers"
    out.mkdir()
    keys_before = digests(folder.vendor_keys)

    result = fusion(
        run, "vendor", "evaluate", "--request", str(request), "--out", str(out),
        "--declared-customers", "9000",
    )  # fmt: skip

    assert result.exit_code == 2, result.output
    assert first_line(result.stderr).startswith("error: the answer file's path is a folder")
    assert "nothing was evaluated" in " ".join(result.stderr.split())
    assert digests(folder.vendor_keys) == keys_before  # no budget file: nothing counted
    assert not any(out.iterdir())
    answered = fusion(
        run, "vendor", "evaluate", "--request", str(request), "--out", str(out / "a.oprf"),
        "--declared-customers", "9000",
    )  # fmt: skip
    assert answered.exit_code == 0, answered.output
    assert (out / "a.oprf").is_file()


# -- 4. match: another extract for a snapshot already matched ------------------------------------


def test_match_refuses_another_extract_for_a_matched_snapshot(run: Path):
    before = customers_table(run)
    smaller = str(smaller_extract(run))

    result = fusion(run, "match", "--extract", smaller, "--snapshot", SNAPSHOT)

    assert result.exit_code == 2, result.output
    assert first_line(result.stderr).startswith(
        f"error: snapshot {SNAPSHOT} already holds 3,000 customers of another extract"
    )
    assert "--replace" in " ".join(result.stderr.split())
    assert customers_table(run).equals(before)
    # The OPRF request is refused too, before it could cost the vendor's budget.
    epoch = Keyring.open(RunFolder(run).vendor_keys).current_oprf_epoch()
    request = run / "request.oprf"
    oprf = fusion(
        run, "match", "--mode", "oprf", "--epoch", epoch, "--extract", smaller,
        "--snapshot", SNAPSHOT, "--request-out", str(request),
    )  # fmt: skip
    assert oprf.exit_code == 2 and not request.exists(), oprf.output


def test_match_replaces_a_snapshot_only_when_asked(run: Path):
    smaller = str(smaller_extract(run))
    same = fusion(run, "match", "--extract", str(extract(run)), "--snapshot", SNAPSHOT)
    assert same.exit_code == 0, same.output  # the same customers again: nothing replaced

    result = fusion(run, "match", "--extract", smaller, "--snapshot", SNAPSHOT, "--replace")

    assert result.exit_code == 0, result.output
    assert first_line(result.output).startswith(f"match {SNAPSHOT}")
    assert customers_table(run)["customer_id"].n_unique() == 2_000


# -- 5. match with no vendor batch to match against ---------------------------------------------


def test_match_after_a_salt_rotation_says_why_and_stores_nothing(run: Path):
    assert fusion(run, "keys", "rotate", "--what", "salt").exit_code == 0
    before = customers_table(run)

    result = fusion(run, "match", "--extract", str(extract(run)), "--snapshot", SNAPSHOT)

    assert result.exit_code == 2, result.output
    assert first_line(result.stderr).startswith("error: no loaded vendor batch under salt epoch")
    message = " ".join(result.stderr.split())
    assert "after a salt rotation" in message and "fusion vendor pack" in message
    assert customers_table(run).equals(before)


def test_match_before_any_vendor_batch_says_why_and_stores_nothing(run: Path):
    before = customers_table(run)

    result = fusion(run, "match", "--extract", str(extract(run)), "--snapshot", "2026-01-01")

    assert result.exit_code == 2, result.output
    assert first_line(result.stderr).startswith("error: no loaded vendor batch under salt epoch")
    assert "on or before 2026-01-01" in " ".join(result.stderr.split())
    assert customers_table(run).equals(before)


def test_match_of_nobody_exits_1_with_a_finding(run: Path):
    strangers = str(extract_nobody_matches(run))

    result = fusion(run, "match", "--extract", strangers, "--snapshot", "2026-10-31")

    assert result.exit_code == 1, result.output
    assert first_line(result.stderr).startswith("finding: nobody matched: 0 of 3,000 customers")
    stored = customers_table(run).filter(pl.col("snapshot_date").cast(pl.String) == "2026-10-31")
    assert stored.height == 3_000  # the match ran and is kept: a finding, not a refusal


def test_match_help_documents_its_exit_codes():
    result = runner.invoke(app, ["match", "--help"])
    assert result.exit_code == 0
    assert "Exit status" in result.output and "--replace" in result.output


# -- 9: an extract the bank's side cannot use ------------------------------------------------------


def test_an_empty_extract_is_called_empty(run: Path):
    empty = run / "empty.parquet"
    pl.read_parquet(extract(run)).head(0).write_parquet(empty)
    result = fusion(run, "match", "--extract", str(empty), "--snapshot", "2026-10-31")
    assert result.exit_code == 2, result.output
    assert first_line(result.stderr) == (
        "error: the extract has no rows: export the customers of the snapshot again"
    )


def test_an_extract_error_speaks_to_the_bank(run: Path):
    before = customers_table(run)
    no_ids = run / "no-ids.parquet"
    pl.read_parquet(extract(run)).with_columns(customer_id=pl.lit(None, pl.Int64)).write_parquet(
        no_ids
    )
    result = fusion(run, "match", "--extract", str(no_ids), "--snapshot", "2026-10-31")
    assert result.exit_code == 2, result.output
    text = " ".join(result.stderr.split())
    assert "run `fusion match` again; nothing was stored" in text
    assert "batch_id" not in text
    assert customers_table(run).equals(before)


# -- the OPRF answer: a snapshot replaced only when asked; an answer kept unless forced --------


def _oprf_request(run: Path, extract_path: Path, request: Path, *extra: str) -> None:
    epoch = Keyring.open(RunFolder(run).vendor_keys).current_oprf_epoch()
    asked = fusion(
        run, "match", "--mode", "oprf", "--epoch", epoch, "--extract", str(extract_path),
        "--snapshot", SNAPSHOT, "--request-out", str(request), *extra,
    )  # fmt: skip
    assert asked.exit_code == 0, asked.output


def test_vendor_evaluate_keeps_an_existing_answer_unless_forced(run: Path):
    request, answer = run / "request.oprf", run / "answer.oprf"
    _oprf_request(run, extract(run), request)
    answer.write_bytes(b"an answer already written")
    budget = digests(RunFolder(run).vendor_keys)
    kept = fusion(
        run, "vendor", "evaluate", "--request", str(request), "--out", str(answer),
        "--declared-customers", "9000",
    )  # fmt: skip
    assert kept.exit_code == 2, kept.output
    assert first_line(kept.stderr).startswith(f"error: {answer} exists already")
    assert answer.read_bytes() == b"an answer already written"
    assert digests(RunFolder(run).vendor_keys) == budget  # nothing spent
    forced = fusion(
        run, "vendor", "evaluate", "--request", str(request), "--out", str(answer),
        "--declared-customers", "9000", "--force",
    )  # fmt: skip
    assert forced.exit_code == 0, forced.output
    assert answer.read_bytes() != b"an answer already written"


def test_an_oprf_answer_replaces_a_matched_snapshot_only_when_asked(run: Path):
    folder = RunFolder(run)
    users = run / "world" / "vendor" / "users.parquet"
    sealed = run / "oprf.sealed"
    packed = fusion(
        run, "vendor", "pack", "--users", str(users), "--mode", "oprf", "--out", str(sealed)
    )
    assert packed.exit_code == 0, packed.output
    assert fusion(run, "ingest", str(sealed)).exit_code == 0
    after_batch = (datetime.now(UTC).date() + timedelta(days=1)).isoformat()
    epoch = Keyring.open(folder.vendor_keys).current_oprf_epoch()
    oprf = ["match", "--mode", "oprf", "--epoch", epoch, "--snapshot", after_batch]
    matched = fusion(run, *oprf, "--extract", str(extract(run)), "--local-vendor")
    assert matched.exit_code == 0, matched.output
    # 1,000 more evaluations fit the epoch's budget (9,000 declared: 10,900).
    smaller, request = smaller_extract(run, rows=1_000), run / "request.oprf"
    answer = run / "answer.oprf"
    asked = fusion(
        run, *oprf, "--extract", str(smaller), "--request-out", str(request), "--replace"
    )
    assert asked.exit_code == 0, asked.output
    answered = fusion(
        run, "vendor", "evaluate", "--request", str(request), "--out", str(answer),
        "--declared-customers", "9000",
    )  # fmt: skip
    assert answered.exit_code == 0, answered.output
    before = customers_table(run)
    args = [*oprf, "--extract", str(smaller), "--answer", str(answer)]

    refused = fusion(run, *args)

    assert refused.exit_code == 2, refused.output
    assert "--replace" in " ".join(refused.stderr.split())
    assert customers_table(run).equals(before)
    replaced = fusion(run, *args, "--replace")
    assert replaced.exit_code == 0, replaced.output
    stored = customers_table(run).filter(pl.col("snapshot_date").cast(pl.String) == after_batch)
    assert stored["customer_id"].n_unique() == 1_000
