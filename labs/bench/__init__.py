"""Benchmarks behind `make bench`: each figure is measured beside a baseline in the same run.

Speed is never asserted by unit tests; the targets here are checked and reported. One module per
area, each a set of `bench_*` generators that take a scratch folder and yield `Figure`s:

- `crypto`: keyed hashing; opening a sealed batch.
- `ingest`: the vendor batch's contract check; ingest stage by stage.
- `matching`: the salted PSI join; OPRF PSI with payload against openmined-psi.
- `models`: the feature build; training; batch and single scoring.
- `api`: the scoring API under concurrent clients.
- `campaigns`: screen + arbitrate + assign 1M customers x 5 campaigns; outcome events loaded.
- `journeys`: one daily journey run over 1M customers, 100 days of events, 5 strategies.
- `scale`: the scale curve, in process and on a LocalCluster.
- `world`: the synthetic world's generation.

`runner` runs the chosen ones, writes `<out>/latest.json` and tabulates the figures; `figures`
holds the `Figure` type and the timer; `inputs` the synthetic inputs the benches share;
`run_folder` the demo run the API bench serves. Measured figures live in the README's tables and
in the results folder, never here.
"""

from labs.bench.api import bench_api
from labs.bench.campaigns import bench_campaign_plan, bench_outcome_events
from labs.bench.crypto import bench_envelope, bench_keyed_hash
from labs.bench.figures import Benchmark, Figure
from labs.bench.ingest import bench_contracts, bench_ingest
from labs.bench.inputs import synthetic_batch
from labs.bench.journeys import bench_journey_day
from labs.bench.matching import bench_oprf, bench_psi
from labs.bench.models import bench_features, bench_models
from labs.bench.query import bench_query
from labs.bench.run_folder import demo_run_folder
from labs.bench.runner import BENCHMARKS, figures_table, run_benchmarks
from labs.bench.scale import (
    SCALE_ENGINES,
    SCALE_LINEAR_SLACK,
    SCALE_PEAK_BUDGET_GB,
    SCALE_SIZES,
    bench_scale,
    scale_sizes,
)
from labs.bench.world import bench_world

__all__ = [
    "BENCHMARKS",
    "SCALE_ENGINES",
    "SCALE_LINEAR_SLACK",
    "SCALE_PEAK_BUDGET_GB",
    "SCALE_SIZES",
    "Benchmark",
    "Figure",
    "bench_api",
    "bench_campaign_plan",
    "bench_contracts",
    "bench_envelope",
    "bench_features",
    "bench_ingest",
    "bench_journey_day",
    "bench_keyed_hash",
    "bench_models",
    "bench_oprf",
    "bench_outcome_events",
    "bench_psi",
    "bench_query",
    "bench_scale",
    "bench_world",
    "demo_run_folder",
    "figures_table",
    "run_benchmarks",
    "scale_sizes",
    "synthetic_batch",
]
