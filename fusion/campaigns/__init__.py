"""Campaigns: declare -> screen -> arbitrate -> assign (with a hold-out) -> stage -> deliver ->
outcome events -> readout.

Modules, in the order a campaign meets them:

    declaration   the typed declaration (TOML or JSON) and its validation
    book          campaigns in the store: create, read, stage and its history
    staging       the store side of a book, shared with journey strategies: declarations
                  with their salt and version, stage changes with their history
    audience      a declaration's audience resolved to candidate customers
    screening     suppression lists, complaints, frequency cap, cooling off, holders
    arbitration   one campaign per customer per window; channel capacity per branch and day
    assignment    stage entrants and the treatment/control arm, keyed by the campaign's salt
    planning      one plan: the steps above over whole columns, written in one transaction
    stages        promotion through whitelist -> pilot -> ab -> full -> closed, gate by gate
    delivery      versioned per-channel, per-branch files of the treatment arm
    outcomes      funnel events in, checked row by row
    statistics    power and sample size, sample-ratio mismatch, two-proportion comparisons
    adjustment    CUPED / CUPAC: differences adjusted by covariates fixed before assignment
    sequential    early looks that keep their error rate: the mSPRT's always-valid p-value
    metrics       per-customer amounts after a campaign, with their pre-period
    readout       every arm against its control, by branch, decile and segment
    ab_test       the readout's A/B test: planned size, decision, power, sample-ratio check

Frames passed between the steps (polars; one row per campaign x customer):

    candidates    campaign_id str, customer_id i64, branch_id str, decile i8 (score decile of
                  the stratum, 1 = best; null when no score), expected_uplift f64
    screened      the same columns
    arbitrated    + expected_value f64 (expected_uplift x value - cost per contact)
    assigned      + stratum str, arm str ("treatment" | "control")
"""

__all__ = [
    "ab_test",
    "adjustment",
    "arbitration",
    "assignment",
    "audience",
    "book",
    "declaration",
    "delivery",
    "metrics",
    "outcomes",
    "planning",
    "readout",
    "screening",
    "sequential",
    "stages",
    "staging",
    "statistics",
]
