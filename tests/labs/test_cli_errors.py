"""The `fusion` command's one error path (issue 22, 7 and 9): no traceback, an honest exit code.

OS errors the user caused, a damaged features folder or store, `serve` without a run or a free
port: one `error:` line and exit 2. A fault of the platform: exit 3 and a crash report that
holds no value of the data. Nonsense the command used to accept is refused.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fusion.runfolder import RunFolder
from labs.cli import app
from tests.support.campaign_banks import campaign_bank
from tests.support.cli import first_line, fusion

runner = CliRunner()


@pytest.fixture(scope="module")
def bank_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("cli-errors")
    return campaign_bank(tmp / "run", tmp / "duckdb-extensions", n=300).root


@pytest.fixture
def run(bank_run: Path, tmp_path: Path) -> Path:
    """Return a copy of the run folder for a test that changes it."""
    copy = tmp_path / "run"
    shutil.copytree(bank_run, copy)
    return copy


def flat(text: str) -> str:
    return " ".join(text.split())


def test_an_os_error_is_one_line_and_exit_2(tmp_path: Path):
    # /sys refuses a new folder to every account, root included: a read-only place.
    result = runner.invoke(app, ["world", "--out", "/sys/fusion-test", "--customers", "100"])
    assert result.exit_code == 2, result.output
    assert first_line(result.stderr).startswith("error: permission denied on /sys/fusion-test")
    assert "Traceback" not in result.output


def test_serve_without_a_run_folder_or_a_free_port_says_so(bank_run: Path, tmp_path: Path):
    missing = runner.invoke(app, ["serve", "--run", str(tmp_path / "nowhere")])
    assert missing.exit_code == 2, missing.output
    assert "fusion keys init" in flat(missing.stderr) and "Traceback" not in missing.output
    assert not (tmp_path / "nowhere").exists()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        busy = runner.invoke(app, ["serve", "--run", str(bank_run), "--port", port])
    assert busy.exit_code == 2, busy.output
    assert first_line(busy.stderr).startswith("error: the address is in use")


@pytest.mark.parametrize("damage", ["tags.npz", "manifest.json"])
def test_a_damaged_features_folder_says_how_to_rebuild_it(run: Path, damage: str):
    snapshot = next(RunFolder(run).features.iterdir())
    (snapshot / "tags.npz").write_bytes(b"PK\x03\x04 cut short")
    if damage == "manifest.json":
        (snapshot / "manifest.json").write_text("{not json")
    result = fusion(run, "score")
    assert result.exit_code == 2, result.output
    assert first_line(result.stderr).startswith(f"error: the feature tables in {snapshot}")
    assert f"fusion features --snapshot {snapshot.name} --replace" in flat(result.stderr)


def test_a_damaged_store_is_named_damaged(run: Path):
    store = RunFolder(run).store
    size = store.stat().st_size
    with store.open("r+b") as handle:  # damage a block in every 256 KiB after the header
        for offset in range(1 << 18, size, 1 << 18):
            handle.seek(offset)
            handle.write(os.urandom(4096))
    result = fusion(run, "sql", "SELECT count(*) FROM customers")
    assert result.exit_code == 2, result.output
    # Where the damage falls decides which read notices it first: opening, or a later block.
    message = flat(result.stderr)
    assert "a damaged one" in message or "is damaged: a block of it fails" in message, message
    assert "Traceback" not in result.output


def test_a_fault_is_exit_3_with_a_crash_report_that_holds_no_value(
    bank_run: Path, monkeypatch: pytest.MonkeyPatch
):
    phone = "13812345678"

    def broken(*args: object, **kwargs: object) -> None:
        raise ZeroDivisionError(f"row with phone {phone}")  # a library quoting a value

    monkeypatch.setattr("fusion.tokens.list_tokens", broken)
    result = fusion(bank_run, "token", "list")
    assert result.exit_code == 3, result.output
    line = first_line(result.stderr)
    assert line.startswith("error: unexpected ZeroDivisionError in `fusion token list`")
    assert phone not in result.output
    report = Path(re.search(r"crash report is (\S+?):", flat(result.stderr)).group(1))  # type: ignore[union-attr]
    text = report.read_text()
    assert "fusion token list" in text and "ZeroDivisionError" in text and phone not in text
    assert report.stat().st_mode & 0o077 == 0
    report.unlink()

    debug = runner.invoke(app, ["--log-level", "DEBUG", "token", "list", "--run", str(bank_run)])
    assert debug.exit_code == 3 and "Traceback" in debug.stderr


def test_taxonomy_load_loads_once_and_names_an_unknown_version(run: Path):
    first = fusion(run, "taxonomy", "load")
    assert first.exit_code == 0, first.output
    assert re.match(r"taxonomy \S+: loaded \(26 categories", first_line(first.stdout))
    again = fusion(run, "taxonomy", "load")
    assert "already in the store" in again.stdout
    unknown = fusion(run, "taxonomy", "load", "--version", "1999.9")
    assert unknown.exit_code == 2
    assert first_line(unknown.stderr).startswith("error: unknown taxonomy version '1999.9'")


# -- 9: accepted nonsense ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("branches", "expected"),
    [("B999", "no customer is in branch B999"), ("b001", "case-sensitive: B001?")],
)
def test_a_token_for_a_branch_that_does_not_exist_is_refused(
    bank_run: Path, branches: str, expected: str
):
    result = fusion(bank_run, "token", "create", "--role", "analyst", "--branches", branches)
    assert result.exit_code == 2, result.output
    assert expected in flat(result.stderr)
    assert "bf_" not in result.stdout
    assert fusion(bank_run, "token", "list").stdout.count("analyst") == 0


def test_a_token_for_a_vendor_the_bank_does_not_trust_is_refused(bank_run: Path):
    result = fusion(bank_run, "token", "create", "--role", "vendor", "--vendor", "vendr-a")
    assert result.exit_code == 2, result.output
    assert first_line(result.stderr).startswith("error: the bank trusts no vendor 'vendr-a'")


def test_sql_refuses_a_negative_limit_and_says_what_it_cut(bank_run: Path):
    assert fusion(bank_run, "sql", "SELECT 1", "--limit", "-1").exit_code == 2
    cut = fusion(bank_run, "sql", "SELECT * FROM customers", "--limit", "2")
    assert cut.exit_code == 0, cut.output
    assert "2 of 300 rows shown (--limit)" in cut.stdout


def test_sql_shows_every_statement(bank_run: Path):
    both = fusion(bank_run, "sql", "SELECT 41 AS first_answer; SELECT 42 AS second_answer")
    assert both.exit_code == 0, both.output
    assert "first_answer" in both.stdout and "second_answer" in both.stdout
    failed = fusion(bank_run, "sql", "SELECT 1 AS ran; SELECT nope")
    assert failed.exit_code == 2 and "ran" in failed.stdout
