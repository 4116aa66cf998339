"""The vendor's tool: its keyring, packing and sealing batches, OPRF answers, pushing batches."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from contracts.errors import ConfigError, FusionError
from contracts.input_files import check_input_file
from contracts.schemas import MatchMode
from fusion.runfolder import RunFolder
from labs.cli.options import (
    DEFAULT_RUN,
    ModeOption,
    RunOption,
    VendorKey,
    now,
    parse_identifiers,
)
from labs.cli.terminal import EXIT_FINDINGS, console, err_console
from matcher.envelope import MAGIC
from matcher.kem import Suite
from matcher.keyring import Keyring
from matcher.oprf_exchange import REQUEST, ElementFile, answer_request, check_output
from matcher.pack import PackOptions, pack_users

if TYPE_CHECKING:
    import httpx

__all__ = [
    "vendor_app",
    "vendor_evaluate",
    "vendor_keygen",
    "vendor_pack",
    "vendor_push",
    "vendor_rotate",
]

_SEALED_BY = "`fusion vendor pack` writes one"

vendor_app = typer.Typer(help="The vendor's tool: keys, packing and sealing batches.")

# Verdicts after which the vendor's data did not arrive: the push exits non-zero.
_PUSH_FAILED = {
    "quarantined": "it broke the data contract; the status answer holds the report (rule, row "
    "count, example rows). Fix the rows and send them under a new batch_id",
    "refused": "the bank could not verify or open it; check that it was sealed to the bank's "
    "current public key and signed with the key the bank holds for you, then pack it again",
    "failed": "the bank could not process it; tell the bank's operators, then push it again "
    "(a batch loads once)",
}


@vendor_app.command("keygen")
def vendor_keygen(
    vendor_id: Annotated[
        str, typer.Option(help="The vendor's id as the bank knows it.")
    ] = "vendor-a",
    run: RunOption = DEFAULT_RUN,
) -> None:
    """Create the vendor's keyring with its Ed25519 signing key."""
    folder = RunFolder(run).ensure()
    Keyring.init(folder.vendor_keys, role="vendor", vendor_id=vendor_id)
    console.print(f"vendor keyring for {vendor_id} created in {folder.vendor_keys}")


@vendor_app.command("pack")
def vendor_pack(
    users: Annotated[Path, typer.Option(help="Users Parquet: phone + app/tag lists.")],
    out: Annotated[
        Path | None,
        typer.Option(
            help="Sealed batch file to write; never the --users file, and an existing file only "
            "with --force. Default: a new file per batch, <run>/vendor/outbox/<batch id>.sealed."
        ),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Replace --out when it exists (an unsent batch?).")
    ] = False,
    epoch: Annotated[
        str | None, typer.Option(help="Salt epoch (salted) or OPRF epoch (oprf); default current.")
    ] = None,
    mode: ModeOption = MatchMode.SALTED,
    suite: Annotated[
        Suite | None,
        typer.Option(
            help="Seal to the bank's newest key of this HPKE suite (MLKEM768-X25519: the "
            "post-quantum hybrid). Default: the bank's current key."
        ),
    ] = None,
    base_oprf: Annotated[
        bool,
        typer.Option(
            "--base-oprf",
            help="With --mode oprf: RFC 9497 base mode, without the public key and proofs that "
            "let the bank verify every evaluation (the default is verifiable).",
        ),
    ] = False,
    identifiers: Annotated[
        str | None,
        typer.Option(
            help="Identifier types to key each user by, comma-separated: mobile, id_number, "
            "device_id. Default: mobile and every other one the users file has a column for.",
        ),
    ] = None,
    run: RunOption = DEFAULT_RUN,
) -> None:
    """Normalise identifiers, key or seal each user's row, drop them and seal the batch."""
    folder = RunFolder(run)
    keyring = Keyring.open(folder.vendor_keys)  # first: a mistyped --run creates nothing
    folder.outbox.mkdir(parents=True, exist_ok=True)
    # The batch id names the default file: a second batch never replaces an unsent first one.
    batch_id = str(uuid.uuid4())
    target = out or folder.outbox / f"{batch_id}.sealed"
    with console.status(f"packing ({mode}) and sealing"):
        result = pack_users(
            users,
            target,
            keyring=keyring,
            now=now(),
            epoch_id=epoch,
            mode=mode,
            options=PackOptions(
                batch_id=batch_id,
                suite=suite,
                verifiable=not base_oprf,
                identifiers=parse_identifiers(identifiers),
            ),
            overwrite=force,
        )
    rejected = ", ".join(f"{k} {v:,}" for k, v in result.rejected.items()) or "none"
    console.print(
        f"batch {result.batch_id} ({result.mode}): {result.rows:,} rows sealed (epoch "
        f"{result.salt_epoch}); rejected phones: {rejected}; duplicates dropped: "
        f"{result.duplicates_dropped:,} -> {target}"
    )


@vendor_app.command("rotate")
def vendor_rotate(
    what: Annotated[
        VendorKey,
        typer.Option(
            help="signing: the Ed25519 key batches are signed with (pair again: `fusion keys "
            "pair-vendor`); oprf: the OPRF key epoch."
        ),
    ],
    run: RunOption = DEFAULT_RUN,
) -> None:
    """Start a new signing key or OPRF epoch; old ones stay readable (batches sealed before)."""
    new_id = Keyring.open(RunFolder(run).vendor_keys).rotate(what.value)
    console.print(f"rotated {what.value}: new id {new_id}")


@vendor_app.command("evaluate")
def vendor_evaluate(
    request: Annotated[Path, typer.Option(help="The bank's OPRF request file.")],
    out: Annotated[
        Path | None,
        typer.Option(
            help="Answer file to write, checked before anything is evaluated. Default: "
            "<run>/vendor/oprf/answer-<request id>.oprf."
        ),
    ] = None,
    declared_customers: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="The bank's customer count as agreed out of band, times the identifier types it "
            "matches on (one evaluation per customer and identifier); required for an epoch's "
            "first answer, where it fixes the cap (x1.1 + 1000 evaluations per epoch).",
        ),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Replace an answer file that exists already.")
    ] = False,
    run: RunOption = DEFAULT_RUN,
) -> None:
    """Answer a bank's blinded OPRF request under the epoch's evaluation budget.

    Everything is checked before the budget is spent: the request, the keyring and the answer
    file (writable; an existing one is kept unless --force).
    """
    folder = RunFolder(run)
    check_input_file(request, what="OPRF request", hint="`fusion match --mode oprf` writes one")
    keyring = Keyring.open(folder.vendor_keys)
    received = ElementFile.read(request, kind=REQUEST)
    target = out or folder.vendor_oprf / f"answer-{received.request_id}.oprf"
    if target.is_file() and not force:
        raise ConfigError(
            f"{target} exists already (an answer written before, perhaps sent); move it away, "
            "choose another --out, or pass --force to replace it",
            setting="out",
        )
    check_output(target)  # before the budget pays for an answer that could not be written
    with console.status(f"evaluating {len(received):,} blinded elements"):
        answer, budget = answer_request(keyring, received, declared_customers=declared_customers)
    answer.write(target)
    console.print(
        f"answered request {received.request_id} (epoch {received.epoch_id}): "
        f"{len(answer):,} evaluations; epoch budget {budget.used:,} of {budget.limit:,} used "
        f"-> {target}"
    )


@vendor_app.command("push")
def vendor_push(
    sealed: Annotated[Path, typer.Argument(help="A sealed batch file (fusion vendor pack).")],
    url: Annotated[str, typer.Option(help="The bank's service URL.")] = "http://127.0.0.1:8000",
    token_env: Annotated[
        str, typer.Option(help="Environment variable holding the vendor token.")
    ] = "BANKFUSION_TOKEN",  # noqa: S107 - the variable's name, not a secret
    wait: Annotated[float, typer.Option(help="Seconds to wait for the ingest verdict.")] = 60.0,
) -> None:
    """Upload a sealed batch to the bank's API (POST /v1/batches) and report its status."""
    import httpx

    check_input_file(sealed, what="sealed batch", magic=MAGIC, hint=_SEALED_BY)
    token = os.environ.get(token_env)
    if not token:
        raise ConfigError(f"set {token_env} to the vendor's API token", setting="token")
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/octet-stream"}
    try:
        with httpx.Client(base_url=url, headers=headers, timeout=600) as client:
            batch_id, status_url = _upload(client, sealed, token_env)
            state = _await_verdict(client, status_url, token_env, batch_id, wait=wait)
    except httpx.HTTPError as error:
        raise FusionError(f"cannot reach {url}: {error}; is `fusion serve` running?") from error
    console.print(f"batch {batch_id}: [bold]{state}[/]")
    if state in _PUSH_FAILED:  # delivered, and the bank said no: a finding, exit 1
        err_console.print(
            f"[yellow]finding:[/] batch {batch_id} was {state}: {_PUSH_FAILED[state]} "
            f"(GET {url.rstrip('/')}{status_url})",
            soft_wrap=True,
        )
        raise typer.Exit(code=EXIT_FINDINGS)


def _chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            yield block


def _upload(client: httpx.Client, sealed: Path, token_env: str) -> tuple[str | None, str]:
    """Return the batch id and status URL the bank gave the uploaded file."""
    answer = client.post("/v1/batches", content=_chunks(sealed))
    if answer.status_code == 401:
        raise _token_refused(token_env)
    if answer.status_code != 202:
        raise FusionError(f"upload refused: HTTP {answer.status_code} {answer.text[:300]}")
    accepted = answer.json()
    batch_id, status_url = accepted.get("batch_id"), accepted.get("status_url")
    console.print(f"uploaded: upload {accepted['upload_id']}, batch {batch_id}")
    if batch_id is None:
        raise FusionError(
            f"the bank could not read the manifest of {sealed}, so its ingest will refuse it; "
            "seal the batch again with `fusion vendor pack` and push the new file"
        )
    return batch_id, str(status_url)


def _await_verdict(
    client: httpx.Client, status_url: str, token_env: str, batch_id: str | None, *, wait: float
) -> str:
    """Return the batch's status once it is no longer "received" (within `wait` seconds)."""
    deadline = time.monotonic() + wait
    while (state := _batch_state(client.get(status_url), token_env, batch_id)) == "received":
        left = deadline - time.monotonic()
        if left <= 0:
            url = str(client.base_url).rstrip("/")
            raise FusionError(
                f"no verdict on batch {batch_id} within {wait:g} s; it is queued at the bank: "
                f"ask again with GET {url}{status_url}, or push with a longer --wait (a file "
                "sent twice loads once)"
            )
        time.sleep(min(0.5, left))
    return state


def _token_refused(token_env: str) -> ConfigError:
    return ConfigError(
        f"the bank did not accept the token in {token_env} (HTTP 401): it is mistyped or "
        "revoked; ask the bank for a vendor token",
        setting="token",
    )


def _batch_state(answer: httpx.Response, token_env: str, batch_id: str | None) -> str:
    """Return the status GET /v1/batches/{id} gave, or raise the push's error for what it says."""
    if answer.status_code == 401:
        raise _token_refused(token_env)
    if answer.status_code == 404:
        raise FusionError(
            f"the bank knows no batch {batch_id} of this vendor although it accepted the "
            "upload; ask the bank's operators what became of it before pushing again"
        )
    try:
        state = answer.json()["status"] if answer.status_code == 200 else None
    except (ValueError, KeyError, TypeError):
        state = None
    if not isinstance(state, str):
        raise FusionError(
            f"the bank's status answer for batch {batch_id} was HTTP {answer.status_code} "
            f"{answer.text[:300]}; ask again later"
        )
    return state
