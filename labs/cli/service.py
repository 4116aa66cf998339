"""The service's commands: serve the API for a run folder; create, list and revoke its tokens."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from contracts.errors import ConfigError, StoreLockedError
from fusion.query_memory import memory_bytes
from fusion.retention import Retention
from fusion.tokens import create_token, revoke_token
from labs.cli.options import DEFAULT_RUN, RunOption, TokenRole, bank_of, now
from labs.cli.terminal import console, err_console

__all__ = ["audit", "serve", "token_app", "token_create", "token_list", "token_revoke"]

token_app = typer.Typer(help="API tokens: create (printed once), list, revoke.")


def serve(
    run: RunOption = DEFAULT_RUN,
    host: Annotated[
        str, typer.Option(help="Bind address (loopback unless --public).")
    ] = "127.0.0.1",
    port: Annotated[
        int, typer.Option(min=0, max=65535, help="TCP port to listen on (0: any free port).")
    ] = 8000,
    public: Annotated[bool, typer.Option(help="Allow a non-loopback bind address.")] = False,
    docs: Annotated[
        bool | None,
        typer.Option(
            "--docs/--no-docs",
            help="Serve /docs, /redoc and /openapi.json without a token (default: on unless "
            "--public).",
        ),
    ] = None,
    quarantine_size: Annotated[
        str, typer.Option(help="Refused and quarantined sealed files kept, in all (e.g. 2GiB).")
    ] = "2GiB",
    quarantine_days: Annotated[
        int, typer.Option(help="Days a refused or quarantined sealed file is kept.")
    ] = 30,
    archive_size: Annotated[
        str, typer.Option(help="Loaded sealed files kept in the archive, in all (e.g. 16GiB).")
    ] = "16GiB",
    archive_days: Annotated[int, typer.Option(help="Days a loaded sealed file is kept.")] = 365,
) -> None:
    """Serve the API for a run folder under uvicorn."""
    from api import ApiSettings, serve  # the service's dependencies load for this command only

    serve(
        ApiSettings(
            run=run,
            host=host,
            port=port,
            allow_non_loopback=public,
            docs=docs,
            quarantine_retention=_retention("quarantine", quarantine_size, quarantine_days),
            archive_retention=_retention("archive", archive_size, archive_days),
        )
    )


def _retention(folder: str, size: str, days: int) -> Retention:
    """Return the bound of a kept folder from its option values, or a ConfigError naming them."""
    try:
        max_bytes = memory_bytes(size)
    except ValueError:
        raise ConfigError(
            f"--{folder}-size must be a size such as 2GiB or 500MB, got {size!r}",
            setting=f"{folder}_size",
        ) from None
    if days < 0:
        raise ConfigError(f"--{folder}-days must be >= 0, got {days}", setting=f"{folder}_days")
    return Retention(max_bytes=max_bytes, max_age=timedelta(days=days))


@token_app.command("create")
def token_create(
    role: Annotated[
        TokenRole,
        typer.Option(
            help="vendor: uploads batches; analyst: queries (--branches or --head-office); "
            "campaign_tool: scores and lists; marketer: campaigns; admin: tokens and audit."
        ),
    ],
    branches: Annotated[
        str | None, typer.Option(help="Analyst's branches, comma-separated.")
    ] = None,
    head_office: Annotated[
        bool, typer.Option("--head-office", help="An analyst of every branch (no --branches).")
    ] = False,
    vendor: Annotated[str | None, typer.Option(help="Vendor id (vendor tokens).")] = None,
    label: Annotated[str | None, typer.Option(help="Who holds it, for the audit log.")] = None,
    run: RunOption = DEFAULT_RUN,
) -> None:
    """Create an API token and print it once; only its SHA-256 is kept (stop the service first)."""
    with bank_of(run) as bank:
        issued = create_token(
            bank.store,
            role=role.value,
            branches=branches.split(",") if branches is not None else None,
            head_office=head_office,
            vendor_id=vendor,
            label=label,
            now=now(),
            known_vendors=bank.keyring.trusted_vendors(),
        )
    scope = ", ".join(sorted(issued.principal.branches or ())) or "all branches"
    holder = scope if role == "analyst" else vendor or "-"
    err_console.print(
        f"token {issued.principal.token_id} ({role}; {holder}) - shown once, store it in the "
        "caller's secret store:"
    )
    print(issued.secret)  # stdout alone, so scripts can capture it


@token_app.command("revoke")
def token_revoke(
    token_id: Annotated[str, typer.Argument(help="The token's id (`fusion token list`).")],
    run: RunOption = DEFAULT_RUN,
) -> None:
    """Revoke a token by its id while the service is stopped (running: DELETE /v1/tokens/ID).

    Exit status: 0 revoked (or revoked before); 2 no token has that id, or the store is held.
    """
    from fusion.tokens import list_tokens

    try:
        with bank_of(run) as bank:
            revoked = revoke_token(bank.store, token_id, now=now())
            known = {t.token_id: t for t in list_tokens(bank.store)} if not revoked else {}
    except StoreLockedError as error:
        # Double quotes, so the shell expands $ADMIN_TOKEN in the pasted command.
        raise ConfigError(
            f"{error}. While `fusion serve` holds the store, revoke through the service, "
            f"which drops the token at once: DELETE /v1/tokens/{token_id} with an admin "
            f'token, e.g. curl -X DELETE -H "Authorization: Bearer $ADMIN_TOKEN" '
            f"http://127.0.0.1:8000/v1/tokens/{token_id}",
            setting="run",
        ) from error
    if revoked:
        console.print(f"token {token_id}: revoked")
        return
    if token_id not in known:
        raise ConfigError(
            f"no token has id {token_id!r}, so nothing was revoked; `fusion token list "
            "--run RUN` shows the ids of this run's tokens",
            setting="token_id",
        )
    console.print(f"token {token_id}: already revoked at {known[token_id].revoked_at}")


@token_app.command("list")
def token_list(run: RunOption = DEFAULT_RUN) -> None:
    """List tokens: id, role, scope, label, created, revoked (never a secret)."""
    from fusion.tokens import list_tokens

    with bank_of(run, read_only=True) as bank:
        tokens = list_tokens(bank.store)
    table = Table("token", "role", "scope", "label", "created", "revoked")
    for t in tokens:
        revoked = "" if t.revoked_at is None else str(t.revoked_at)
        table.add_row(t.token_id, t.role, t.scope, t.label, str(t.created_at), revoked)
    console.print(table)


def audit(
    run: RunOption = DEFAULT_RUN,
    last: Annotated[
        int | None, typer.Option(min=0, help="Show this many of the newest records (default 20).")
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(help="Also write every record to this Parquet file (mode 0600)."),
    ] = None,
    trail: Annotated[
        Path | None,
        typer.Option(help="Read this folder of segments (an archive) instead of the run's trail."),
    ] = None,
    archive_to: Annotated[
        Path | None,
        typer.Option(
            help="Move the finished segments of days before --before to this folder (the "
            "bank's archive storage) instead of reading; each is checked and copied first."
        ),
    ] = None,
    before: Annotated[
        datetime | None,
        typer.Option(
            formats=["%Y-%m-%d"],
            help="With --archive-to: the first UTC day kept in the trail (default: today).",
        ),
    ] = None,
) -> None:
    """Read the service's request trail (who, role, route, rows, status, time), or move its
    past days to archive storage (--archive-to); works while the service runs. Exit status 2
    when a segment was altered or the keyring is not its key."""
    from fusion.runfolder import RunFolder
    from matcher.keyring import Keyring

    _check_audit_options(
        archive_to, {"--before": before, "--trail": trail, "--last": last, "--out": out}
    )
    folder = RunFolder(run)
    key = Keyring.open(folder.bank_keys).audit_trail_key()
    if archive_to is not None:
        day = now().date() if before is None else before.date()
        _archive_trail(folder.audit_trail, archive_to, key, day)
    else:
        _read_trail(trail or folder.audit_trail, key, 20 if last is None else last, out)


def _check_audit_options(archive_to: Path | None, given: dict[str, object]) -> None:
    """Refuse options of the other mode: reading takes --trail, --last and --out; archiving
    (--archive-to) takes --before."""
    mode_options = ("--before",) if archive_to is None else ("--trail", "--last", "--out")
    stray = [name for name in mode_options if given[name] is not None]
    if not stray:
        return
    if archive_to is None:
        raise ConfigError(
            "--before only goes with --archive-to (the first day kept in the trail); to read "
            "the trail, leave --before out",
            setting="before",
        )
    named = " and ".join(stray) + (" go" if len(stray) > 1 else " goes")
    raise ConfigError(
        f"{named} only with reading the trail, not with --archive-to, which moves segments and "
        "reads nothing; run `fusion audit --trail ARCHIVE` afterwards to read what was archived",
        setting=stray[0].removeprefix("--"),
    )


def _archive_trail(folder: Path, archive: Path, key: bytes, before: date) -> None:
    from fusion.audit_trail import archive_audit_trail

    done = archive_audit_trail(folder, archive, key, before=before)
    console.print(
        f"moved {len(done.moved)} segment(s) of days before {before} to {archive}"
        + (f": {', '.join(done.moved)}" if done.moved else "")
    )
    if done.unsealed:
        console.print(
            f"moved as they were, not sealed (left by a killed service, or cut short): "
            f"{', '.join(done.unsealed)}"
        )
    if done.writing:
        console.print(
            f"left in place, a running service still writes them: {', '.join(done.writing)}"
        )


def _read_trail(folder: Path, key: bytes, last: int, out: Path | None) -> None:
    from fusion.audit_trail import read_audit_trail
    from matcher.atomic import atomic_path

    read = read_audit_trail(folder, key)
    records = read.records
    console.print(
        f"{records.height:,} audit records in {read.segments} segment(s) of {folder}"
        + (
            f"; last frame cut short (a killed service, or a frame being written now) in "
            f"{', '.join(read.torn)}"
            if read.torn
            else ""
        )
    )
    if read.writing:
        console.print(f"being written by a running service: {', '.join(read.writing)}")
    if read.unsealed:
        console.print(
            f"not sealed, and no writer (left by a killed service, or cut short): "
            f"{', '.join(read.unsealed)}"
        )
    table = Table("at (UTC)", "actor", "role", "action", "detail", "rows", "status")
    for row in records.tail(last).iter_rows():
        table.add_row(*("" if value is None else str(value) for value in row))
    if last and records.height:
        console.print(table)
    if out is not None:
        with atomic_path(out, mode=0o600) as temporary:
            records.write_parquet(temporary)
        console.print(f"wrote {records.height:,} records to {out}")
