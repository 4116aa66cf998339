"""Snapshot commands for analysts and the bank: key pairs, key handouts, the data dictionary.

    analyst   snapshot keygen --out DIR                     an X25519 key pair (send the .pub)
    bank      snapshot bank-key --out FILE                  the key analysts check handouts with
    bank      snapshot grant --branch B --to LABEL --public-key FILE
                                                            the branch's key, sealed to the analyst
    analyst   snapshot open HANDOUT --private-key K --bank-key FILE
                                                            the key, into a 0600 file
    anyone    snapshot dictionary [--markdown | --json]     what every analyst view's column means

No command prints a snapshot key unless `snapshot open --print` asks for it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from fusion.analyst_views import data_dictionary, dictionary_markdown
from fusion.pipeline.bank import grant_snapshot_key, write_bank_handout_key
from fusion.runfolder import RunFolder
from labs.cli.options import DEFAULT_RUN, RunOption, bank_of, now
from labs.cli.terminal import console
from matcher.key_handout import (
    open_handout,
    read_public_key,
    write_analyst_keys,
    write_snapshot_key,
)
from matcher.keyring import Keyring

__all__ = ["bank_key", "dictionary", "grant", "keygen", "open_command", "snapshot_app"]

snapshot_app = typer.Typer(
    help="Snapshots for analysts: key pairs, key handouts, the data dictionary.",
    no_args_is_help=True,
)


@snapshot_app.command("keygen")
def keygen(
    out: Annotated[
        Path, typer.Option("--out", help="Folder for analyst.key (0600) and analyst.pub.")
    ] = Path("analyst-keys"),
) -> None:
    """Create an analyst's key pair; send analyst.pub to the bank, keep analyst.key."""
    private, public = write_analyst_keys(out)
    console.print(f"private key: {private} (keep it: it opens your key handouts)")
    console.print(f"public key:  {public} (send it to the bank for `fusion snapshot grant`)")


@snapshot_app.command("bank-key")
def bank_key(
    out: Annotated[Path, typer.Option("--out", help="File to write (hex, one line).")],
    run: RunOption = DEFAULT_RUN,
) -> None:
    """Write the bank's handout verification key, for analysts to check handouts with."""
    fingerprint = write_bank_handout_key(Keyring.open(RunFolder(run).bank_keys), out)
    console.print(f"bank handout key written: {out} (SHA-256 {fingerprint})")
    console.print("give it to analysts out of band; they compare the SHA-256 with yours")


@snapshot_app.command("grant")
def grant(
    branch: Annotated[
        str, typer.Option("--branch", help="Branch id, or head_office for the full copy.")
    ],
    to: Annotated[str, typer.Option("--to", help="The analyst's label, as audited.")],
    public_key: Annotated[
        Path, typer.Option("--public-key", help="The analyst's analyst.pub (`snapshot keygen`).")
    ],
    out: Annotated[
        Path | None, typer.Option("--out", help="Handout file (default: <run>/handouts/...).")
    ] = None,
    run: RunOption = DEFAULT_RUN,
) -> None:
    """Seal the snapshot's current key to an analyst's public key (audited; never shown)."""
    with bank_of(run) as bank:
        granted = grant_snapshot_key(
            bank, snapshot=branch, label=to, public_key=public_key, out=out, now=now()
        )
    console.print(
        f"handout for {granted.label}: {granted.path} (snapshot {granted.snapshot}, key version "
        f"{granted.key_version}, sealed to public key SHA-256 {granted.recipient_sha256[:16]}...)"
    )
    console.print(
        f"the analyst opens it with `fusion snapshot open` and the bank key "
        f"(SHA-256 {granted.bank_key_sha256[:16]}..., `fusion snapshot bank-key`)"
    )


@snapshot_app.command("open")
def open_command(
    handout: Annotated[Path, typer.Argument(help="The handout file the bank sent.")],
    private_key: Annotated[Path, typer.Option("--private-key", help="Your analyst.key.")],
    bank_key_file: Annotated[
        Path, typer.Option("--bank-key", help="The bank's handout key (`snapshot bank-key`).")
    ],
    branch: Annotated[
        str | None, typer.Option("--branch", help="Refuse a handout for another snapshot.")
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Key file (default: <snapshot>.v<n>.key), 0600.")
    ] = None,
    show: Annotated[
        bool, typer.Option("--print", help="Print the key instead of writing a file.")
    ] = False,
) -> None:
    """Check and open a key handout with your private key; write the snapshot key to a file."""
    opened = open_handout(
        handout.read_bytes(),
        private_key=private_key,
        bank_public=read_public_key(bank_key_file),
        snapshot=branch,
    )
    if show:
        typer.echo(opened.key)
        return
    path = write_snapshot_key(out or Path(f"{opened.snapshot}.v{opened.key_version}.key"), opened)
    console.print(
        f"key of snapshot {opened.snapshot} (version {opened.key_version}) written to {path} "
        "(0600); docs/analysts.md shows how to ATTACH with it"
    )


@snapshot_app.command("dictionary")
def dictionary(
    markdown: Annotated[bool, typer.Option("--markdown", help="As docs/dictionary.md.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="As JSON.")] = False,
) -> None:
    """Print what every analyst view and column means (the snapshots' comments)."""
    if markdown:
        typer.echo(dictionary_markdown(), nl=False)
        return
    entries = data_dictionary()
    if as_json:
        typer.echo(json.dumps([e.to_dict() for e in entries], indent=2))
        return
    for entry in entries:
        table = Table(
            title=f"{entry.schema}.{entry.name}: {entry.description}", title_justify="left"
        )
        table.add_column("column")
        table.add_column("meaning")
        for column in entry.columns:
            table.add_row(column.name, column.description)
        console.print(table)
