"""The bank's commands: its keyring, ingest, match, features, the match report, publish."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import polars as pl
import typer
from rich.text import Text

from contracts.errors import ConfigError
from contracts.input_files import check_input_file, read_parquet_input
from contracts.schemas import MatchMode
from contracts.taxonomy import CURRENT_VERSION, load_taxonomy
from fusion.pipeline.bank import Bank, deliver_to_inbox, ingest_batches, publish_snapshots
from fusion.runfolder import RunFolder
from labs.cli.options import (
    DEFAULT_RUN,
    BankKey,
    ClusterOption,
    IdentifiersOption,
    MinCellOption,
    ModeOption,
    RunOption,
    bank_of,
    cluster_engine,
    engine_for,
    now,
    parse_date,
    parse_identifiers,
)
from labs.cli.render import print_ingest, print_match
from labs.cli.terminal import console, err_console
from matcher.envelope import MAGIC
from matcher.kem import Suite
from matcher.keyring import Keyring, pair_locally
from matcher.oprf_exchange import ANSWER, ElementFile, check_output

if TYPE_CHECKING:
    from fusion.jobs import Engine
    from fusion.oprf_psi import OprfRequestInfo
    from fusion.pipeline.matching import MatchOutcome

__all__ = [
    "features_command",
    "ingest",
    "keys_app",
    "keys_init",
    "keys_pair_vendor",
    "keys_policy",
    "keys_rotate",
    "match_command",
    "publish",
    "report_command",
    "taxonomy_app",
    "taxonomy_load",
]

taxonomy_app = typer.Typer(
    help="The app and tag taxonomy the vendor's batches use (each batch loads its own)."
)


@taxonomy_app.command("load")
def taxonomy_load(
    version: Annotated[
        str, typer.Option(help="Taxonomy version, as a batch's manifest names it.")
    ] = CURRENT_VERSION,
    run: RunOption = DEFAULT_RUN,
) -> None:
    """Load a taxonomy version into the store (for a store that holds batches without one)."""
    taxonomy = load_taxonomy(version)
    with bank_of(run) as bank:
        added = bank.store.load_taxonomy(taxonomy)
    state = "loaded" if added else "already in the store"
    console.print(
        f"taxonomy {version}: {state} ({taxonomy.categories.height} categories, "
        f"{taxonomy.apps.height:,} apps, {taxonomy.tags.height:,} tags)"
    )


keys_app = typer.Typer(
    help="The bank's keyring: HPKE keys, trusted vendors, salt epochs, store key."
)


@keys_app.command("init")
def keys_init(run: RunOption = DEFAULT_RUN) -> None:
    """Create the bank's keyring (HPKE key pair, first salt epoch, store key)."""
    folder = RunFolder(run).ensure()
    keyring = Keyring.init(folder.bank_keys, role="bank")
    console.print(
        f"bank keyring created in {folder.bank_keys} (salt epoch {keyring.current_salt().epoch_id})"
    )


@keys_app.command("rotate")
def keys_rotate(
    what: Annotated[
        BankKey,
        typer.Option(
            help="hpke: the key vendors seal batches to; salt: the keyed-hash salt epoch (pair "
            "the vendor again after it: `fusion keys pair-vendor`)."
        ),
    ],
    suite: Annotated[
        Suite,
        typer.Option(
            help="With --what hpke: the new key's HPKE suite; MLKEM768-X25519 is the "
            "post-quantum hybrid (pair the vendor again so it seals to it)."
        ),
    ] = Suite.X25519,
    run: RunOption = DEFAULT_RUN,
) -> None:
    """Rotate the bank's HPKE key or salt epoch; old keys stay readable."""
    if what is BankKey.SALT and suite is not Suite.X25519:
        raise ConfigError("--suite belongs to --what hpke; a salt has no suite", setting="suite")
    new_id = Keyring.open(RunFolder(run).bank_keys).rotate(what.value, suite=suite)
    shown = f" ({suite.value})" if what is BankKey.HPKE else ""
    console.print(f"rotated {what.value}{shown}: new id {new_id}")


@keys_app.command("policy")
def keys_policy(
    accept: Annotated[
        list[Suite] | None,
        typer.Option(
            help="Accept batches sealed with these suites only (repeat --accept); without it, "
            "print the policy."
        ),
    ] = None,
    run: RunOption = DEFAULT_RUN,
) -> None:
    """Show or set the HPKE suites the bank accepts; a batch of another suite is refused."""
    keyring = Keyring.open(RunFolder(run).bank_keys)
    suites = keyring.set_accepted_suites(accept) if accept else keyring.accepted_suites()
    names = ", ".join(sorted(s.value for s in suites))
    console.print(f"accepted suites: {names}" + (" (changed)" if accept else ""))


@keys_app.command("pair-vendor")
def keys_pair_vendor(run: RunOption = DEFAULT_RUN) -> None:
    """Exchange public keys and the salt epoch between the two keyrings of a local run.

    In production the same three things travel out of band: the vendor's public signing key to
    the bank, the bank's HPKE public key to the vendor, and the salt epoch by a key ceremony.
    """
    folder = RunFolder(run)
    pair_locally(Keyring.open(folder.bank_keys), Keyring.open(folder.vendor_keys))
    console.print("vendor trusted by the bank; bank key and salt epoch imported by the vendor")


def ingest(
    files: Annotated[
        list[Path] | None, typer.Argument(help="Sealed files (default: the inbox).")
    ] = None,
    run: RunOption = DEFAULT_RUN,
) -> None:
    """Verify, open, validate and load sealed batches into the encrypted store.

    Exit status: 0 every file loaded (or already loaded); 1 a batch was refused or quarantined
    (a finding: the ledger ids are printed, the causes are in the bank's log); 2 a file or
    the run folder could not be used.
    """
    for file in files or ():
        check_input_file(
            file, what="sealed batch", magic=MAGIC, hint="`fusion vendor pack` writes one"
        )
    with bank_of(run) as bank:  # first: a mistyped --run creates nothing
        deliver_to_inbox(files or (), bank.folder.inbox.ensure())
        outcomes = ingest_batches(bank, clock=now)
    findings = print_ingest(outcomes)
    if findings:
        err_console.print(
            Text.assemble(
                ("finding:", "yellow"),
                f" {len(findings)} of {len(outcomes)} sealed files not loaded (refused or "
                f"quarantined): {', '.join(findings)}; the causes are in the bank's log above "
                "and in the ledger (table batches, read it with `fusion sql`); ask the vendor "
                "for a corrected batch",
            ),
            soft_wrap=True,
        )
        raise typer.Exit(code=1)


def _check_match_options(mode: MatchMode, *, oprf_only: bool) -> None:
    """Refuse options that belong to the other mode."""
    if mode == MatchMode.SALTED and oprf_only:
        raise ConfigError(
            "--answer, --request-out and --local-vendor belong to --mode oprf", setting="mode"
        )


def match_command(  # noqa: PLR0913 - a command's parameters are its options
    extract: Annotated[Path, typer.Option(help="The bank's customer extract (Parquet).")],
    snapshot: Annotated[str, typer.Option(help="Snapshot date of the extract, YYYY-MM-DD.")],
    epoch: Annotated[
        str | None,
        typer.Option(
            help="Salt epoch (salted; default current) or the vendor's OPRF epoch (oprf; default "
            "the newest loaded OPRF batch's)."
        ),
    ] = None,
    mode: ModeOption = MatchMode.SALTED,
    answer: Annotated[
        Path | None,
        typer.Option(help="oprf: the vendor's answer file; finishes the match it answers."),
    ] = None,
    request_out: Annotated[
        Path | None, typer.Option(help="oprf: where to write the request file for the vendor.")
    ] = None,
    local_vendor: Annotated[
        bool,
        typer.Option(
            help="oprf, demo and tests only: let this run's vendor keyring answer at once."
        ),
    ] = False,
    replace: Annotated[
        bool,
        typer.Option(
            "--replace",
            help="Replace the customers and bank features a snapshot holds from another extract "
            "(refused without it).",
        ),
    ] = False,
    identifiers: IdentifiersOption = None,
    cluster: ClusterOption = None,
    run: RunOption = DEFAULT_RUN,
) -> None:
    """Match the customer extract with the vendor's data (identifiers are never stored).

    salted: key the extract and intersect with the vendor's keys. oprf: without --answer, write
    the blinded request for the vendor (`fusion vendor evaluate`); with --answer, open the matched
    customers' rows and match; --local-vendor does both steps with this run's vendor keyring.

    Exit status: 0 matched; 1 matched nobody although a vendor batch was there (a finding,
    printed with what to check); 2 refused with nothing stored: no loaded vendor batch under the
    salt epoch created on or before the snapshot date (a rotated salt, an early date), or the
    snapshot already holds another extract (give it its own date, or --replace).
    """
    oprf_only = bool(answer or request_out or local_vendor)
    _check_match_options(mode, oprf_only=oprf_only)
    snapshot_date = parse_date(snapshot)
    if request_out is not None:
        check_output(request_out, what="request")
    frame = read_parquet_input(
        extract,
        what="customer extract",
        columns=("customer_id", "phone"),
        hint="one row per customer with customer_id, phone and the bank's features",
    )
    with bank_of(run) as bank:
        if mode == MatchMode.SALTED:
            salted = _SaltedAsk(snapshot_date, epoch, replace, parse_identifiers(identifiers))
            _match_salted(bank, frame, salted, cluster)
            return
        if answer is not None:
            _answer_oprf(bank, frame, answer, replace=replace, cluster=cluster)
            return
        ask = _OprfAsk(
            snapshot_date, epoch, local_vendor, request_out, replace, parse_identifiers(identifiers)
        )
        with engine_for(cluster) as engine:
            sent = _request_oprf(bank, frame, ask, engine)
    if sent is not None:
        info, target = sent
        console.print(
            f"OPRF request {info.request_id} (epoch {info.epoch_id}): {info.blinded:,} of "
            f"{info.customers:,} customers blinded -> {target}\nsend it to the vendor "
            "(`fusion vendor evaluate`), then run this command again with --answer ANSWER_FILE"
        )


def _answer_oprf(
    bank: Bank, frame: pl.DataFrame, answer: Path, *, replace: bool, cluster: str | None
) -> None:
    """Open the matched customers' rows of the vendor's `answer` file and match them."""
    from fusion.pipeline.matching import finish_oprf

    check_input_file(answer, what="OPRF answer", hint="`fusion vendor evaluate` writes one")
    reply = ElementFile.read(answer, kind=ANSWER)
    with engine_for(cluster) as engine, _spinner(engine, "unblinding and matching"):
        done = finish_oprf(bank, frame, reply, now=now(), engine=engine, replace=replace)
    _print_match(done)


@dataclass(frozen=True)
class _SaltedAsk:
    """What `fusion match --mode salted` was asked for."""

    snapshot_date: date
    epoch: str | None
    replace: bool
    identifiers: tuple[str, ...] | None = None


def _match_salted(bank: Bank, frame: pl.DataFrame, ask: _SaltedAsk, cluster: str | None) -> None:
    """Key the extract (by bucket on `cluster` when given), match and print the counts."""
    from fusion.pipeline.matching import match_salted

    with (
        engine_for(cluster) as engine,
        _spinner(engine, "keying the extract and matching"),
    ):
        done = match_salted(
            bank,
            frame,
            snapshot_date=ask.snapshot_date,
            now=now(),
            epoch=ask.epoch,
            engine=engine,
            replace=ask.replace,
            identifiers=ask.identifiers,
        )
    _print_match(done)


def _print_match(done: MatchOutcome) -> None:
    """Print the match's counts; when nobody matched, say what to check and exit 1."""
    print_match(done)
    if done.run.matched or not done.run.customers:
        return
    # The match refuses to run without a vendor batch of the epoch, so one was there: the
    # extract and the batch share no phone.
    err_console.print(
        Text.assemble(
            ("finding:", "yellow"),
            f" nobody matched: 0 of {done.run.customers:,} customers of snapshot "
            f"{done.run.snapshot_date}, although a vendor batch of epoch {done.run.salt_epoch} "
            "was loaded; check that the extract is the bank's customers with their mobile "
            "phones, and that the vendor packed its batch under this epoch",
        ),
        soft_wrap=True,
    )
    raise typer.Exit(code=1)


def _spinner(engine: Engine | None, text: str) -> AbstractContextManager[object]:
    """Return a spinner with `text` in this process; none beside a cluster job's own bars."""
    return console.status(text) if engine is None else nullcontext()


@dataclass(frozen=True)
class _OprfAsk:
    """What `fusion match --mode oprf` without --answer was asked for."""

    snapshot_date: date
    epoch: str | None
    local_vendor: bool
    request_out: Path | None
    replace: bool = False
    identifiers: tuple[str, ...] | None = None


def _request_oprf(
    bank: Bank, frame: pl.DataFrame, ask: _OprfAsk, engine: Engine | None
) -> tuple[OprfRequestInfo, Path] | None:
    """Blind the extract; write the request (returned with its path) or let the run's vendor
    answer at once and print the match (None)."""
    from fusion.pipeline.matching import answer_as_local_vendor, finish_oprf, request_oprf

    with _spinner(engine, f"blinding {frame.height:,} customers"):
        info, request = request_oprf(
            bank,
            frame,
            snapshot_date=ask.snapshot_date,
            now=now(),
            epoch=ask.epoch,
            engine=engine,
            replace=ask.replace,
            identifiers=ask.identifiers,
        )
    if ask.local_vendor:
        with console.status(f"vendor: evaluating {len(request):,} blinded elements"):
            reply = answer_as_local_vendor(bank.folder, request, customers=frame.height)
        with _spinner(engine, "bank: unblinding, opening the matched rows, matching"):
            done = finish_oprf(bank, frame, reply, now=now(), engine=engine, replace=ask.replace)
        _print_match(done)
        return None
    target = ask.request_out or bank.folder.bank_oprf / f"request-{info.request_id}.oprf"
    request.write(target)
    return info, target


def features_command(
    snapshot: Annotated[str, typer.Option(help="Snapshot date, YYYY-MM-DD.")],
    epoch: Annotated[
        str | None, typer.Option(help="Salt epoch id of the match (default: current).")
    ] = None,
    replace: Annotated[
        bool,
        typer.Option(
            "--replace",
            help="Replace a table with vendor data by one whose match found nobody (refused "
            "without it).",
        ),
    ] = False,
    own_columns: Annotated[
        bool,
        typer.Option(
            "--own-columns",
            help="Build the snapshot's own columns, category codes and top apps (to train new "
            "models on it) instead of those the CURRENT models were trained on.",
        ),
    ] = False,
    cluster: ClusterOption = None,
    run: RunOption = DEFAULT_RUN,
) -> None:
    """Build the point-in-time fused feature table of a matched snapshot and write it.

    Once models are trained, a later snapshot's table takes the columns, category codes and
    top apps of the table the CURRENT models were trained on (as `fusion cycle` builds it), so
    `fusion score` can score it; --own-columns builds the snapshot's own instead.

    With --cluster the build runs by customer bucket on the cluster (each task opens the store
    read-only, so no writer may hold it meanwhile); the buckets stay beside the table, under
    buckets/, for bucketed scoring. Refused (exit 2, the table on disk kept) when the snapshot
    was not matched under the salt epoch: after `fusion keys rotate --what salt`, run `fusion
    match` for the snapshot first, or name the epoch it was matched under with --epoch."""
    from fusion.pipeline.feature_tables import (
        build_snapshot_features,
        build_snapshot_features_by_bucket,
        scoring_manifest,
    )

    snapshot_date = parse_date(snapshot)
    folder = RunFolder(run)
    like = None if own_columns else scoring_manifest(folder, snapshot_date)
    if cluster:
        keyring = Keyring.open(folder.bank_keys)
        with cluster_engine(cluster) as engine:
            built = build_snapshot_features_by_bucket(
                engine, folder, keyring, snapshot_date=snapshot_date, epoch=epoch,
                replace=replace, like=like,
            )  # fmt: skip
        if built.buckets is not None:
            console.print(
                f"{built.buckets.rows:,} customers built in {len(built.buckets.folders)} "
                f"buckets -> {built.buckets_dir}"
            )
    else:
        with console.status("building features"), bank_of(run) as bank:
            built = build_snapshot_features(
                bank, snapshot_date=snapshot_date, epoch=epoch, replace=replace, like=like
            )
    aligned = (
        ""
        if like is None
        else f"; columns, codes and top apps of the models' training table ({like.snapshot_date})"
    )
    console.print(
        f"{built.features.table.height:,} customers, {built.features.manifest.matched:,} with "
        f"vendor data; written to {built.path}{aligned}",
        soft_wrap=True,
    )


def report_command(
    snapshot: Annotated[str, typer.Option(help="Snapshot date, YYYY-MM-DD.")],
    epoch: Annotated[str | None, typer.Option(help="Salt epoch id (default: current).")] = None,
    k: MinCellOption = 10,
    run: RunOption = DEFAULT_RUN,
) -> None:
    """Write the match and app-penetration report (HTML with PNG plots, Parquet tables)."""
    from fusion.pipeline.matching import match_report

    snapshot_date = parse_date(snapshot)
    with bank_of(run, read_only=True) as bank:
        epoch_id = epoch or bank.keyring.current_salt().epoch_id
        page = match_report(bank, snapshot_date=snapshot_date, salt_epoch=epoch_id, k=k)
    console.print(f"report written: {page}")


def publish(
    run: RunOption = DEFAULT_RUN,
    rotate_keys: Annotated[
        bool,
        typer.Option(
            "--rotate-keys",
            help="Write under a new key version: keys handed out before no longer open the new "
            "files (copies already taken stay readable). Grant the analysts who keep access again.",
        ),
    ] = False,
) -> None:
    """Write the encrypted read-only snapshots: one for head office, one per branch."""
    with bank_of(run) as bank:
        published = publish_snapshots(bank, rotate_keys=rotate_keys, now=now())
    rotated = " (keys rotated)" if published.rotated else ""
    console.print(
        f"published {len(published.paths)} snapshots to {RunFolder(run).snapshots} under key "
        f"version {published.key_version}{rotated}"
    )
