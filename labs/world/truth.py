"""The world's ground truth: everyone's personas, the true probabilities and the true matches."""

from __future__ import annotations

import numpy as np
import polars as pl

from labs.world.bank import Ids
from labs.world.campaign import Outcomes
from labs.world.files import WorldFiles
from labs.world.personas import PERSONAS, People
from labs.world.vendor import Vendor

__all__ = ["truth_frames"]


def truth_frames(
    people: People, ids: Ids, vendor: Vendor, outcomes: Outcomes
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
    matched = np.flatnonzero(vendor.matched)
    intersection = pl.DataFrame(
        {"customer_id": ids.customer_id[matched], "vendor_row": vendor.vendor_row[matched]},
        schema={"customer_id": pl.Int64, "vendor_row": pl.Int64},
    )
    return {
        WorldFiles.PERSONAS: personas,
        WorldFiles.PROPENSITY: propensity,
        WorldFiles.INTERSECTION: intersection,
    }
