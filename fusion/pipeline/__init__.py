"""The end-to-end steps the CLI, the demo, the API and the benchmarks share.

Each step takes typed arguments and returns a typed result; none prints or reads the
environment. In the order a run takes them:

    bank            open_bank (run folder + keyring + store), deliver_to_inbox, ingest_batches,
                    ledger_counts, publish_snapshots
    matching        match_salted (optionally keyed by bucket on an Engine), request_oprf,
                    finish_oprf, match_oprf_locally (demo: the run's own vendor answers),
                    match_report
    feature_tables  build_snapshot_features (here or by bucket on an Engine), read_features
    modelling       train_models, score_and_list (optionally on an Engine), model_report
    campaigns       declare_campaign, plan_window, promote_campaign, deliver_campaign,
                    load_outcome_file, campaign_readout, close
    journeys        journey_profiles, run_journey_days (the daily engine over days),
                    journey_dry_run, journey_readout (with the opt-outs per arm)
    monitoring      monitor_snapshot (score and column stability, vendor drift, realised
                    performance), write_monitoring, latest_monitoring
    cycle           run_cycle: ingest -> match -> features -> score -> monitor -> lists for one
                    snapshot, idempotent, under the run's cycle lock

Import each step from its module (`from fusion.pipeline.matching import match_salted`): the
package imports none of them, so a caller that opens the bank does not load Dask, xgboost and
matplotlib with it. Ground truth of a synthetic world is never read here: the demo (labs)
reads it and passes the true uplift to `train_models`.
"""

__all__ = [
    "bank",
    "campaigns",
    "cycle",
    "feature_tables",
    "journeys",
    "matching",
    "modelling",
    "monitoring",
]
