"""Read a service's request trail with SQL, as the tests' audit checks do."""

from __future__ import annotations

from typing import Any

import duckdb

from api.service import Service
from fusion.audit_trail import read_audit_trail


class AuditTrailQuery:
    """SQL over a service's request trail, read afresh at each `execute`, as table `audit_log`."""

    def __init__(self, service: Service) -> None:
        self._folder = service.folder.audit_trail
        self._key = service.keyring.audit_trail_key()

    def execute(self, sql: str, params: list[Any] | None = None) -> duckdb.DuckDBPyConnection:
        """Return the result of `sql` over the trail as written so far."""
        con = duckdb.connect()
        con.register("audit_log", read_audit_trail(self._folder, self._key).records.to_arrow())
        return con.execute(sql, params or [])
