"""Journeys: the new customer's first 100 days, run by declared strategies.

Modules, in the order a day meets them:

    strategy    a strategy as declared: a flow of entry / condition / wait / action / exit
                nodes (TOML or JSON), validated
    book        strategies in the store: create, read, stages and their gates, history
    events      the event log in: milestones, log-ins, answers to touches, checked row by row
    lifecycle   milestones and stage per customer and day, the cohort funnel and retention
    flow        one day's walk of the customers through the flows, over whole columns
    engine      the daily run (one transaction per day, reruns are no-ops) and the dry run
    readout     per strategy, node and arm: goal completion, exposure, clicks, stage
                conversion, retention and opt-outs, treatment against control

The campaign loop is shared, not copied: screening (suppressions, complaints, frequency cap,
cooling off over the one `contacts` table), keyed arms (`assignment.assign_arms`), the book
in the store (`staging`), stages and gate checks (`stages.advance`, `GateCheck`), reading a
declaration (`declaration.read_document`), the event rows' checks (`outcomes`), statistics
(`compare`, `sample_ratio`, `sample_size`) and the reports' page and plot helpers.
"""

__all__ = ["book", "engine", "events", "flow", "lifecycle", "readout", "strategy"]
