"""ApiSettings refuses values outside their bounds, with a message naming the setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from api import ApiSettings
from contracts.errors import ConfigError


@pytest.mark.parametrize(
    ("setting", "value", "message"),
    [
        ("max_body_bytes", 0, "max_body_bytes must be >= 1"),
        ("max_score_ids", 1_001, "at most 1,000"),
        ("max_outcomes", 10_001, "at most 10,000"),
        ("max_concurrent_queries", -1, "0 turns analyst queries off"),
        ("audit_queue_limit", 0, "audit_queue_limit must be >= 1"),
        ("audit_outage_seconds", 0, "audit_outage_seconds must be > 0"),
    ],
)
def test_settings_outside_their_bounds_are_refused(setting: str, value: int, message: str):
    with pytest.raises(ConfigError, match=message):
        ApiSettings(run=Path("r"), **{setting: value})  # type: ignore[arg-type]


def test_non_loopback_host_is_refused_unless_asked():
    with pytest.raises(ConfigError, match="loopback"):
        ApiSettings(run=Path("r"), host="0.0.0.0")
