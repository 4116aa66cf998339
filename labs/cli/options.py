"""What several command groups take: the shared options, dates, the clock, the bank, an engine.

The command modules import the heavy steps (Dask, xgboost, matplotlib) inside the commands that
run them, so `fusion --help` and the light commands start without loading them.
"""

from __future__ import annotations

import getpass
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from contracts.errors import ConfigError
from contracts.schemas import MatchMode
from fusion.pipeline.bank import Bank, open_bank
from fusion.runfolder import RunFolder
from labs.cli.terminal import console

if TYPE_CHECKING:
    from fusion.jobs import Engine

__all__ = [
    "DEFAULT_RUN",
    "BankKey",
    "BenchName",
    "ClusterOption",
    "IdentifiersOption",
    "LogLevel",
    "MinCellOption",
    "ModeOption",
    "RunOption",
    "TokenRole",
    "VendorKey",
    "actor_name",
    "bank_of",
    "cluster_engine",
    "engine_for",
    "now",
    "parse_date",
    "parse_identifiers",
]

RunOption = Annotated[Path, typer.Option("--run", help="Run folder (ignored by git).")]
DEFAULT_RUN = Path("runs/demo")

ClusterOption = Annotated[
    str | None,
    typer.Option(
        help="Run the bucketed jobs on Dask: local:N starts a LocalCluster of N workers (TLS "
        "on), tls://HOST:PORT joins the bank's scheduler (docs/cluster.md). Default: this "
        "process, which already uses every core."
    ),
]

ModeOption = Annotated[
    MatchMode,
    typer.Option(
        help="salted: keyed hash with the shared salt epoch (fast; a key holder can reverse it "
        "by enumerating phones). oprf: rows sealed under the vendor's OPRF key; the bank opens "
        "only its own customers' rows."
    ),
]


IdentifiersOption = Annotated[
    str | None,
    typer.Option(
        help="Identifiers to match on, highest priority first, comma-separated: mobile, "
        "id_number, device_id. Default: every one of them the file has a column for.",
    ),
]


def parse_identifiers(text: str | None) -> tuple[str, ...] | None:
    """Return the identifier types `--identifiers` names, in order (None: the default)."""
    return tuple(t.strip() for t in text.split(",") if t.strip()) if text else None


MinCellOption = Annotated[
    int,
    typer.Option(
        "-k",
        "--min-cell",
        min=1,
        help="k-anonymity: withhold every cell of fewer than k customers (and a complement, so "
        "it cannot be recovered by subtraction).",
    ),
]


class LogLevel(StrEnum):
    """Levels of the bank's log on stderr."""

    DEBUG = "DEBUG"
    INFO = "INFO"
    WARNING = "WARNING"
    ERROR = "ERROR"


class BankKey(StrEnum):
    """What `fusion keys rotate` rotates."""

    HPKE = "hpke"  # the key vendors seal batches to
    SALT = "salt"  # the keyed-hash salt epoch, shared with the vendor


class VendorKey(StrEnum):
    """What `fusion vendor rotate` rotates."""

    SIGNING = "signing"  # the Ed25519 key batches are signed with
    OPRF = "oprf"  # the OPRF key epoch


class TokenRole(StrEnum):
    """API token roles (`fusion.tokens.ROLES`)."""

    VENDOR = "vendor"
    ANALYST = "analyst"
    CAMPAIGN_TOOL = "campaign_tool"
    MARKETER = "marketer"
    ADMIN = "admin"


class BenchName(StrEnum):
    """Benchmarks by the name `fusion bench --only` takes (`labs.bench.BENCHMARKS`)."""

    KEYED_HASH = "keyed_hash"
    WORLD = "world"
    CONTRACTS = "contracts"
    ENVELOPE = "envelope"
    INGEST = "ingest"
    PSI = "psi"
    OPRF = "oprf"
    FEATURES = "features"
    MODELS = "models"
    API = "api"
    QUERY = "query"
    CAMPAIGN_PLAN = "campaign_plan"
    OUTCOME_EVENTS = "outcome_events"
    JOURNEY_DAY = "journey_day"
    MONITORING = "monitoring"
    SCALE = "scale"


def actor_name(actor: str | None) -> str:
    """Return the actor to record: the --actor option's value, else the login name."""
    if actor and actor.strip():
        return actor.strip()
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name (a container without a passwd entry)
        return "cli"


def now() -> datetime:
    """Return the time now, in UTC: the clock of every command."""
    return datetime.now(UTC)


def parse_date(text: str) -> date:
    """Return the date `text` names (YYYY-MM-DD)."""
    try:
        return date.fromisoformat(text)
    except ValueError as error:
        raise ConfigError(
            f"snapshot must be a date like 2026-09-30, got {text!r}", setting="snapshot"
        ) from error


@contextmanager
def bank_of(run: Path, *, read_only: bool = False) -> Iterator[Bank]:
    """Yield the bank of the run folder `run`: its keyring and its store, opened."""
    with open_bank(RunFolder(run), read_only=read_only) as bank:
        yield bank


@contextmanager
def cluster_engine(cluster: str, *, cluster_only: bool = False) -> Iterator[Engine]:
    """Yield the engine `--cluster` names, closed when the block ends.

    `cluster_only` refuses a value that names this process rather than a Dask cluster.
    """
    # Dask loads only for the commands that run on a cluster: `fusion --help` starts at once.
    from fusion.jobs import ClusterEngine, parse_cluster

    engine = parse_cluster(cluster, console=console)
    if cluster_only and not isinstance(engine, ClusterEngine):
        engine.close()
        raise ConfigError(
            f"--cluster {cluster!r} names no cluster; use local:N or tls://HOST:PORT",
            setting="cluster",
        )
    with engine:
        yield engine


@contextmanager
def engine_for(cluster: str | None, *, cluster_only: bool = False) -> Iterator[Engine | None]:
    """Yield the engine of `--cluster` (`cluster_engine`), or None when the option is absent."""
    if not cluster:
        yield None
        return
    with cluster_engine(cluster, cluster_only=cluster_only) as engine:
        yield engine
