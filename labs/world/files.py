"""Where a world's files live (`WorldFiles`), how they are opened and how they are written."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from labs.world.errors import WorldError

__all__ = ["PARQUET_OPTIONS", "WorldFiles", "file_sha256", "load_world", "write_parquet"]

PARQUET_OPTIONS: dict[str, Any] = {
    "compression": "zstd",
    "compression_level": 1,  # higher levels buy little on bit-packed ids and cost more time
    "write_statistics": False,
    "use_dictionary": True,
}


@dataclass(frozen=True)
class WorldFiles:
    """Paths of a world's files under its root folder."""

    root: Path

    CUSTOMERS = "bank/customers.parquet"
    CAMPAIGN = "bank/campaign.parquet"
    VENDOR_USERS = "vendor/users.parquet"
    PERSONAS = "truth/personas.parquet"
    PROPENSITY = "truth/propensity.parquet"
    INTERSECTION = "truth/intersection.parquet"
    OUTCOMES = "bank/outcomes.parquet"  # the scenarios' labels (labs.world.scenarios)
    SCENARIOS = "truth/scenarios.parquet"  # their true probabilities
    MANIFEST = "world.json"
    PARQUET = (
        CUSTOMERS, CAMPAIGN, VENDOR_USERS, PERSONAS, PROPENSITY, INTERSECTION, OUTCOMES, SCENARIOS,
    )  # fmt: skip

    @property
    def customers(self) -> Path:
        return self.root / self.CUSTOMERS

    @property
    def campaign(self) -> Path:
        return self.root / self.CAMPAIGN

    @property
    def vendor_users(self) -> Path:
        return self.root / self.VENDOR_USERS

    @property
    def personas(self) -> Path:
        return self.root / self.PERSONAS

    @property
    def propensity(self) -> Path:
        return self.root / self.PROPENSITY

    @property
    def intersection(self) -> Path:
        return self.root / self.INTERSECTION

    @property
    def outcomes(self) -> Path:
        return self.root / self.OUTCOMES

    @property
    def scenarios(self) -> Path:
        return self.root / self.SCENARIOS

    @property
    def manifest(self) -> Path:
        return self.root / self.MANIFEST

    def summary(self) -> dict[str, Any]:
        """Return the summary stored in world.json."""
        document: dict[str, Any] = json.loads(self.manifest.read_text())
        return dict(document["summary"])


def load_world(out: Path) -> WorldFiles:
    """Return the files of the world generated under `out`, checking that all of them exist."""
    files = WorldFiles(Path(out))
    missing = [
        p for p in (*WorldFiles.PARQUET, WorldFiles.MANIFEST) if not (files.root / p).exists()
    ]
    if missing:
        raise WorldError(
            f"no complete synthetic world under {files.root}: missing {', '.join(missing)}; "
            f"generate one with `fusion world --out {files.root}`"
        )
    return files


def write_parquet(table: pa.Table, path: Path) -> str:
    """Return the sha256 of the Parquet file written from `table` with the fixed options."""
    pq.write_table(table, path, **PARQUET_OPTIONS)
    return file_sha256(path)


def file_sha256(path: Path) -> str:
    """Return the hex sha256 of a file, read in 8 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(8 << 20):
            digest.update(block)
    return digest.hexdigest()
