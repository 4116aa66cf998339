"""Where a run keeps its files: one folder (ignored by git) for keys, batches, the store, reports.

<run>/world/               the synthetic world (labs only)
<run>/keys/bank/           the bank's keyring (0700)
<run>/keys/vendor/         the vendor's keyring (0700; on the vendor's machine in real life)
<run>/vendor/outbox/       sealed batches the vendor tool wrote
<run>/vendor/oprf/         the vendor's OPRF answers (files it sends the bank)
<run>/bank/oprf/           the bank's OPRF requests (files it sends the vendor)
<run>/bank/inbox/ ...      the ingest worker's inbox, quarantine, archive and work folders
<run>/bank/fusion.duckdb   the encrypted store
<run>/bank/audit/          the service's request trail: sealed segments, one writer each (0700)
<run>/snapshots/           published read-only copies (head office, one per branch)
<run>/features/<date>/     model tables (Parquet, tag CSR, manifest)
<run>/models/              the model registry (versions, CURRENT pointers)
<run>/scores/              the base scored by the current acquisition model (Parquet)
<run>/lists/<list>/        target lists per branch (CSV and Parquet)
<run>/reports/             HTML and Parquet reports
<run>/jobs/                bucketed jobs' partitions while they run (0700); keying and OPRF jobs
                           hold identifiers, so a writer removes what a killed job left
"""

from __future__ import annotations

import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

from contracts.schemas import MatchMode
from fusion.ingest import Inbox

__all__ = ["IDENTIFYING_JOBS", "RunFolder"]

# Jobs whose partitions hold identifiers (phones, their keys or OPRF answers) while they run.
IDENTIFYING_JOBS = ("keys", "oprf")


@dataclass(frozen=True)
class RunFolder:
    """The paths of one run folder; creating them is the caller's choice (`ensure`)."""

    root: Path

    @property
    def jobs(self) -> Path:
        return self.root / "jobs"

    def job_root(self) -> Path:
        """Return `jobs/`, made (or tightened) to 0700: only the bank's account reads jobs."""
        self.jobs.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.jobs.chmod(0o700)  # also when an older run made it with the umask's mode
        return self.jobs

    def new_job(self, kind: str) -> Path:
        """Return a fresh job folder path `jobs/<kind>-<random>` under a 0700 `jobs/` folder."""
        return self.job_root() / f"{kind}-{uuid.uuid4().hex[:12]}"

    def remove_identifying_jobs(self) -> list[Path]:
        """Remove what killed keying or OPRF jobs left in `jobs/`; return the folders removed.

        Only the store's single writer calls this: while it holds the store no such job runs.
        """
        left = [
            path
            for kind in IDENTIFYING_JOBS
            for path in sorted(self.jobs.glob(f"{kind}-*"))
            if path.is_dir()
        ]
        for path in left:
            shutil.rmtree(path, ignore_errors=True)
        return left

    @property
    def world(self) -> Path:
        return self.root / "world"

    @property
    def bank_keys(self) -> Path:
        return self.root / "keys" / "bank"

    @property
    def vendor_keys(self) -> Path:
        return self.root / "keys" / "vendor"

    @property
    def outbox(self) -> Path:
        return self.root / "vendor" / "outbox"

    @property
    def vendor_oprf(self) -> Path:
        return self.root / "vendor" / MatchMode.OPRF.value

    @property
    def bank_oprf(self) -> Path:
        return self.root / "bank" / MatchMode.OPRF.value

    @property
    def inbox(self) -> Inbox:
        return Inbox(self.root / "bank")

    @property
    def store(self) -> Path:
        return self.root / "bank" / "fusion.duckdb"

    @property
    def audit_trail(self) -> Path:
        return self.root / "bank" / "audit"

    @property
    def snapshots(self) -> Path:
        return self.root / "snapshots"

    @property
    def features(self) -> Path:
        return self.root / "features"

    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def scores(self) -> Path:
        return self.root / "scores"

    @property
    def lists(self) -> Path:
        return self.root / "lists"

    @property
    def reports(self) -> Path:
        return self.root / "reports"

    @property
    def deliveries(self) -> Path:
        """Campaign delivery files: <campaign>/v<version>/<channel>/<branch>.csv|parquet."""
        return self.root / "deliveries"

    def ensure(self) -> RunFolder:
        for folder in (self.root, self.outbox, self.snapshots, self.reports, self.root / "keys"):
            folder.mkdir(parents=True, exist_ok=True)
        (self.root / "keys").chmod(0o700)
        self.inbox.ensure()
        return self
