"""The service's settings: one frozen, validated object that `fusion serve` or a test builds.

Its own module so that the app factory, the dependencies and the routers all import it, and
none of them imports another to reach it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from api.schemas import MAX_OUTCOMES, MAX_SCORE_IDS
from contracts.errors import ConfigError
from fusion.ingest import ARCHIVE_RETENTION
from fusion.query import QueryLimits
from fusion.retention import Retention

__all__ = ["ApiSettings"]

_LOOPBACK = {"127.0.0.1", "::1", "localhost"}


@dataclass(frozen=True, kw_only=True)
class ApiSettings:
    """Validated service settings; built by `fusion serve` or tests, never read from globals.

    `docs` serves the API's own description (/docs, /redoc, /openapi.json) without a token.
    Left at None it follows the bind: on for a loopback host (a developer's machine, and what
    the tests fuzz), off with `allow_non_loopback` (--public), where the description would map
    the service for anyone who can reach it; True or False (`fusion serve --docs/--no-docs`)
    decides outright. `serves_docs` is the answer.

    `quarantine_retention` and `archive_retention` bound the sealed files the ingest worker
    keeps (refused and quarantined ones; loaded ones): total bytes and oldest age, the oldest
    going first past either (`fusion.retention`).
    """

    run: Path
    host: str = "127.0.0.1"
    port: int = 8000  # 0: the system picks a free one
    allow_non_loopback: bool = False
    max_upload_bytes: int = 4 << 30  # a sealed batch; larger uploads get 413
    max_body_bytes: int = 1 << 20  # any other request body; larger ones get 413 unparsed
    max_score_ids: int = MAX_SCORE_IDS  # customers per POST /v1/scores
    max_outcomes: int = MAX_OUTCOMES  # outcome rows per POST /v1/outcomes
    max_concurrent_queries: int = 4  # analyst queries running at once; more get 429
    max_pending_uploads: int = 16  # per vendor, streaming in or waiting for ingest; more get 429
    query_limits: QueryLimits = field(default_factory=QueryLimits)
    # The JSON of one POST /v1/query answer; a longer one is refused (rule "result_size").
    max_query_response_bytes: int = 8 << 20
    # Query worker processes kept started (~200 MiB each); queries beyond them start one more
    # each (~0.8 s), up to max_concurrent_queries.
    warm_query_workers: int = 1
    quarantine_retention: Retention = field(default_factory=Retention)  # 2 GiB, 30 days
    archive_retention: Retention = ARCHIVE_RETENTION  # 16 GiB, 365 days
    audit_queue_limit: int = 10_000  # audit records waiting to be written; at it, 503
    audit_outage_seconds: float = 5.0  # audit writes failing this long: 503 until one succeeds
    # How far past the service's clock an outcome's occurred_at may be (clocks drift); later: 422.
    outcome_clock_skew: timedelta = timedelta(minutes=5)
    docs: bool | None = None
    # The console's sign-in sessions (api.console): one ends after `console_idle_timeout`
    # without a request, and `console_session_lifetime` after sign-in whatever happens.
    console_idle_timeout: timedelta = timedelta(minutes=30)
    console_session_lifetime: timedelta = timedelta(hours=12)
    # Secure cookies: None marks them Secure when the request came over https; True always
    # (TLS ended by the bank's gateway in front of the service).
    console_secure_cookies: bool | None = None

    @property
    def serves_docs(self) -> bool:
        """Return whether /docs, /redoc and /openapi.json are served (see the class docstring)."""
        return self.docs if self.docs is not None else not self.allow_non_loopback

    def __post_init__(self) -> None:
        if self.host not in _LOOPBACK and not self.allow_non_loopback:
            raise ConfigError(
                f"host {self.host!r} is not loopback; put the service behind the bank's "
                "gateway and pass allow_non_loopback=True (--public) deliberately",
                setting="host",
            )
        if not 0 <= self.port < 65536:
            # 0: the system picks a free port, and uvicorn's start line says which.
            raise ConfigError(f"port must be 0..65535, got {self.port}", setting="port")
        self._check_caps()
        if not self.audit_outage_seconds > 0:
            raise ConfigError(
                f"audit_outage_seconds must be > 0, got {self.audit_outage_seconds}",
                setting="audit_outage_seconds",
            )
        if self.outcome_clock_skew < timedelta(0):
            raise ConfigError(
                f"outcome_clock_skew must be >= 0, got {self.outcome_clock_skew}",
                setting="outcome_clock_skew",
            )
        for name in ("console_idle_timeout", "console_session_lifetime"):
            if getattr(self, name) <= timedelta(0):
                raise ConfigError(
                    f"{name} must be a positive duration, got {getattr(self, name)}",
                    setting=name,
                )
        if self.warm_query_workers < 0:
            raise ConfigError(
                f"warm_query_workers must be >= 0, got {self.warm_query_workers}",
                setting="warm_query_workers",
            )
        if self.max_concurrent_queries < 0:
            raise ConfigError(
                "max_concurrent_queries must be >= 0 (0 turns analyst queries off)",
                setting="max_concurrent_queries",
            )
        for name in ("query_limits", "quarantine_retention", "archive_retention"):
            kind = QueryLimits if name == "query_limits" else Retention
            if not isinstance(getattr(self, name), kind):
                raise ConfigError(
                    f"{name} must be a {kind.__name__}, got {type(getattr(self, name)).__name__}",
                    setting=name,
                )

    def _check_caps(self) -> None:
        """Refuse a cap below 1, or above the bound the request schemas enforce."""
        for name in (
            "max_upload_bytes",
            "max_body_bytes",
            "max_score_ids",
            "max_outcomes",
            "max_pending_uploads",
            "audit_queue_limit",
            "max_query_response_bytes",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(
                    f"{name} must be >= 1 (a whole number), got {value!r}", setting=name
                )
        for name, bound in (("max_score_ids", MAX_SCORE_IDS), ("max_outcomes", MAX_OUTCOMES)):
            if getattr(self, name) > bound:
                raise ConfigError(
                    f"{name} may be at most {bound:,} (the request schema's bound); got "
                    f"{getattr(self, name):,}",
                    setting=name,
                )
