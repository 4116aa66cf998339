"""A vendor's stored count of OPRF evaluations for one epoch: a JSON file beside its keyring.

`matcher.keyring.Keyring.oprf_budget` holds the file locked while `matcher.oprf_exchange`
reads the count, checks a request against it (`matcher.oprf_match.EvaluationBudget`) and
writes it back.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from contracts.errors import KeyringError
from matcher.atomic import write_atomic

__all__ = ["OprfBudgetFile"]


class OprfBudgetFile:
    """A vendor's stored count of OPRF evaluations for one epoch (`Keyring.oprf_budget`)."""

    __slots__ = ("path",)

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> dict[str, Any] | None:
        """Return the stored fields, or None if the epoch has answered nothing yet."""
        try:
            data = json.loads(self.path.read_bytes())
        except FileNotFoundError:
            return None
        except (ValueError, UnicodeDecodeError) as exc:
            raise KeyringError(
                f"{self.path} is not valid JSON ({exc}); restore it from the keyring backup: "
                "without it the epoch's evaluation count is lost",
                path=str(self.path),
            ) from None
        if not isinstance(data, dict):
            raise KeyringError(f"{self.path} does not hold a budget object", path=str(self.path))
        return data

    def write(self, fields: dict[str, Any]) -> None:
        """Replace the stored fields (atomic, 0600, fsynced)."""
        write_atomic(
            self.path, json.dumps(fields, sort_keys=True).encode("utf-8") + b"\n", mode=0o600
        )
