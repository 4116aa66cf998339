"""The `fusion` command's exit codes, its one error path and its messages (issue 22, 6-9).

Exit status: 0 done, 1 done with findings (a refused or quarantined batch), 2 a usage or input
error. Each test runs the command as a user would and asserts the exit code and the first line
of what it printed. The run folder is the cheap campaign bank (a keyring and a store, no
training); a test that changes it works on its own copy.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fusion.runfolder import RunFolder
from fusion.store import Store
from labs.cli import app
from matcher.envelope import MAGIC
from matcher.keyring import Keyring
from tests.support.campaign_banks import campaign_bank
from tests.support.cli import first_line, fusion

runner = CliRunner()


@pytest.fixture(scope="module")
def bank_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("exit-codes")
    return campaign_bank(tmp / "run", tmp / "duckdb-extensions", n=300).root


@pytest.fixture
def run(bank_run: Path, tmp_path: Path) -> Path:
    """Return a copy of the run folder for a test that changes it."""
    copy = tmp_path / "run"
    shutil.copytree(bank_run, copy)
    return copy


def flat(text: str) -> str:
    return " ".join(text.split())


# -- 6: exit codes ---------------------------------------------------------------------------


def test_sql_with_an_error_exits_2_and_says_why(bank_run: Path):
    result = fusion(bank_run, "sql", "SELECT nope FROM customers")
    assert result.exit_code == 2, result.output
    assert first_line(result.stderr).startswith("query failed: BinderException")
    assert fusion(bank_run, "sql", "SELECT count(*) AS n FROM customers").exit_code == 0


def test_ingest_of_a_file_that_is_refused_exits_1_and_names_its_ledger_row(run: Path):
    junk = run / "junk.sealed"
    junk.write_bytes(MAGIC + b"signed by nobody" * 64)  # starts as a batch, opens as none
    result = runner.invoke(app, ["--log-level", "ERROR", "ingest", str(junk), "--run", str(run)])
    assert result.exit_code == 1, result.output
    assert first_line(result.stdout).startswith("refused:"), result.stdout
    assert "None" not in result.stdout
    assert first_line(result.stderr).startswith(
        "finding: 1 of 1 sealed files not loaded (refused or quarantined): refused:"
    )
    assert fusion(run, "ingest").exit_code == 0  # an empty inbox: nothing was asked


def test_token_revoke_of_an_unknown_id_exits_2_and_a_second_revoke_0(run: Path):
    unknown = fusion(run, "token", "revoke", "0123456789abcdef")
    assert unknown.exit_code == 2, unknown.output
    assert first_line(unknown.stderr).startswith(
        "error: no token has id '0123456789abcdef', so nothing was revoked;"
    )
    made = fusion(run, "token", "create", "--role", "analyst", "--branches", "B001")
    assert made.exit_code == 0, made.output
    token_id = made.stderr.split()[1]
    revoked = fusion(run, "token", "revoke", token_id)
    assert revoked.exit_code == 0 and first_line(revoked.stdout) == f"token {token_id}: revoked"
    again = fusion(run, "token", "revoke", token_id)
    assert again.exit_code == 0, again.output
    assert first_line(again.stdout).startswith(f"token {token_id}: already revoked at ")


# -- 8: messages that name a command that exists ----------------------------------------------


def test_token_revoke_on_a_held_store_quotes_the_admin_token_so_the_shell_expands_it(
    bank_run: Path,
):
    folder = RunFolder(bank_run)
    with Store.open(folder.store, key=Keyring.open(folder.bank_keys).store_key()):
        held = fusion(bank_run, "token", "revoke", "0123456789abcdef")
    assert held.exit_code == 2
    assert first_line(held.stderr).startswith("error: ")
    assert '-H "Authorization: Bearer $ADMIN_TOKEN"' in flat(held.stderr)


@pytest.fixture
def sql_prompt(bank_run: Path) -> Iterator[subprocess.Popen[str]]:
    """Yield an interactive `fusion sql` in another process, holding the store read-only."""
    analyst = subprocess.Popen(
        [sys.executable, "-m", "labs.cli", "sql", "--run", str(bank_run)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
    )
    try:
        assert analyst.stdout is not None
        prompt = ""
        while "fusion sql>" not in prompt:  # the store is open once the prompt shows
            char = analyst.stdout.read(1)
            assert char, "fusion sql ended before its prompt"
            prompt += char
        yield analyst
    finally:
        assert analyst.stdin is not None and analyst.stdout is not None
        analyst.stdin.close()
        analyst.wait(timeout=30)
        analyst.stdout.close()


def test_a_store_held_by_a_reader_is_not_called_written(
    bank_run: Path, sql_prompt: subprocess.Popen[str]
):
    refused = fusion(bank_run, "token", "revoke", "0123456789abcdef")
    assert refused.exit_code == 2
    message = flat(refused.stderr)  # rich wraps the long path onto a line of its own
    assert message.startswith(f"error: another process holds {RunFolder(bank_run).store}")
    assert "writing or reading" in message and "is writing" not in message


def test_a_missing_keyring_names_the_command_that_creates_it(tmp_path: Path):
    result = fusion(tmp_path / "empty", "token", "list")
    assert result.exit_code == 2
    assert first_line(result.stderr).startswith("error: no keyring at ")
    message = flat(result.stderr)
    assert "`fusion keys init` for the bank, `fusion vendor keygen` for the vendor" in message
    assert "Keyring." not in message


def test_keys_init_over_a_keyring_says_to_keep_it_not_to_call_python(bank_run: Path):
    result = fusion(bank_run, "keys", "init")
    assert result.exit_code == 2
    assert first_line(result.stderr).startswith("error: ")
    assert "never overwritten" in flat(result.stderr)
    assert "Keyring." not in result.stderr


def test_keys_rotate_lists_only_what_the_bank_can_rotate(bank_run: Path):
    result = fusion(bank_run, "keys", "rotate", "--what", "foo")
    assert result.exit_code == 2
    assert "'foo' is not one of 'hpke', 'salt'" in flat(result.stderr)
    assert "signing" not in result.stderr and "oprf" not in result.stderr


# -- 7: the one error path: OS errors, damaged files, faults -----------------------------------


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
