"""Bucketed jobs, run in this process or on a Dask cluster: keying, PSI joins, features, scoring.

Keys are 32-byte keyed hashes, so their first bits spread rows evenly: a job cuts its rows into
buckets by the key's first byte(s) or, before there is a key, into row chunks, and runs one pure
task per bucket or chunk. A task reads Parquet files and writes Parquet files under the job's
folder (any fsspec location), so a worker holds one bucket at a time and a large run never holds
a whole table in memory. Each job gives the same rows on every engine, in the same order (bucket,
then input order), equal to the single-process functions it is built from.

    runner          where tasks run: `Engine`, `InProcessEngine`, `ClusterEngine`, `parse_cluster`
    tls             the client's certificates for the bank's scheduler (`TlsFiles`)
    worker_secrets  secrets shipped once per worker, named in tasks by a `SecretRef`
    files           Parquet read and written at any fsspec location, streamed in row chunks
    partitions      rows by key bucket (`bucket_of`, `partition_by_key`, `Partitions`, `Parts`)
    keying          `key_customers`: a customer extract's match keys, by bucket
    psi_join        `join_keys`: the salted PSI join, bucket by bucket
    features        `build_feature_buckets`: the point-in-time feature build by customer bucket
    scoring         `score_features`: batch scoring by row chunk or feature bucket
    oprf            `oprf_blind` / `oprf_finalize`: the bank's OPRF steps by row chunk

docs/cluster.md says how to run a cluster inside the bank.
"""

from fusion.jobs.features import FEATURE_BUCKETS, FeatureBuckets, build_feature_buckets
from fusion.jobs.keying import KeyedCustomers, key_customers
from fusion.jobs.oprf import OPRF_CHUNK_ROWS, oprf_blind, oprf_finalize, oprf_row_keys
from fusion.jobs.partitions import (
    DEFAULT_BUCKETS,
    Partitions,
    Parts,
    bucket_of,
    partition_by_key,
)
from fusion.jobs.psi_join import join_keys
from fusion.jobs.runner import ClusterEngine, Engine, InProcessEngine, parse_cluster
from fusion.jobs.scoring import score_features
from fusion.jobs.tls import TlsFiles
from fusion.jobs.worker_secrets import SecretRef
from fusion.progress import progress_bar
from matcher.oprf_match import BLIND_BLOCK_ROWS, block_seed, replay_blinds

__all__ = [
    "BLIND_BLOCK_ROWS",
    "DEFAULT_BUCKETS",
    "FEATURE_BUCKETS",
    "OPRF_CHUNK_ROWS",
    "ClusterEngine",
    "Engine",
    "FeatureBuckets",
    "InProcessEngine",
    "KeyedCustomers",
    "Partitions",
    "Parts",
    "SecretRef",
    "TlsFiles",
    "block_seed",
    "bucket_of",
    "build_feature_buckets",
    "join_keys",
    "key_customers",
    "oprf_blind",
    "oprf_finalize",
    "oprf_row_keys",
    "parse_cluster",
    "partition_by_key",
    "progress_bar",
    "replay_blinds",
    "score_features",
]
