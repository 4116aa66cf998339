"""The data dictionary describes every column a contract or the bank extract brings analysts."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import polars as pl
import pytest

from contracts.dictionary import COLUMNS, VIEWS, describe_column, describe_view
from contracts.errors import ConfigError
from contracts.schemas import BANK_EXTRACT, VENDOR_BATCH
from labs.world.config import WorldConfig
from labs.world.files import WorldFiles
from labs.world.generate import generate_world

NEVER_SHOWN = {"key", "phone", "id_number", "device_id"}  # raw identifiers: never stored


def test_every_contract_column_is_described():
    columns = {*VENDOR_BATCH.columns, *BANK_EXTRACT.columns} - NEVER_SHOWN
    assert not sorted(columns - set(COLUMNS))


@pytest.mark.slow  # generating even a small world takes a few seconds
def test_every_column_of_the_worlds_extract_is_described(tmp_path: Path):
    generate_world(WorldConfig(customers=200, seed=1, snapshot_date=date(2026, 9, 30)), tmp_path)
    extract = pl.read_parquet_schema(WorldFiles(tmp_path).customers)
    assert not sorted(set(extract) - NEVER_SHOWN - set(COLUMNS))


def test_descriptions_are_sentences():
    for text in [*COLUMNS.values(), *VIEWS.values()]:
        assert text[0].isupper() or text[0] in "`", text
        assert text.endswith("."), text


def test_an_undescribed_name_raises_and_says_where_to_add_it():
    with pytest.raises(ConfigError, match=r"contracts/dictionary\.py"):
        describe_column("shoe_size")
    with pytest.raises(ConfigError, match="VIEWS"):
        describe_view("secrets")
