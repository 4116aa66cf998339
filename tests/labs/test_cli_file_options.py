"""Every file the `fusion` command takes, given wrong: one line, exit 2, no traceback, no change.

Each input file option gets a missing file, a folder, an empty file and a CSV; each output option
a path of the wrong kind. The command must refuse with one `error:` line that names the path and
exit 2, write nothing into the run folder and spend nothing (issue 22, 7 and its table).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from labs.cli import app
from matcher.keyring import Keyring, pair_locally
from tests.support.campaign_banks import campaign_bank
from tests.support.cli import first_line

runner = CliRunner()

SNAPSHOT = "2026-09-30"


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Return a run folder with both keyrings paired, a store with customers, and an extract."""
    tmp = tmp_path_factory.mktemp("file-options")
    folder = campaign_bank(tmp / "run", tmp / "duckdb-extensions", n=200)
    Keyring.init(folder.vendor_keys, role="vendor", vendor_id="vendor-a")
    pair_locally(Keyring.open(folder.bank_keys), Keyring.open(folder.vendor_keys))
    pl.DataFrame({"customer_id": [1, 2], "phone": ["13800000001", "13800000002"]}).write_parquet(
        tmp / "extract.parquet"
    )
    return folder.root


def _missing(tmp: Path) -> Path:
    return tmp / "no-such-file.parquet"


def _folder(tmp: Path) -> Path:
    (tmp / "a-folder").mkdir(exist_ok=True)
    return tmp / "a-folder"


def _empty(tmp: Path) -> Path:
    (tmp / "empty.parquet").write_bytes(b"")
    return tmp / "empty.parquet"


def _csv(tmp: Path) -> Path:
    (tmp / "table.csv").write_text("customer_id,phone\n1,13800000001\n")
    return tmp / "table.csv"


BAD_INPUTS: dict[str, Callable[[Path], Path]] = {
    "missing": _missing,
    "folder": _folder,
    "empty": _empty,
    "csv": _csv,
}

# Each command with a file option, as a user types it; {bad} is the wrong file, {tmp} a scratch
# folder, {extract} a good customer extract.
INPUT_OPTIONS = {
    "vendor pack --users": "vendor pack --users {bad} --out {tmp}/batch.sealed",
    "ingest FILE": "ingest {bad}",
    "vendor evaluate --request": "vendor evaluate --request {bad} --declared-customers 10",
    "match --extract": f"match --extract {{bad}} --snapshot {SNAPSHOT}",
    "match --answer": (
        f"match --mode oprf --extract {{extract}} --snapshot {SNAPSHOT} --answer {{bad}}"
    ),
    "train --campaign": "train --campaign {bad}",
    "campaign create FILE": "campaign create {bad}",
    "campaign outcomes FILE": "campaign outcomes {bad}",
    "vendor push FILE": "vendor push {bad}",
}
OUTPUT_OPTIONS = {
    "world --out (a file)": "world --out {file} --customers 100",
    "vendor pack --out (a folder)": "vendor pack --users {users} --out {folder}",
    "vendor evaluate --out (a folder)": "vendor evaluate --request {request} --out {folder}",
    "match --request-out (a folder)": (
        f"match --mode oprf --extract {{extract}} --snapshot {SNAPSHOT} --request-out {{folder}}"
    ),
}
NO_RUN = ("world", "vendor push")  # the commands that take no --run


def _digests(root: Path) -> dict[str, str]:
    return {
        str(f.relative_to(root)): hashlib.sha256(f.read_bytes()).hexdigest()
        for f in sorted(root.rglob("*"))
        if f.is_file() and not f.name.endswith(".wal")
    }


def _invoke(line: str, run: Path) -> tuple[int, str, str]:
    args = line.split()
    if not line.startswith(NO_RUN):
        args += ["--run", str(run)]
    result = runner.invoke(app, args, env={"BANKFUSION_TOKEN": "bf_test"})
    return result.exit_code, result.stdout, result.stderr


def _assert_refused(code: int, stdout: str, stderr: str, path: Path) -> None:
    assert code == 2, stdout + stderr
    assert "Traceback" not in stdout + stderr
    line = first_line(stderr)
    assert line.startswith("error: "), stderr
    assert path.name in " ".join(stderr.split()), stderr


@pytest.mark.parametrize("kind", BAD_INPUTS)
@pytest.mark.parametrize("option", INPUT_OPTIONS)
def test_a_wrong_input_file_is_one_line_and_exit_2(
    option: str, kind: str, run: Path, tmp_path: Path
):
    bad = BAD_INPUTS[kind](tmp_path)
    extract = run.parent / "extract.parquet"
    before = _digests(run)
    line = INPUT_OPTIONS[option].format(bad=bad, tmp=tmp_path, extract=extract)
    _assert_refused(*_invoke(line, run), path=bad)
    assert _digests(run) == before  # nothing written, nothing spent (the OPRF budget included)


@pytest.mark.parametrize("option", OUTPUT_OPTIONS)
def test_an_output_path_of_the_wrong_kind_is_one_line_and_exit_2(
    option: str, run: Path, tmp_path: Path
):
    file, folder = tmp_path / "a-file", _folder(tmp_path)
    file.write_text("kept\n")
    users = tmp_path / "users.parquet"
    pl.DataFrame({"phone": ["13800000001"]}).write_parquet(users)
    request = tmp_path / "request.oprf"
    request.write_bytes(b"x")  # refused after the output check or as a request: never spent
    before = _digests(run)
    line = OUTPUT_OPTIONS[option].format(
        file=file,
        folder=folder,
        users=users,
        request=request,
        extract=run.parent / "extract.parquet",
    )
    code, stdout, stderr = _invoke(line, run)
    assert code == 2, stdout + stderr
    assert "Traceback" not in stdout + stderr
    assert first_line(stderr).startswith("error: "), stderr
    assert file.read_text() == "kept\n"
    assert _digests(run) == before


def test_a_mistyped_run_folder_is_refused_and_nothing_is_created(run: Path, tmp_path: Path):
    typo = tmp_path / "rnu"
    batch = tmp_path / "b.sealed"
    from matcher.envelope import MAGIC

    batch.write_bytes(MAGIC + b"\0" * 64)
    for line in (
        f"ingest {batch}",
        "vendor pack --users {users}",
        "features --snapshot 2026-09-30",
    ):
        users = tmp_path / "users.parquet"
        pl.DataFrame({"phone": ["13800000001"]}).write_parquet(users)
        code, stdout, stderr = _invoke(line.format(users=users), typo)
        assert code == 2, stdout + stderr
        assert "fusion keys init" in stderr or "fusion vendor keygen" in stderr, stderr
        assert not typo.exists()


# -- 9: files that used to be accepted although they hold nothing usable -------------------------


def _users(tmp: Path, phones: pl.Series) -> Path:
    path = tmp / "users.parquet"
    n = len(phones)
    pl.DataFrame(
        {
            "phone": phones,
            "app_ids": [[1]] * n,
            "app_days": [[1]] * n,
            "app_sessions": [[1]] * n,
            "tag_ids": [[1]] * n,
            "tag_weights": [[1.0]] * n,
        },
        schema_overrides={
            "app_ids": pl.List(pl.Int32),
            "app_days": pl.List(pl.Int16),
            "app_sessions": pl.List(pl.Int32),
            "tag_ids": pl.List(pl.Int32),
            "tag_weights": pl.List(pl.Float32),
        },
    ).write_parquet(path)
    return path


@pytest.mark.parametrize(
    ("phones", "expected"),
    [
        (pl.Series([13800000001, 13800000002], dtype=pl.Int64), "phone is Int64, not text"),
        (pl.Series([None, None], dtype=pl.String), "no user has a valid mobile phone"),
    ],
)
def test_vendor_pack_seals_no_batch_of_nobody(
    run: Path, tmp_path: Path, phones: pl.Series, expected: str
):
    out = tmp_path / "batch.sealed"
    code, stdout, stderr = _invoke(
        f"vendor pack --users {_users(tmp_path, phones)} --out {out}", run
    )
    assert code == 2, stdout + stderr
    assert expected in " ".join(stderr.split())
    assert not out.exists() and not list(tmp_path.glob(".batch-*"))


@pytest.mark.parametrize("column", ["phone", "customer_id"])
def test_an_extract_without_an_identifier_column_names_it(run: Path, tmp_path: Path, column: str):
    lacking = tmp_path / "lacking.parquet"
    pl.read_parquet(run.parent / "extract.parquet").drop(column).write_parquet(lacking)
    code, stdout, stderr = _invoke(f"match --extract {lacking} --snapshot {SNAPSHOT}", run)
    assert code == 2, stdout + stderr
    assert f"has no column {column}" in " ".join(stderr.split())
    assert "Traceback" not in stdout + stderr
