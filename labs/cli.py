"""The `fusion` command: the one entry point for the demo, the vendor tool and the bank's jobs.

Only this module (and `api/`) reads the environment and prints; everything below it takes typed
arguments. Errors of the platform print their message (which says what to do) and exit 2.
"""

from __future__ import annotations

import json
import logging
import sys
import time as time_module
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import numpy as np
import polars as pl
import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from contracts.errors import ConfigError, FusionError
from contracts.taxonomy import load_taxonomy
from fusion.runfolder import RunFolder
from labs.world import WorldFiles
from matcher.keyring import init_local_pair, pair_locally

if TYPE_CHECKING:
    import httpx

    from fusion.features import FeatureSet
    from fusion.lists import AcquisitionScorer, TargetLists
    from fusion.models.classifier import ScoreModel
    from fusion.oprf_psi import OprfMatchRun
    from fusion.registry import Registry
    from fusion.scoring import ScoringResult
    from fusion.store import Store
    from fusion.training import TrainingRun
    from matcher.keyed_hash import SaltEpoch
    from matcher.keyring import Keyring
    from matcher.oprf_exchange import ElementFile
    from matcher.psi import CustomerKeys

__all__ = ["app"]

app = typer.Typer(
    name="fusion",
    help="Privacy-preserving fusion of a data vendor's app/tag data with a bank's customers.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)


@app.callback()
def _configure(
    log_level: Annotated[
        str, typer.Option(help="Log level of the bank's log on stderr (DEBUG, INFO, WARNING).")
    ] = "WARNING",
) -> None:
    """Privacy-preserving fusion of a data vendor's app/tag data with a bank's customers."""
    from rich.logging import RichHandler

    level = logging.getLevelName(log_level.upper())
    if not isinstance(level, int):
        raise typer.BadParameter(f"log level must be DEBUG, INFO or WARNING, got {log_level!r}")
    # The bank's own log: refusal causes, ledger verdicts and counts (never a phone or a key).
    logging.basicConfig(
        level=level,
        format="%(name)s: %(message)s",
        handlers=[RichHandler(console=err_console, show_path=False)],
        force=True,
    )
    logging.getLogger("great_expectations").setLevel(logging.WARNING)


@contextmanager
def _stage_progress(title: str) -> Iterator[Callable[[str, float], None]]:
    """Yield a `progress(stage, fraction)` callback drawing one rich bar per stage."""
    with Progress(
        TextColumn(f"[bold]{title}[/] {{task.description}}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as progress:
        tasks: dict[str, TaskID] = {}

        def update(stage: str, fraction: float) -> None:
            if stage not in tasks:
                tasks[stage] = progress.add_task(stage, total=1.0)
            progress.update(tasks[stage], completed=min(max(fraction, 0.0), 1.0))

        yield update


def _fail(error: FusionError) -> typer.Exit:
    err_console.print(f"[red]error:[/] {error}")
    return typer.Exit(code=2)


def _print_world_summary(summary: dict[str, object]) -> None:
    table = Table(title="Synthetic world", show_header=False)
    rows = [
        ("bank customers", f"{summary['bank_customers']:,}"),
        ("vendor users", f"{summary['vendor_users']:,}"),
        ("true coverage", f"{float(summary['true_coverage']):.1%}"),  # type: ignore[arg-type]
        ("label rate (opens mobile banking)", f"{float(summary['label_rate']):.2%}"),  # type: ignore[arg-type]
        (
            "invalid / duplicated phones",
            f"{summary['invalid_phones']:,} / {summary['duplicated_phones']:,}",
        ),
    ]
    for key, value in rows:
        table.add_row(key, value)
    mix = summary.get("persona_mix", {})
    if isinstance(mix, dict):
        table.add_row(
            "persona mix (vendor)",
            ", ".join(f"{p} {float(s):.0%}" for p, s in sorted(mix.items(), key=lambda x: -x[1])),
        )
    table.add_row("seconds", f"{float(summary.get('seconds', 0.0)):.1f}")  # type: ignore[arg-type]
    console.print(table)


@app.command()
def world(
    out: Annotated[Path, typer.Option(help="Folder the world is written to.")] = Path("runs/world"),
    customers: Annotated[int, typer.Option(min=100, help="Bank customers.")] = 100_000,
    seed: Annotated[int, typer.Option(help="Seed: same seed, same bytes.")] = 7,
) -> None:
    """Generate the synthetic bank + vendor world (ground truth goes to truth/)."""
    from labs.world import WorldConfig, generate_world

    try:
        with _stage_progress("world") as progress:
            summary = generate_world(
                WorldConfig(customers=customers, seed=seed), out, progress=progress
            )
    except FusionError as error:
        raise _fail(error) from error
    _print_world_summary(summary.to_dict())
    console.print(f"written to [bold]{out}[/]")


ClusterOption = Annotated[
    str | None,
    typer.Option(
        help="Run the bucketed jobs on Dask: local:N starts a LocalCluster of N workers (TLS "
        "on), tls://HOST:PORT joins the bank's scheduler (docs/cluster.md). Default: this "
        "process, which already uses every core."
    ),
]

ModeOption = Annotated[
    str,
    typer.Option(
        help="salted: keyed hash with the shared salt epoch (fast; a key holder can reverse it "
        "by enumerating phones). oprf: rows sealed under the vendor's OPRF key; the bank opens "
        "only its own customers' rows."
    ),
]


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Run folder (ignored by git).")] = Path("runs/demo"),
    customers: Annotated[int, typer.Option(min=100)] = 100_000,
    seed: Annotated[int, typer.Option()] = 7,
    mode: ModeOption = "salted",
) -> None:
    """Run everything that exists end to end on a synthetic world and print a summary.

    world -> bank and vendor keyrings -> vendor pack (normalise, keyed hash or OPRF seal, seal
    the batch) -> bank ingest (verify, open, contract, load into the encrypted store) -> match
    (salted join, or OPRF request -> vendor answer -> open matched rows) -> features -> train
    (acquisition, rescue, uplift) -> score -> target lists per branch -> HTML reports.
    Re-running starts from a clean run.
    """
    import shutil

    from fusion.coverage import coverage_report
    from fusion.features import build_features
    from fusion.ingest import ingest_inbox
    from fusion.match import load_extract, match
    from fusion.oprf_psi import request_match
    from fusion.store import Store
    from labs.report import write_match_report
    from labs.world import WorldConfig, generate_world
    from matcher.pack import pack_users

    if out.exists():
        shutil.rmtree(out)
    folder = RunFolder(out).ensure()
    summary: dict[str, object] = {}
    try:
        world_config = WorldConfig(customers=customers, seed=seed)
        with _stage_progress("world") as progress:
            world_summary = generate_world(world_config, folder.world, progress=progress)
        _print_world_summary(world_summary.to_dict())
        summary["world"] = world_summary.to_dict()

        bank, vendor = init_local_pair(folder.bank_keys, folder.vendor_keys, vendor_id="vendor-a")
        if mode not in ("salted", "oprf"):
            raise ConfigError(f"--mode takes salted or oprf, got {mode!r}", setting="mode")
        how = "keyed-hash" if mode == "salted" else "OPRF-seal each row"
        with console.status(f"vendor: normalise, {how}, pack and seal"):
            # The vendor's data is as of the bank's snapshot date (its batch's created_at).
            data_time = datetime.combine(world_config.snapshot_date, time(6), tzinfo=UTC)
            packed = pack_users(
                WorldFiles(folder.world).vendor_users,
                folder.inbox.inbox / "vendor-a-0001.sealed",
                keyring=vendor,
                now=data_time,
                mode=mode,
            )
        console.print(
            f"vendor batch {packed.batch_id}: {packed.rows:,} rows sealed "
            f"({packed.sealed.bytes / 1e6 if packed.sealed else 0:,.1f} MB); raw phones dropped"
        )
        with (
            console.status("bank: verify, open, validate, load; key the extract and match"),
            Store.open(folder.store, key=bank.store_key()) as store,
        ):
            store.load_taxonomy(load_taxonomy())
            outcomes = list(ingest_inbox(store=store, keyring=bank, inbox=folder.inbox, clock=_now))
            extract = pl.read_parquet(WorldFiles(folder.world).customers)
            opened: OprfMatchRun | None = None
            if mode == "salted":
                epoch_id = bank.current_salt().epoch_id
                loaded = load_extract(
                    store,
                    extract,
                    epoch=bank.current_salt(),
                    snapshot_date=world_config.snapshot_date,
                    now=_now(),
                )
                reasons = loaded.reasons
                matched = match(
                    store, epoch_id=epoch_id, snapshot_date=world_config.snapshot_date, now=_now()
                )
            else:
                epoch_id = packed.salt_epoch
                _, request = request_match(
                    store,
                    extract,
                    epoch_id=epoch_id,
                    snapshot_date=world_config.snapshot_date,
                    now=_now(),
                )
                opened = _answer_locally(store, folder, extract, request)
                matched, reasons = opened.run, opened.reasons
                summary["oprf"] = opened.to_dict()
            features = build_features(
                store, snapshot_date=world_config.snapshot_date, salt_epoch=epoch_id
            )
            features_dir = folder.features / world_config.snapshot_date.isoformat()
            features.write(features_dir)
            coverage = coverage_report(
                store, snapshot_date=world_config.snapshot_date, salt_epoch=epoch_id
            )
            report_page = write_match_report(coverage, _report_dir(folder, coverage))
            ledger = store.execute(
                "SELECT status, count(*), sum(rows) FROM batches GROUP BY status ORDER BY status"
            ).fetchall()
        for outcome in outcomes:
            split = ", ".join(f"{k} {v:.1f}s" for k, v in outcome.seconds.items())
            console.print(
                f"ingest {outcome.batch_id}: [bold]{outcome.status}[/] {outcome.rows:,} rows "
                f"({split})"
            )
        if opened is None:
            _print_match(reasons, matched)
        else:
            _print_oprf_match(opened)
        console.print(
            f"features {world_config.snapshot_date}: {features.table.height:,} customers x "
            f"{len(features.feature_columns())} fused columns + {features.tags.shape[1]:,} tag "
            f"columns ({features.manifest.matched:,} with vendor data) -> {features_dir}"
        )
        campaign = pl.read_parquet(WorldFiles(folder.world).campaign)
        trained = _train(folder, features, campaign)
        lists = _score(folder, features)
        model_page = _model_report(folder, trained, features, campaign, lists)
    except FusionError as error:
        raise _fail(error) from error
    console.print(f"match and app-penetration report (cells under k=10 suppressed): {report_page}")
    console.print(f"model report (acquisition, rescue, uplift, value x demand): {model_page}")
    summary["report"] = str(report_page)
    summary["model_report"] = str(model_page)
    summary["models"] = trained.summary()
    summary["lists"] = {name: frame.height for name, frame in lists.lists.items()}
    summary["batches"] = [o.to_dict() for o in outcomes]
    summary["match"] = {
        "customers": matched.customers,
        "matched": matched.matched,
        "coverage": matched.coverage,
        "invalid": matched.invalid,
        "duplicated": matched.duplicated,
    }
    summary["ledger"] = {status: {"batches": n, "rows": rows} for status, n, rows in ledger}
    (out / "demo-summary.json").write_text(json.dumps(summary, indent=2, default=str))
    console.print(
        f"run folder: [bold]{out}[/] (encrypted store {folder.store.name}; "
        f"summary {out / 'demo-summary.json'})"
    )


keys_app = typer.Typer(
    help="The bank's keyring: HPKE keys, trusted vendors, salt epochs, store key."
)
vendor_app = typer.Typer(help="The vendor's tool: keys, packing and sealing batches.")
app.add_typer(keys_app, name="keys")
app.add_typer(vendor_app, name="vendor")

RunOption = Annotated[Path, typer.Option("--run", help="Run folder (ignored by git).")]
DEFAULT_RUN = Path("runs/demo")


@contextmanager
def _bank(run: Path, *, read_only: bool = False) -> Iterator[tuple[RunFolder, Keyring, Store]]:
    """Yield the run folder, the bank's keyring and its store opened with the keyring's key."""
    from fusion.store import Store
    from matcher.keyring import Keyring

    folder = RunFolder(run)
    keyring = Keyring.open(folder.bank_keys)
    with Store.open(folder.store, key=keyring.store_key(), read_only=read_only) as store:
        yield folder, keyring, store


def _now() -> datetime:
    return datetime.now(UTC)


@keys_app.command("init")
def keys_init(run: RunOption = DEFAULT_RUN) -> None:
    """Create the bank's keyring (HPKE key pair, first salt epoch, store key)."""
    from matcher.keyring import Keyring

    folder = RunFolder(run).ensure()
    try:
        keyring = Keyring.init(folder.bank_keys, role="bank")
    except FusionError as error:
        raise _fail(error) from error
    console.print(
        f"bank keyring created in {folder.bank_keys} (salt epoch {keyring.current_salt().epoch_id})"
    )


@keys_app.command("rotate")
def keys_rotate(
    what: Annotated[str, typer.Option(help="hpke | salt")],
    run: RunOption = DEFAULT_RUN,
) -> None:
    """Rotate the bank's HPKE key or salt epoch; old keys stay readable."""
    _rotate(RunFolder(run).bank_keys, what)


def _rotate(keyring_path: Path, what: str) -> None:
    """Rotate `what` in the keyring at `keyring_path` and print the new id."""
    from matcher.keyring import Keyring

    try:
        new_id = Keyring.open(keyring_path).rotate(what)  # type: ignore[arg-type]
    except FusionError as error:
        raise _fail(error) from error
    console.print(f"rotated {what}: new id {new_id}")


@keys_app.command("pair-vendor")
def keys_pair_vendor(run: RunOption = DEFAULT_RUN) -> None:
    """Exchange public keys and the salt epoch between the two keyrings of a local run.

    In production the same three things travel out of band: the vendor's public signing key to
    the bank, the bank's HPKE public key to the vendor, and the salt epoch by a key ceremony.
    """
    from matcher.keyring import Keyring

    folder = RunFolder(run)
    try:
        pair_locally(Keyring.open(folder.bank_keys), Keyring.open(folder.vendor_keys))
    except FusionError as error:
        raise _fail(error) from error
    console.print("vendor trusted by the bank; bank key and salt epoch imported by the vendor")


@vendor_app.command("keygen")
def vendor_keygen(
    vendor_id: Annotated[
        str, typer.Option(help="The vendor's id as the bank knows it.")
    ] = "vendor-a",
    run: RunOption = DEFAULT_RUN,
) -> None:
    """Create the vendor's keyring with its Ed25519 signing key."""
    from matcher.keyring import Keyring

    folder = RunFolder(run).ensure()
    try:
        Keyring.init(folder.vendor_keys, role="vendor", vendor_id=vendor_id)
    except FusionError as error:
        raise _fail(error) from error
    console.print(f"vendor keyring for {vendor_id} created in {folder.vendor_keys}")


@vendor_app.command("pack")
def vendor_pack(
    users: Annotated[Path, typer.Option(help="Users Parquet: phone + app/tag lists.")],
    out: Annotated[Path | None, typer.Option(help="Sealed batch file to write.")] = None,
    epoch: Annotated[
        str | None, typer.Option(help="Salt epoch (salted) or OPRF epoch (oprf); default current.")
    ] = None,
    mode: ModeOption = "salted",
    run: RunOption = DEFAULT_RUN,
) -> None:
    """Normalise phones, key or seal each user's row, drop the phones and seal the batch."""
    from matcher.keyring import Keyring
    from matcher.pack import pack_users

    folder = RunFolder(run).ensure()
    try:
        keyring = Keyring.open(folder.vendor_keys)
        with console.status(f"packing ({mode}) and sealing"):
            result = pack_users(
                users,
                out or folder.outbox / "batch.sealed",
                keyring=keyring,
                now=_now(),
                epoch_id=epoch,
                mode=mode,
            )
    except FusionError as error:
        raise _fail(error) from error
    rejected = ", ".join(f"{k} {v:,}" for k, v in result.rejected.items()) or "none"
    console.print(
        f"batch {result.batch_id} ({result.mode}): {result.rows:,} rows sealed (epoch "
        f"{result.salt_epoch}); rejected phones: {rejected}; duplicates dropped: "
        f"{result.duplicates_dropped:,}"
    )


@vendor_app.command("rotate")
def vendor_rotate(
    what: Annotated[str, typer.Option(help="signing | oprf")],
    run: RunOption = DEFAULT_RUN,
) -> None:
    """Start a new signing key or OPRF epoch; old ones stay readable (batches sealed before)."""
    if what not in ("signing", "oprf"):
        raise _fail(ConfigError(f"--what takes signing or oprf, got {what!r}", setting="what"))
    _rotate(RunFolder(run).vendor_keys, what)


@vendor_app.command("evaluate")
def vendor_evaluate(
    request: Annotated[Path, typer.Option(help="The bank's OPRF request file.")],
    out: Annotated[Path | None, typer.Option(help="Answer file to write.")] = None,
    declared_customers: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="The bank's customer count as agreed out of band; required for an epoch's "
            "first answer, where it fixes the cap (x1.1 + 1000 evaluations per epoch).",
        ),
    ] = None,
    run: RunOption = DEFAULT_RUN,
) -> None:
    """Answer a bank's blinded OPRF request under the epoch's evaluation budget."""
    from matcher.keyring import Keyring
    from matcher.oprf_exchange import REQUEST, ElementFile, answer_request

    folder = RunFolder(run)
    try:
        keyring = Keyring.open(folder.vendor_keys)
        received = ElementFile.read(request, kind=REQUEST)
        with console.status(f"evaluating {len(received):,} blinded elements"):
            answer, budget = answer_request(
                keyring, received, declared_customers=declared_customers
            )
        target = out or folder.vendor_oprf / f"answer-{received.request_id}.oprf"
        answer.write(target)
    except FusionError as error:
        raise _fail(error) from error
    console.print(
        f"answered request {received.request_id} (epoch {received.epoch_id}): "
        f"{len(answer):,} evaluations; epoch budget {budget.used:,} of {budget.limit:,} used "
        f"-> {target}"
    )


@app.command()
def ingest(
    files: Annotated[
        list[Path] | None, typer.Argument(help="Sealed files (default: the inbox).")
    ] = None,
    run: RunOption = DEFAULT_RUN,
) -> None:
    """Verify, open, validate and load sealed batches into the encrypted store."""
    from fusion.ingest import ingest_inbox

    folder = RunFolder(run).ensure()
    try:
        for path in files or ():
            _copy_into(path, folder.inbox.inbox)
        with _bank(run) as (_, keyring, store):
            outcomes = list(
                ingest_inbox(store=store, keyring=keyring, inbox=folder.inbox, clock=_now)
            )
    except FusionError as error:
        raise _fail(error) from error
    for outcome in outcomes:
        reasons = f" ({', '.join(outcome.reasons)})" if outcome.reasons else ""
        console.print(
            f"{outcome.batch_id}: [bold]{outcome.status}[/] {outcome.rows:,} rows{reasons}"
        )
    if not outcomes:
        console.print("inbox empty: nothing to ingest")


@app.command("match")
def match_command(
    extract: Annotated[Path, typer.Option(help="The bank's customer extract (Parquet).")],
    snapshot: Annotated[str, typer.Option(help="Snapshot date of the extract, YYYY-MM-DD.")],
    epoch: Annotated[
        str | None,
        typer.Option(
            help="Salt epoch (salted; default current) or the vendor's OPRF epoch (oprf; default "
            "the newest loaded OPRF batch's)."
        ),
    ] = None,
    mode: ModeOption = "salted",
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
    cluster: ClusterOption = None,
    run: RunOption = DEFAULT_RUN,
) -> None:
    """Match the customer extract with the vendor's data (phones are never stored).

    salted: key the extract and intersect with the vendor's keys. oprf: without --answer, write
    the blinded request for the vendor (`fusion vendor evaluate`); with --answer, open the matched
    customers' rows and match; --local-vendor does both steps with this run's vendor keyring.
    """
    from fusion.match import load_extract, match
    from fusion.oprf_psi import finish_match, request_match
    from matcher.oprf_exchange import ANSWER, ElementFile

    if mode not in ("salted", "oprf"):
        raise _fail(ConfigError(f"--mode takes salted or oprf, got {mode!r}", setting="mode"))
    if mode == "salted" and (answer or request_out or local_vendor):
        raise _fail(
            ConfigError(
                "--answer, --request-out and --local-vendor belong to --mode oprf", setting="mode"
            )
        )
    if mode == "oprf" and cluster:
        raise _fail(
            ConfigError(
                "--cluster runs the salted mode's keying; the OPRF mode runs in this process "
                "(its blinding already uses every core)",
                setting="cluster",
            )
        )
    try:
        snapshot_date = _parse_date(snapshot)
        frame = pl.read_parquet(extract)
        with _bank(run) as (folder, keyring, store):
            if mode == "salted":
                salt = keyring.salt(epoch) if epoch else keyring.current_salt()
                keys = _cluster_keys(cluster, folder, extract, salt) if cluster else None
                with console.status("keying the extract and matching"):
                    loaded = load_extract(
                        store,
                        frame,
                        epoch=salt,
                        snapshot_date=snapshot_date,
                        now=_now(),
                        keys=keys,
                    )
                    result = match(
                        store, epoch_id=salt.epoch_id, snapshot_date=snapshot_date, now=_now()
                    )
                _print_match(loaded.reasons, result)
                return
            if answer is not None:
                with console.status("unblinding, opening the matched rows, matching"):
                    done = finish_match(
                        store, frame, ElementFile.read(answer, kind=ANSWER), now=_now()
                    )
                _print_oprf_match(done)
                return
            oprf_epoch = epoch or _newest_oprf_epoch(store)
            with console.status(f"blinding {frame.height:,} customers"):
                info, request = request_match(
                    store, frame, epoch_id=oprf_epoch, snapshot_date=snapshot_date, now=_now()
                )
            if local_vendor:
                done = _answer_locally(store, folder, frame, request)
                _print_oprf_match(done)
                return
            target = request_out or folder.bank_oprf / f"request-{info.request_id}.oprf"
            request.write(target)
    except FusionError as error:
        raise _fail(error) from error
    console.print(
        f"OPRF request {info.request_id} (epoch {info.epoch_id}): {info.blinded:,} of "
        f"{info.customers:,} customers blinded -> {target}\nsend it to the vendor "
        "(`fusion vendor evaluate`), then run this command again with --answer ANSWER_FILE"
    )


def _cluster_keys(cluster: str, folder: RunFolder, extract: Path, salt: SaltEpoch) -> CustomerKeys:
    """Key the extract with the bucketed job on `cluster`; its key files go once read."""
    import shutil
    import uuid

    from fusion.engine import key_customers, parse_cluster
    from matcher.psi import CustomerKeys

    job = folder.root / "jobs" / f"keys-{uuid.uuid4().hex[:12]}"
    try:
        with parse_cluster(cluster, console=console) as engine:
            keyed = key_customers(engine, extract, salt, job)
        return CustomerKeys(keyed.read(), keyed.invalid, keyed.duplicated, keyed.reasons)
    finally:
        # Keys on disk are pseudonyms of phones: they live in the encrypted store, not here.
        shutil.rmtree(job, ignore_errors=True)


def _newest_oprf_epoch(store: Store) -> str:
    row = store.execute(
        "SELECT salt_epoch FROM batches WHERE mode = 'oprf' AND status = 'loaded' "
        "ORDER BY created_at DESC LIMIT 1"
    ).fetchone()
    if row is None:
        raise ConfigError(
            "no OPRF batch is loaded, so the vendor's OPRF epoch is unknown: ingest its OPRF "
            "batch first (`fusion ingest`), or name the epoch with --epoch",
            setting="epoch",
        )
    return str(row[0])


def _answer_locally(
    store: Store, folder: RunFolder, extract: pl.DataFrame, request: ElementFile
) -> OprfMatchRun:
    """Let the run's own vendor keyring answer `request` and finish the match (demo, tests)."""
    from fusion.oprf_psi import finish_match
    from matcher.keyring import Keyring
    from matcher.oprf_exchange import answer_request

    vendor = Keyring.open(folder.vendor_keys)
    with console.status(f"vendor: evaluating {len(request):,} blinded elements"):
        with vendor.oprf_budget(request.epoch_id) as stored:
            declared = None if stored.read() else extract.height
        answer, _ = answer_request(vendor, request, declared_customers=declared)
    with console.status("bank: unblinding, opening the matched rows, matching"):
        return finish_match(store, extract, answer, now=_now())


def _print_oprf_match(done: OprfMatchRun) -> None:
    _print_match(done.reasons, done.run)
    console.print(
        f"OPRF: {done.vendor_rows:,} sealed vendor rows; opened {done.opened:,} (matched "
        f"customers), dropped {done.dropped:,} unopened"
        + (f"; quarantined batches: {', '.join(done.quarantined)}" if done.quarantined else "")
    )


@app.command("features")
def features_command(
    snapshot: Annotated[str, typer.Option(help="Snapshot date, YYYY-MM-DD.")],
    epoch: Annotated[str | None, typer.Option(help="Salt epoch id (default: current).")] = None,
    cluster: ClusterOption = None,
    run: RunOption = DEFAULT_RUN,
) -> None:
    """Build the point-in-time fused feature table of a matched snapshot and write it.

    With --cluster the build runs by customer bucket on the cluster (each task opens the store
    read-only, so no writer may hold it meanwhile); the buckets stay beside the table, under
    buckets/, for bucketed scoring."""
    from fusion.features import build_features

    try:
        snapshot_date = _parse_date(snapshot)
        if cluster:
            built = _cluster_features(cluster, RunFolder(run), snapshot_date, epoch)
            folder = RunFolder(run)
        else:
            with console.status("building features"), _bank(run) as (folder, keyring, store):
                epoch_id = epoch or keyring.current_salt().epoch_id
                built = build_features(store, snapshot_date=snapshot_date, salt_epoch=epoch_id)
        written = built.write(folder.features / snapshot_date.isoformat())
    except FusionError as error:
        raise _fail(error) from error
    console.print(
        f"{built.table.height:,} customers, {built.manifest.matched:,} with vendor data; "
        f"written to {written['table'].parent}"
    )


def _cluster_features(
    cluster: str, folder: RunFolder, snapshot_date: date, epoch: str | None
) -> FeatureSet:
    """Build the snapshot's features by bucket on `cluster`; return them assembled."""
    from fusion.engine import build_feature_buckets, parse_cluster
    from matcher.keyring import Keyring

    keyring = Keyring.open(folder.bank_keys)
    epoch_id = epoch or keyring.current_salt().epoch_id
    out = folder.features / snapshot_date.isoformat() / "buckets"
    with parse_cluster(cluster, console=console) as engine:
        buckets = build_feature_buckets(
            engine,
            folder.store,
            keyring.store_key(),
            snapshot_date=snapshot_date,
            salt_epoch=epoch_id,
            out=out,
        )
    console.print(f"{buckets.rows:,} customers built in {len(buckets.folders)} buckets -> {out}")
    return buckets.assemble()


def _features_dir(folder: RunFolder, snapshot: str | None) -> Path:
    """Return the feature folder of `snapshot`, or the newest one of the run."""
    if snapshot:
        chosen = folder.features / _parse_date(snapshot).isoformat()
    else:
        built = sorted(p for p in folder.features.glob("*") if (p / "manifest.json").exists())
        if not built:
            raise ConfigError(
                f"no feature table under {folder.features}; run `fusion features` first",
                setting="snapshot",
            )
        chosen = built[-1]
    if not (chosen / "manifest.json").exists():
        raise ConfigError(
            f"no feature table in {chosen}; run `fusion features`", setting="snapshot"
        )
    return chosen


def _true_uplift(folder: RunFolder, features: FeatureSet) -> np.ndarray[Any, Any] | None:
    """Return the world's true uplift per feature row when the run holds a synthetic world."""
    truth = folder.world / WorldFiles.PROPENSITY
    if not truth.exists():
        return None
    joined = features.table.select("customer_id").join(
        pl.read_parquet(truth, columns=["customer_id", "uplift"]),
        on="customer_id",
        how="left",
        maintain_order="left",
    )
    return joined["uplift"].to_numpy()


def _train(
    folder: RunFolder, features: FeatureSet, campaign: pl.DataFrame, cluster: str | None = None
) -> TrainingRun:
    from contextlib import nullcontext

    from fusion.registry import Registry
    from fusion.training import train_all

    engine = None
    if cluster:
        from fusion.engine import ClusterEngine, parse_cluster

        made = parse_cluster(cluster, console=console)
        if not isinstance(made, ClusterEngine):
            made.close()
            raise ConfigError(
                f"--cluster {cluster!r} names no cluster; use local:N or tls://HOST:PORT",
                setting="cluster",
            )
        engine = made
    with engine or nullcontext(), _stage_progress("train") as progress:
        run = train_all(
            features,
            campaign=campaign,
            registry=Registry(folder.models),
            now=_now(),
            true_uplift=_true_uplift(folder, features),
            progress=progress,
            client=engine.client if engine else None,
        )
    summary = run.summary()
    acq, rescue, uplift = summary["acquisition"], summary["rescue"], summary["uplift"]
    gain_low, gain_high = acq["auc_gain_ci"]
    console.print(
        f"acquisition AUC (held out): in-bank {acq['in_bank']['auc']:.3f} "
        f"({acq['in_bank']['inputs']} of {acq['in_bank']['candidates']} inputs kept), fused "
        f"{acq['fused']['auc']:.3f} (+{acq['auc_gain']:.3f}"
        + ("" if gain_low is None else f", DeLong 95% CI {gain_low:+.3f} to {gain_high:+.3f}")
        + ")"
    )
    low, high = rescue["ratio_ci"]
    ratio = "no ratio: the control had no responder" if rescue["ratio"] is None else (
        f"{rescue['ratio']:.2f}x"
        + ("" if low is None else f" (95% CI {low:.2f}-{high:.2f})")
    )  # fmt: skip
    console.print(
        f"rescue: top {rescue['rescued']:,} of the rejected pool respond "
        f"{rescue['rescued_rate']:.1%} vs random control {rescue['control_rate']:.1%}: {ratio}"
    )
    best = uplift["learners"][uplift["best"]]
    corr = best["correlation_with_true_uplift"]
    console.print(
        f"uplift ({uplift['best']}): Qini {best['qini']:.3f}; targeting 30%: "
        f"{uplift['incremental_ratio'] or float('nan'):.2f}x the incremental conversions of "
        "response targeting"
        + (f"; correlation with true uplift {corr:.2f}" if corr is not None else "")
    )
    return run


def _score(folder: RunFolder, features: FeatureSet, cluster: str | None = None) -> TargetLists:
    from fusion.lists import build_target_lists
    from fusion.registry import Registry

    registry = Registry(folder.models)
    with _stage_progress("score") as progress:
        lists = build_target_lists(
            registry,
            features,
            scores_dir=folder.scores,
            lists_dir=folder.lists,
            progress=progress,
            scorer=_cluster_scorer(cluster, folder, registry) if cluster else None,
        )
    console.print(
        f"scored {lists.scores.rows:,} customers ({lists.scores.rows_per_second:,.0f} rows/s) "
        f"-> {lists.scores.path}"
    )
    for name, frame in lists.lists.items():
        console.print(
            f"list {name}: {frame.height:,} customers in {len(lists.files[name])} branches "
            f"-> {folder.lists / name}"
        )
    return lists


def _cluster_scorer(cluster: str, folder: RunFolder, registry: Registry) -> AcquisitionScorer:
    """Return a scorer that scores the base on `cluster` (`fusion.engine.score_features`)."""

    def score(
        model: ScoreModel, features: FeatureSet, rows: np.ndarray[Any, Any], out: Path, deciles: int
    ) -> ScoringResult:
        import shutil
        import uuid

        from fusion.engine import parse_cluster, score_features
        from fusion.scoring import ScoringResult

        job = folder.root / "jobs" / f"scores-{uuid.uuid4().hex[:12]}"
        start = time_module.perf_counter()
        try:
            with parse_cluster(cluster, console=console) as engine:
                parts = score_features(
                    engine,
                    features,
                    registry,
                    model.name,
                    job,
                    version=str(model.metadata["version"]),
                    reason_deciles=deciles,
                )
            wanted = features.table["customer_id"].filter(pl.Series(rows))
            scored = parts.read().filter(pl.col("customer_id").is_in(wanted.implode()))
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp = out.with_name(f".{out.name}.tmp")
            scored.write_parquet(tmp)
            tmp.replace(out)
        finally:
            shutil.rmtree(job, ignore_errors=True)
        return ScoringResult(
            out,
            scored.height,
            time_module.perf_counter() - start,
            model.name,
            str(model.metadata["version"]),
        )

    return score


def _model_report(
    folder: RunFolder,
    run: TrainingRun,
    features: FeatureSet,
    campaign: pl.DataFrame,
    lists: TargetLists,
) -> Path:
    from labs.model_report import write_model_report

    scores = pl.read_parquet(lists.scores.path)
    out = folder.reports / f"models-{run.snapshot_date}"
    return write_model_report(run, features, campaign, scores, out)


@app.command("train")
def train_command(
    campaign: Annotated[
        Path | None,
        typer.Option(
            help="Past A/B campaign (Parquet: customer_id, treatment, responded); "
            "default: the run's synthetic world's."
        ),
    ] = None,
    snapshot: Annotated[
        str | None, typer.Option(help="Feature snapshot (default: newest).")
    ] = None,
    cluster: ClusterOption = None,
    run: RunOption = DEFAULT_RUN,
) -> None:
    """Train acquisition (in-bank and fused), rescue and uplift models; register them; report.

    With --cluster every booster is fitted by xgboost.dask on the cluster's workers; metrics,
    registry and reports are the same."""
    from fusion.features import FeatureSet

    folder = RunFolder(run)
    try:
        features = FeatureSet.read(_features_dir(folder, snapshot))
        campaign_path = campaign or folder.world / WorldFiles.CAMPAIGN
        if not campaign_path.exists():
            raise ConfigError(
                f"no campaign table at {campaign_path}; pass --campaign PATH (Parquet with "
                "customer_id, treatment, responded)",
                setting="campaign",
            )
        campaign_frame = pl.read_parquet(campaign_path)
        trained = _train(folder, features, campaign_frame, cluster)
        lists = _score(folder, features)
        page = _model_report(folder, trained, features, campaign_frame, lists)
    except FusionError as error:
        raise _fail(error) from error
    console.print(f"model report: {page}")


@app.command("score")
def score_command(
    snapshot: Annotated[
        str | None, typer.Option(help="Feature snapshot (default: newest).")
    ] = None,
    cluster: ClusterOption = None,
    run: RunOption = DEFAULT_RUN,
) -> None:
    """Score the base with the current models and write the target lists per branch.

    With --cluster the acquisition model scores the base on the cluster (chunks of rows, one
    task each); the rescue and uplift lists are scored here."""
    from fusion.features import FeatureSet

    folder = RunFolder(run)
    try:
        _score(folder, FeatureSet.read(_features_dir(folder, snapshot)), cluster)
    except FusionError as error:
        raise _fail(error) from error


@app.command("report")
def report_command(
    snapshot: Annotated[str, typer.Option(help="Snapshot date, YYYY-MM-DD.")],
    epoch: Annotated[str | None, typer.Option(help="Salt epoch id (default: current).")] = None,
    k: Annotated[int, typer.Option(help="Suppress cells of fewer customers than k.")] = 10,
    run: RunOption = DEFAULT_RUN,
) -> None:
    """Write the match and app-penetration report (HTML with PNG plots, Parquet tables)."""
    from fusion.coverage import coverage_report
    from labs.report import write_match_report

    try:
        snapshot_date = _parse_date(snapshot)
        with _bank(run, read_only=True) as (folder, keyring, store):
            epoch_id = epoch or keyring.current_salt().epoch_id
            report = coverage_report(store, snapshot_date=snapshot_date, salt_epoch=epoch_id, k=k)
        page = write_match_report(report, _report_dir(folder, report))
    except FusionError as error:
        raise _fail(error) from error
    console.print(f"report written: {page}")


def _report_dir(folder: object, report: object) -> Path:
    from fusion.coverage import CoverageReport

    assert isinstance(folder, RunFolder) and isinstance(report, CoverageReport)
    return folder.reports / f"match-{report.snapshot_date.isoformat()}-{report.salt_epoch}"


def _print_match(reasons: dict[str, int], result: object) -> None:
    from fusion.match import MatchRun

    assert isinstance(result, MatchRun)
    rejected = ", ".join(f"{k} {v:,}" for k, v in sorted(reasons.items())) or "none"
    console.print(
        f"match {result.snapshot_date} (epoch {result.salt_epoch}): [bold]{result.matched:,}[/] of "
        f"{result.customers:,} customers ({result.coverage:.1%}); unusable phones: {rejected}; "
        f"shared phones (not matched): {result.duplicated:,}"
    )


def _parse_date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError as error:
        raise ConfigError(
            f"snapshot must be a date like 2026-09-30, got {text!r}", setting="snapshot"
        ) from error


def _copy_into(path: Path, folder: Path) -> None:
    """Copy a file into a folder atomically (temp name, then rename): no worker sees half."""
    import shutil
    import uuid

    tmp = folder / f".{uuid.uuid4().hex}.part"
    shutil.copyfile(path, tmp)
    tmp.rename(folder / (path.stem + "-" + uuid.uuid4().hex[:8] + ".sealed"))


@app.command()
def sql(
    query: Annotated[str | None, typer.Argument(help="One query; none = interactive.")] = None,
    run: RunOption = DEFAULT_RUN,
    limit: Annotated[int, typer.Option(help="Rows to print at most.")] = 50,
) -> None:
    """Query the store read-only (close any writer first; analysts use published snapshots)."""
    try:
        with _bank(run, read_only=True) as (_, _, store):
            queries = [query] if query else _prompt_queries()
            for text in queries:
                try:
                    frame = store.execute(text).pl()
                except Exception as error:
                    err_console.print(f"[red]query failed:[/] {type(error).__name__}: {error}")
                    continue
                console.print(frame.head(limit))
    except FusionError as error:
        raise _fail(error) from error


def _prompt_queries() -> Iterator[str]:
    while True:
        try:
            line = console.input("[bold]fusion sql>[/] ").strip()
        except EOFError:
            return
        if line in {"", "\\q", "quit", "exit"}:
            if line:
                return
            continue
        yield line


@app.command()
def publish(run: RunOption = DEFAULT_RUN) -> None:
    """Write the encrypted read-only snapshots: one for head office, one per branch."""
    try:
        with _bank(run) as (folder, keyring, store):
            branches = [
                r[0]
                for r in store.execute(
                    "SELECT DISTINCT branch_id FROM customers ORDER BY 1"
                ).fetchall()
            ]
            written = store.publish(
                folder.snapshots,
                head_office_key=keyring.head_office_key(),
                branch_keys={b: keyring.branch_store_key(b) for b in branches},
            )
    except FusionError as error:
        raise _fail(error) from error
    console.print(f"published {len(written)} snapshots to {RunFolder(run).snapshots}")


@app.command()
def serve(
    run: RunOption = DEFAULT_RUN,
    host: Annotated[
        str, typer.Option(help="Bind address (loopback unless --public).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option()] = 8000,
    public: Annotated[bool, typer.Option(help="Allow a non-loopback bind address.")] = False,
) -> None:
    """Serve the API for a run folder under uvicorn."""
    from api import ApiSettings, serve

    try:
        settings = ApiSettings(run=run, host=host, port=port, allow_non_loopback=public)
    except FusionError as error:
        raise _fail(error) from error
    serve(settings)


token_app = typer.Typer(help="API tokens: create (printed once), list, revoke.")
app.add_typer(token_app, name="token")


@token_app.command("create")
def token_create(
    role: Annotated[str, typer.Option(help="vendor | analyst | campaign_tool | admin")],
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
    from fusion.tokens import create_token

    try:
        with _bank(run) as (_, _, store):
            issued = create_token(
                store,
                role=role,
                branches=branches.split(",") if branches is not None else None,
                head_office=head_office,
                vendor_id=vendor,
                label=label,
                now=_now(),
            )
    except FusionError as error:
        raise _fail(error) from error
    scope = ", ".join(sorted(issued.principal.branches or ())) or "all branches"
    holder = scope if role == "analyst" else vendor or "-"
    err_console.print(
        f"token {issued.principal.token_id} ({role}; {holder}) - shown once, store it in the "
        "caller's secret store:"
    )
    print(issued.secret)  # stdout alone, so scripts can capture it


@token_app.command("revoke")
def token_revoke(token_id: str, run: RunOption = DEFAULT_RUN) -> None:
    """Revoke a token by its id while the service is stopped (running: DELETE /v1/tokens/ID)."""
    from contracts.errors import StoreLockedError
    from fusion.tokens import revoke_token

    try:
        with _bank(run) as (_, _, store):
            revoked = revoke_token(store, token_id, now=_now())
    except StoreLockedError as error:
        raise _fail(
            ConfigError(
                f"{error}. While `fusion serve` holds the store, revoke through the service, "
                f"which drops the token at once: DELETE /v1/tokens/{token_id} with an admin "
                f"token, e.g. curl -X DELETE -H 'Authorization: Bearer $ADMIN_TOKEN' "
                f"http://127.0.0.1:8000/v1/tokens/{token_id}",
                setting="run",
            )
        ) from error
    except FusionError as error:
        raise _fail(error) from error
    console.print(f"token {token_id}: {'revoked' if revoked else 'not found or already revoked'}")


@token_app.command("list")
def token_list(run: RunOption = DEFAULT_RUN) -> None:
    """List tokens: id, role, scope, label, created, revoked (never a secret)."""
    try:
        with _bank(run, read_only=True) as (_, _, store):
            rows = store.execute(
                "SELECT token_id, role, coalesce(branches, vendor_id, ''), coalesce(label, ''), "
                "created_at, revoked_at FROM api_tokens ORDER BY created_at"
            ).fetchall()
    except FusionError as error:
        raise _fail(error) from error
    table = Table("token", "role", "scope", "label", "created", "revoked")
    for row in rows:
        table.add_row(*(str(v) if v is not None else "" for v in row))
    console.print(table)


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
    import os

    import httpx

    token = os.environ.get(token_env)
    if not token:
        raise _fail(ConfigError(f"set {token_env} to the vendor's API token", setting="token"))
    if not sealed.is_file():
        raise _fail(ConfigError(f"no sealed file at {sealed}", setting="sealed"))
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/octet-stream"}

    def chunks() -> Iterator[bytes]:
        with sealed.open("rb") as handle:
            while block := handle.read(1 << 20):
                yield block

    try:
        with httpx.Client(base_url=url, headers=headers, timeout=600) as client:
            answer = client.post("/v1/batches", content=chunks())
            if answer.status_code == 401:
                raise _fail(_token_refused(token_env))
            if answer.status_code != 202:
                raise _fail(
                    FusionError(f"upload refused: HTTP {answer.status_code} {answer.text[:300]}")
                )
            accepted = answer.json()
            batch_id, status_url = accepted.get("batch_id"), accepted.get("status_url")
            console.print(f"uploaded: upload {accepted['upload_id']}, batch {batch_id}")
            if not status_url:
                raise _fail(
                    FusionError(
                        f"the bank could not read the manifest of {sealed}, so its ingest will "
                        "refuse it; seal the batch again with `fusion vendor pack` and push the "
                        "new file"
                    )
                )
            deadline = time_module.monotonic() + wait
            while True:
                state = _batch_state(client.get(status_url), token_env, batch_id)
                if state != "received":
                    console.print(f"batch {batch_id}: [bold]{state}[/]")
                    if state in _PUSH_FAILED:
                        raise _fail(
                            FusionError(
                                f"batch {batch_id} was {state}: {_PUSH_FAILED[state]} "
                                f"(GET {url.rstrip('/')}{status_url})"
                            )
                        )
                    return
                left = deadline - time_module.monotonic()
                if left <= 0:
                    raise _fail(
                        FusionError(
                            f"no verdict on batch {batch_id} within {wait:g} s; it is queued at "
                            f"the bank: ask again with GET {url.rstrip('/')}{status_url}, or "
                            "push with a longer --wait (a file sent twice loads once)"
                        )
                    )
                time_module.sleep(min(0.5, left))
    except httpx.HTTPError as error:
        raise _fail(
            FusionError(f"cannot reach {url}: {error}; is `fusion serve` running?")
        ) from error


# Verdicts after which the vendor's data did not arrive: the push exits non-zero.
_PUSH_FAILED = {
    "quarantined": "it broke the data contract; the status answer holds the report (rule, row "
    "count, example rows). Fix the rows and send them under a new batch_id",
    "refused": "the bank could not verify or open it; check that it was sealed to the bank's "
    "current public key and signed with the key the bank holds for you, then pack it again",
    "failed": "the bank could not process it; tell the bank's operators, then push it again "
    "(a batch loads once)",
}


def _token_refused(token_env: str) -> ConfigError:
    return ConfigError(
        f"the bank did not accept the token in {token_env} (HTTP 401): it is mistyped or "
        "revoked; ask the bank for a vendor token",
        setting="token",
    )


def _batch_state(answer: httpx.Response, token_env: str, batch_id: str | None) -> str:
    """Return the status GET /v1/batches/{id} gave, or raise the push's exit for what it says."""
    if answer.status_code == 401:
        raise _fail(_token_refused(token_env))
    if answer.status_code == 404:
        raise _fail(
            FusionError(
                f"the bank knows no batch {batch_id} of this vendor although it accepted the "
                "upload; ask the bank's operators what became of it before pushing again"
            )
        )
    try:
        state = answer.json()["status"] if answer.status_code == 200 else None
    except (ValueError, KeyError, TypeError):
        state = None
    if not isinstance(state, str):
        raise _fail(
            FusionError(
                f"the bank's status answer for batch {batch_id} was HTTP {answer.status_code} "
                f"{answer.text[:300]}; ask again later"
            )
        )
    return state


@app.command()
def bench(
    out: Annotated[Path, typer.Option(help="Results folder.")] = Path("bench/results"),
    only: Annotated[list[str] | None, typer.Option(help="Run only these benchmarks.")] = None,
    scale_sizes: Annotated[
        str | None,
        typer.Option(help="The scale curve's customer counts, e.g. 100000,1000000."),
    ] = None,
) -> None:
    """Run the benchmarks, each against a baseline measured in the same run."""
    from labs.bench import Figure, run_benchmarks
    from labs.bench import scale_sizes as parse_sizes

    table = Table(title="Benchmarks")
    for column in ("figure", "value", "baseline", "ratio", "target", "met"):
        table.add_column(column)

    def show(f: Figure) -> None:
        console.print(f"  measured {f.name}: {f.value:,.2f} {f.unit}")
        table.add_row(
            f.name,
            f"{f.value:,.2f} {f.unit}",
            "-" if f.baseline is None else f"{f.baseline:,.2f} ({f.baseline_name})",
            "-" if f.ratio is None else f"{f.ratio:.2f}x",
            f.target,
            {True: "[green]yes[/]", False: "[red]no[/]", None: "-"}[f.met],
        )

    try:
        sizes = parse_sizes(scale_sizes) if scale_sizes else None
        figures = run_benchmarks(out, only=tuple(only or ()), on_figure=show, scale=sizes)
    except FusionError as error:
        raise _fail(error) from error
    console.print(table)
    console.print(f"written to [bold]{out / 'latest.json'}[/]")
    missed = [f for f in figures if f.met is False]
    if missed:
        # The figures are written either way; the exit status tells CI or a script.
        for f in missed:
            measured = f"{f.value:,.2f} {f.unit}" + (f", {f.ratio:.2f}x" if f.ratio else "")
            err_console.print(f"[red]target missed:[/] {f.name} {f.target}: {measured}")
        raise typer.Exit(code=1)


def main() -> None:  # pragma: no cover - console entry for `python -m labs.cli`
    sys.exit(app())


if __name__ == "__main__":  # pragma: no cover
    main()
