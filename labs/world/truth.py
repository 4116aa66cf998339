"""The world's ground truth: everyone's personas, the true probabilities and the true matches.

The true matches (`truth/intersection.parquet`) are the best-identifier intersection: per bank
customer, the vendor row its highest-priority identifier links it to (mobile number, then ID
number, then device id), from the world's own values, not from any product code. A value links
when it is usable on both sides (a valid phone, an ID number with its true check character, a
device id that is not all zeros) and held by one customer and one vendor row only; a link of a
later type counts only when neither its customer nor its row is linked by an earlier one. The
file says which type linked each customer and whether the row is the customer's own person
(a recycled old number links someone else).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from contracts.schemas import IDENTIFIER_TYPES
from labs.world.bank import Ids
from labs.world.campaign import Outcomes
from labs.world.files import WorldFiles
from labs.world.identifiers import Devices, true_id_numbers
from labs.world.personas import PERSONAS, People
from labs.world.phones import BankPhones
from labs.world.vendor import Vendor

__all__ = ["Identifiers", "best_identifier_links", "truth_frames"]


@dataclass(frozen=True)
class Identifiers:
    """What the bank gives of its customers beside the ids: phones and devices as drawn."""

    phones: BankPhones
    devices: Devices


def best_identifier_links(
    bank: Mapping[str, pl.Series],
    vendor: Mapping[str, pl.Series],
    priority: Sequence[str] = IDENTIFIER_TYPES,
) -> pl.DataFrame:
    """Return row (bank), vendor_row and id_type of every link kept by the priority rule.

    Args:
        bank: identifier type -> each customer's usable value (null: none), in bank row order.
        vendor: identifier type -> each vendor row's usable value (null: none).
        priority: identifier types, highest first.
    """
    schema = {"row": pl.Int64, "vendor_row": pl.Int64, "id_type": pl.String}
    taken = pl.DataFrame(schema=schema)
    for kind in priority:
        sides = [
            pl.DataFrame({"v": values})
            .with_row_index(name)
            .filter(pl.col("v").is_not_null())
            .filter(~pl.col("v").is_duplicated())
            .with_columns(pl.col(name).cast(pl.Int64))
            for name, values in (("row", bank[kind]), ("vendor_row", vendor[kind]))
        ]
        links = (
            sides[0]
            .join(sides[1], on="v")
            .join(taken, on="row", how="anti")
            .join(taken, on="vendor_row", how="anti")
            .select("row", "vendor_row", id_type=pl.lit(kind))
        )
        taken = pl.concat([taken, links])
    return taken.sort("row")


def truth_frames(
    people: People, ids: Ids, vendor: Vendor, outcomes: Outcomes, identifiers: Identifiers
) -> dict[str, pl.DataFrame]:
    """Return the ground-truth frames by relative path."""
    names = pl.Series(PERSONAS)
    only = np.flatnonzero(vendor.customer < 0)
    vendor_persona, vendor_second = vendor.persona[only], vendor.second[only]
    customer_id = pl.Series("customer_id", ids.customer_id, dtype=pl.Int64)
    bank_vendor_row = pl.Series("vendor_row", vendor.vendor_row).replace(-1, None)
    personas = pl.concat(
        [
            pl.DataFrame(
                [
                    customer_id,
                    bank_vendor_row,
                    names.gather(people.persona).alias("persona"),
                    names.gather(people.second)
                    .alias("second_persona")
                    .scatter(np.flatnonzero(people.second == people.persona), None),
                    pl.Series("fintech", people.fintech),
                ]
            ),
            pl.DataFrame(
                [
                    pl.repeat(None, len(only), dtype=pl.Int64, eager=True).alias("customer_id"),
                    pl.Series("vendor_row", only, dtype=pl.Int64),
                    names.gather(vendor_persona).alias("persona"),
                    names.gather(vendor_second)
                    .alias("second_persona")
                    .scatter(np.flatnonzero(vendor_second == vendor_persona), None),
                    pl.Series("fintech", vendor.fintech[only]),
                ]
            ),
        ]
    )
    null = np.flatnonzero(outcomes.registered)
    propensity = pl.DataFrame(
        [
            customer_id,
            pl.Series("mb_registered", outcomes.registered),
            pl.Series("p_open", outcomes.p_open).scatter(null, None),
            pl.Series("p_response_control", outcomes.p_control).scatter(null, None),
            pl.Series("p_response_treatment", outcomes.p_treatment).scatter(null, None),
            pl.Series("uplift", outcomes.p_treatment - outcomes.p_control).scatter(null, None),
        ]
    )
    intersection = _intersection(ids, vendor, identifiers)
    return {
        WorldFiles.PERSONAS: personas,
        WorldFiles.PROPENSITY: propensity,
        WorldFiles.INTERSECTION: intersection,
    }


def _intersection(ids: Ids, vendor: Vendor, identifiers: Identifiers) -> pl.DataFrame:
    """Return customer_id, vendor_row, id_type and same_person of the true best matches."""
    phones = identifiers.phones
    bank = {
        "mobile": pl.Series(phones.given).scatter(np.flatnonzero(~phones.valid), None),
        "id_number": true_id_numbers(ids).scatter(np.flatnonzero(ids.bad), None),
        "device_id": identifiers.devices.usable(),
    }
    none = pl.Series([None] * vendor.n, dtype=pl.String)
    devices = vendor.device_id if vendor.device_id is not None else none
    users = {
        "mobile": pl.Series(vendor.phone),
        "id_number": vendor.id_number if vendor.id_number is not None else none,
        "device_id": devices.set(devices == "0" * 32, None),
    }
    links = best_identifier_links(bank, users)
    rows = links["row"].to_numpy()
    return pl.DataFrame(
        {
            "customer_id": ids.customer_id[rows],
            "vendor_row": links["vendor_row"],
            "id_type": links["id_type"],
            "same_person": vendor.vendor_row[rows] == links["vendor_row"].to_numpy(),
        },
        schema={
            "customer_id": pl.Int64,
            "vendor_row": pl.Int64,
            "id_type": pl.String,
            "same_person": pl.Boolean,
        },
    )
