"""`fusion snapshot`: an analyst's key pair, a key handout, the snapshot opened by plain DuckDB.

The snapshot is opened the way an analyst opens it: a separate Python process that imports
nothing but duckdb, with the key the grant sealed and the analyst's private key unsealed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from fusion.pipeline.bank import published_snapshot_key
from fusion.runfolder import RunFolder
from fusion.store import Store
from labs.cli import bank as bank_cli
from labs.cli.snapshot import snapshot_app
from matcher.keyring import Keyring
from tests.support.campaign_banks import campaign_bank

pytestmark = pytest.mark.slow  # a store, two publishes, plain-DuckDB processes: a few seconds

# What an analyst types: nothing of this project is imported. For each (file, key file) given,
# whether the key opens it, and then its branches' customer counts and undescribed columns.
_PLAIN_DUCKDB = """
import importlib.util, json, pathlib, sys
import duckdb
# OpenSSL for DuckDB's encryption: the signed httpfs of the PyPI package duckdb-ext-httpfs.
spec = importlib.util.find_spec("duckdb_ext")
extensions = pathlib.Path(spec.submodule_search_locations[0]) / "extensions"
con = duckdb.connect(config={"extension_directory": str(extensions)})
con.execute("LOAD httpfs")
answers = []
for path, key_file in zip(sys.argv[1::2], sys.argv[2::2]):
    key = open(key_file).read().strip()
    try:
        quoted = "'" + path.replace("'", "''") + "'"
        con.execute("ATTACH " + quoted + " AS s (ENCRYPTION_KEY ?, READ_ONLY)", [key])
    except duckdb.Error:
        answers.append({"opened": False})
        continue
    rows = con.execute(
        "SELECT branch_id, count(*) FROM s.analyst_v1.customers GROUP BY 1 ORDER BY 1"
    ).fetchall()
    undescribed = con.execute(
        "SELECT count(*) FROM duckdb_columns() WHERE database_name = 's' "
        "AND schema_name = 'analyst_v1' AND comment IS NULL"
    ).fetchone()[0]
    answers.append({"opened": True, "branches": rows, "undescribed": undescribed})
    con.execute("DETACH s")
print(json.dumps(answers))
"""


def _plain_duckdb(*opens: tuple[Path, Path]) -> list[dict[str, Any]]:
    """Return what a plain DuckDB process sees opening each snapshot with each key file."""
    args = [str(p) for pair in opens for p in pair]
    done = subprocess.run(
        [sys.executable, "-I", "-c", _PLAIN_DUCKDB, *args],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    answers: list[dict[str, Any]] = json.loads(done.stdout)
    return answers


@pytest.fixture(scope="module")
def cli() -> typer.Typer:
    """The root command with the commands under test, as `fusion` registers them."""
    root = typer.Typer()
    root.command("publish")(bank_cli.publish)
    root.add_typer(snapshot_app, name="snapshot")
    return root


def _run(cli: typer.Typer, *args: str) -> str:
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == 0, (result.output, result.exception)
    return " ".join(result.output.split())  # as read, whatever the terminal's width


@dataclass(frozen=True)
class Published:
    """A published run, an analyst's key pair and the bank's handout key."""

    folder: RunFolder
    analyst: Path
    bank_key: Path

    def grant(self, cli: typer.Typer, branch: str, tag: str) -> tuple[Path, str]:
        """Return the key file an analyst opened from a grant of `branch`, and the output."""
        handout = self.analyst / f"{tag}.handout.json"
        printed = _run(
            cli, "snapshot", "grant", "--branch", branch, "--to", "alice",
            "--public-key", str(self.analyst / "analyst.pub"), "--out", str(handout),
            "--run", str(self.folder.root),
        )  # fmt: skip
        key_file = self.analyst / f"{tag}.key"
        _run(
            cli, "snapshot", "open", str(handout),
            "--private-key", str(self.analyst / "analyst.key"), "--bank-key", str(self.bank_key),
            "--branch", branch, "--out", str(key_file),
        )  # fmt: skip
        assert key_file.stat().st_mode & 0o777 == 0o600
        return key_file, printed + handout.read_text()


@pytest.fixture(scope="module")
def published(cli: typer.Typer, tmp_path_factory: pytest.TempPathFactory) -> Published:
    root = tmp_path_factory.mktemp("snapshot-cli")
    folder = campaign_bank(root / "run", root / "duckdb-extensions", n=600)
    assert "under key version 1" in _run(cli, "publish", "--run", str(folder.root))
    analyst = root / "alice"
    _run(cli, "snapshot", "keygen", "--out", str(analyst))
    assert (analyst / "analyst.key").stat().st_mode & 0o777 == 0o600
    bank_key = root / "bank.pub"
    _run(cli, "snapshot", "bank-key", "--out", str(bank_key), "--run", str(folder.root))
    return Published(folder, analyst, bank_key)


def test_a_granted_branch_key_opens_that_branch_only_in_plain_duckdb(
    cli: typer.Typer, published: Published
):
    b001, printed = published.grant(cli, "B001", "b001-v1")
    assert b001.read_text().strip() not in printed  # never in clear, on screen or in the file
    head, _ = published.grant(cli, "head_office", "head-v1")
    folder = published.folder
    with Store.open(folder.store, key=Keyring.open(folder.bank_keys).store_key()) as store:
        (b001_rows,) = store.execute(
            "SELECT count(*) FROM customers WHERE branch_id = 'B001'"
        ).fetchone()
        version = store.execute("SELECT coalesce(max(version), 1) FROM snapshot_key_versions")
        (current,) = version.fetchone()
        grants = store.execute(
            "SELECT snapshot, label, key_version FROM snapshot_grants "
            "WHERE recipient_sha256 IS NOT NULL ORDER BY granted_at DESC LIMIT 2"
        ).fetchall()
        audited = store.execute(
            "SELECT count(*) FROM audit_log WHERE action = 'snapshot grant'"
        ).fetchone()
    assert sorted(grants) == [("B001", "alice", current), ("head_office", "alice", current)]
    assert audited is not None and audited[0] >= 2

    snapshots = folder.snapshots
    branch, whole, *crossed = _plain_duckdb(
        (snapshots / "branch_B001.duckdb", b001),
        (snapshots / "head_office.duckdb", head),
        (snapshots / "head_office.duckdb", b001),
        (snapshots / "branch_B001.duckdb", head),
        (snapshots / "branch_B002.duckdb", b001),
    )
    assert branch == {"opened": True, "branches": [["B001", b001_rows]], "undescribed": 0}
    assert whole["opened"] and len(whole["branches"]) == 8 and whole["undescribed"] == 0
    assert crossed == [{"opened": False}] * 3  # neither key opens the other's file

    # Rotation: the keys handed out no longer open the new files; a new grant names the next
    # version and opens them.
    out = _run(cli, "publish", "--run", str(folder.root), "--rotate-keys")
    assert f"key version {current + 1} (keys rotated)" in out
    b001_next, _ = published.grant(cli, "B001", f"b001-v{current + 1}")
    assert _plain_duckdb(
        (snapshots / "branch_B001.duckdb", b001),
        (snapshots / "head_office.duckdb", head),
        (snapshots / "branch_B001.duckdb", b001_next),
    ) == [{"opened": False}, {"opened": False}, branch]
    manifest = json.loads((snapshots / "manifest.json").read_text())
    assert manifest["key_version"] == current + 1
    assert manifest["snapshots"]["B001"] == "branch_B001.duckdb"
    # The key the service opens head office with follows the rotation.
    key = published_snapshot_key(Keyring.open(folder.bank_keys), snapshots)
    with Store.open(snapshots / "head_office.duckdb", key=key, read_only=True) as copy:
        assert copy.execute("SELECT count(*) FROM customers").fetchone() == (600,)


def test_grant_refuses_an_unpublished_branch_and_open_a_handout_for_another_branch(
    cli: typer.Typer, published: Published
):
    refused = CliRunner().invoke(
        cli,
        ["snapshot", "grant", "--branch", "B999", "--to", "alice",
         "--public-key", str(published.analyst / "analyst.pub"),
         "--run", str(published.folder.root)],
    )  # fmt: skip
    assert refused.exit_code != 0 and "no published snapshot 'B999'" in str(refused.exception)
    handout = published.analyst / "b002.handout.json"
    _run(
        cli, "snapshot", "grant", "--branch", "B002", "--to", "alice",
        "--public-key", str(published.analyst / "analyst.pub"), "--out", str(handout),
        "--run", str(published.folder.root),
    )  # fmt: skip
    opening = ["snapshot", "open", str(handout),
               "--private-key", str(published.analyst / "analyst.key"),
               "--bank-key", str(published.bank_key), "--print"]  # fmt: skip
    wrong = CliRunner().invoke(cli, [*opening, "--branch", "B001"])
    assert wrong.exit_code != 0 and "did not open" in str(wrong.exception)
    shown = _run(cli, *opening)
    assert len(shown.strip()) == 44  # base64 of 32 bytes, printed only when asked
