"""Fixtures the matcher tests share: a paired bank and vendor with real keyrings per test."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.sealing import Parties, make_parties


@pytest.fixture
def parties(tmp_path: Path) -> Parties:
    return make_parties(tmp_path)
