"""The `fusion` command's exit codes and the messages that send users somewhere (issue 22, 6, 8).

Exit status: 0 done, 1 done with findings (a refused or quarantined batch), 2 a usage or input
error. Each test runs the command as a user would and asserts the exit code and the first line
of what it printed. The run folder is the cheap campaign bank (a keyring and a store, no
training); a test that changes it works on its own copy.
"""

from __future__ import annotations

import os
import shutil
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
