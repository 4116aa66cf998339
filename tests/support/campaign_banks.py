"""A bank ready for campaigns without training models: a real store with customers, a feature
snapshot and score files drawn from a seed, and two campaign declarations that overlap.

The planner reads exactly these inputs from a trained run (features/<date>/features.parquet,
scores/*.parquet, the store's customers); the model-trained path is covered by the demo, CLI and
API tests.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from datetime import date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from fusion.campaigns.book import create_campaign
from fusion.campaigns.declaration import Campaign, load_declaration
from fusion.pipeline.bank import Bank
from fusion.runfolder import RunFolder
from fusion.store import Store, StoreConfig
from matcher.keyring import Keyring

__all__ = [
    "SNAPSHOT",
    "T0",
    "campaign_bank",
    "declaration",
    "killed_mid_commit",
    "open_campaign_bank",
]

SNAPSHOT = date(2026, 9, 30)
T0 = datetime(2026, 10, 1, 9, 0)


def declaration(name: str, **changes: Any) -> Campaign:
    """Return a valid declaration named `name`; `changes` replace top-level fields."""
    document: dict[str, Any] = {
        "name": name,
        "priority": 1,
        "objective": {"event": "converted", "value": 100.0, "cost_per_contact": 1.0},
        "audience": {"source": "model", "model": "acquisition", "deciles": [1, 2, 3, 4, 5]},
        "channel": {"kind": "call_centre", "capacity_per_branch_per_day": 50},
        "stages": {
            "whitelist": [1_000_001, 1_000_002],
            "pilot_share": 0.1,
            "ab": {"baseline_rate": 0.05, "minimum_detectable_effect": 0.05},
        },
    }
    document.update(changes)
    return load_declaration(document)


def campaign_bank(root: Path, extensions: Path, *, n: int = 5_000, seed: int = 3) -> RunFolder:
    """Return a run folder whose store holds `n` customers, with features and scores on disk."""
    folder = RunFolder(root).ensure()
    Keyring.init(folder.bank_keys, role="bank")
    rng = np.random.default_rng(seed)
    ids = np.arange(1_000_001, 1_000_001 + n, dtype=np.int64)
    branches = np.array([f"B{b:03d}" for b in rng.integers(1, 9, n)])
    customers = pl.DataFrame(
        {
            "customer_id": ids,
            "branch_id": branches,
            "aum_month_avg": rng.lognormal(10, 1.2, n),
            "mb_registered": (rng.random(n) < 0.3).astype(np.int8),
        }
    )
    snapshot = folder.features / SNAPSHOT.isoformat()
    snapshot.mkdir(parents=True)
    customers.write_parquet(snapshot / "features.parquet")
    (snapshot / "manifest.json").write_text(json.dumps({"snapshot_date": SNAPSHOT.isoformat()}))
    _scores(folder.scores, customers, rng)
    with open_campaign_bank(folder, extensions) as bank:
        bank.store.insert_frame(
            "customers",
            customers.select("customer_id", "branch_id").with_columns(
                pl.lit(SNAPSHOT).alias("snapshot_date")
            ),
        )
    return folder


def _scores(out: Path, customers: pl.DataFrame, rng: np.random.Generator) -> None:
    """Write acquisition, rescue and uplift score files like `fusion score` does."""
    out.mkdir(parents=True, exist_ok=True)
    base = customers.filter(pl.col("mb_registered") == 0).select("customer_id", "branch_id")
    score = rng.random(base.height)
    decile = 10 - np.floor(pl.Series(score).rank("ordinal").to_numpy() * 10 / (len(score) + 1))
    base.with_columns(
        pl.Series("score", score), pl.Series("decile", decile.astype(np.int8))
    ).write_parquet(out / "acquisition.parquet")
    pool = base.sample(fraction=0.5, seed=1).sort("customer_id")
    pool.with_columns(
        pl.Series("score", rng.random(pool.height)), pl.lit(1, dtype=pl.Int8).alias("decile")
    ).write_parquet(out / "rescue.parquet")
    base.with_columns(
        pl.Series("predicted_uplift", rng.normal(0.02, 0.02, base.height)),
        pl.lit(5, dtype=pl.Int8).alias("decile"),
        pl.lit("uplift").alias("model"),
    ).write_parquet(out / "uplift.parquet")


def open_campaign_bank(folder: RunFolder, extensions: Path) -> _BankContext:
    """Return a context opening the folder's bank (keyring and store) for writing."""
    return _BankContext(folder, extensions)


class _BankContext:
    def __init__(self, folder: RunFolder, extensions: Path) -> None:
        self.folder = folder
        self.extensions = extensions
        self.store: Store | None = None

    def __enter__(self) -> Bank:
        keyring = Keyring.open(self.folder.bank_keys)
        config = StoreConfig(self.folder.store, threads=2, extension_directory=self.extensions)
        self.store = Store.open(config, key=keyring.store_key())
        return Bank(self.folder, keyring, self.store)

    def __exit__(self, *exc: object) -> None:
        assert self.store is not None
        self.store.close()


def declare(bank: Bank, campaign: Campaign, *, salt: bytes | None = None) -> None:
    """Store the campaign with a pinned salt (tests compare assignments across stores)."""
    create_campaign(bank.store, campaign, actor="test", now=T0,
                    salt=salt or campaign.name.encode().ljust(32, b"."))  # fmt: skip


_ROOT = Path(__file__).resolve().parents[2]
_KILLER = textwrap.dedent(
    """
    import os, signal, sys
    from datetime import date, datetime
    from pathlib import Path
    import fusion.store
    from fusion.pipeline.campaigns import deliver_campaign, plan_window
    from fusion.runfolder import RunFolder
    from tests.support.campaign_banks import open_campaign_bank

    folder, ext = RunFolder(Path(sys.argv[1])), Path(sys.argv[2])
    def die(self, con):
        os.kill(os.getpid(), signal.SIGKILL)
    fusion.store.Store._commit = die
    with open_campaign_bank(folder, ext) as bank:
        {call}
    """
)


def killed_mid_commit(folder: RunFolder, extensions: Path, call: str) -> None:
    """Run `call` (a pipeline call on `bank`) in a subprocess SIGKILLed as it commits."""
    script = _KILLER.replace("{call}", call)
    env = os.environ | {"PYTHONPATH": str(_ROOT)}
    killed = subprocess.run(
        [sys.executable, "-c", script, str(folder.root), str(extensions)],
        env=env,
        capture_output=True,
        cwd=_ROOT,
    )
    assert killed.returncode == -9, killed.stderr.decode()[-2000:]
