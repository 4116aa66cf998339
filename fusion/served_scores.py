"""Answering score requests: the batch's stored scores of the CURRENT version, or a live score.

The batch (`fusion score`: `score_base` into `<run>/scores/<model>.parquet`) already scored the
population. A request for a customer it scored is answered from those stored rows, an index
lookup, while they hold for that customer:

    the batch was scored by the version CURRENT names now       (a promotion or a rollback
                                                                 takes effect at the next
                                                                 request, or within a second
                                                                 if another process made it)
    the customer's features are no newer than the batch's       (no newer feature snapshot
                                                                 holds the customer, and the
                                                                 batch's own was not rebuilt)

Every other customer the newest feature table holds is scored live from it: those with newer
features, and those the batch did not score (outside its population). Each answer names the
model version and says which it was (`source`: "batch" with the batch's `scored_at`, or "live").

Whether the stored rows hold is checked cheaply: the CURRENT pointer is read and the score file
and the newest feature folder are stat-ed (`ServingState`). A lookup answered on the event loop
reuses that check for up to `STATE_MAX_AGE_S` (one second): under load the few system calls cost
far more than they do alone, as each hands the interpreter lock to another thread. So a change
made by another process (a `fusion models promote` or `fusion features` run) is served within a
second; the service's own promotions and rollbacks call `ServingScorer.refresh`, and the next
request sees them. A request that needs live work or a reload always checks afresh. When
anything changed, the index or the live scorer is rebuilt once, under a lock, and requests go on
with the new one.

Reason codes are exact SHAP values, the costly part of scoring, so the batch computes them only
for the rows that go on lists (`REASON_DECILES`). A stored row without them gets them on its
first request - from the same feature snapshot the batch read, so they are the codes the batch
would have written - and keeps them for later requests. They are kept as three int16 codes a
row into one list of texts, so the index costs the same whichever rows have them: a tuple of
strings a row took ~100 MB at a million stored rows when loaded (30% with reasons), and would
have grown to ~300 bytes a row as requests filled them in; the codes take 6 MB.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl

from contracts.errors import ModelError
from fusion.features import FeatureSet
from fusion.registry import Registry
from fusion.runfolder import RunFolder
from fusion.scoring import REASON_COLUMNS, Scorer, ScoreRun, read_score_run

__all__ = [
    "STATE_MAX_AGE_S",
    "BatchScores",
    "FeatureStamp",
    "ServedScore",
    "ServedScores",
    "ServingScorer",
    "ServingState",
]

Source = Literal["batch", "live"]
_MANIFEST = "manifest.json"  # a feature folder is complete once its manifest is written
STATE_MAX_AGE_S = 1.0  # how long a lookup on the loop may reuse the last check of the state


@dataclass(frozen=True, slots=True)
class ServedScore:
    """One customer's answer: score, decile, reason codes, and where they came from."""

    customer_id: int
    branch_id: str
    score: float
    decile: int
    reasons: tuple[str, ...]
    source: Source
    scored_at: datetime | None  # the batch's time for "batch"; None for "live" (now)


@dataclass(frozen=True, slots=True)
class ServedScores:
    """The answer to one request: the model version that spoke, the scores, the unknown ids."""

    model: str
    version: str
    scores: list[ServedScore]
    unknown: list[int]  # requested ids neither the batch nor the newest features hold


class BatchScores:
    """One batch file's rows, sorted by customer id for lookups, with lazily filled reasons."""

    def __init__(
        self, frame: pl.DataFrame, run: ScoreRun, *, written_ns: int | None = None
    ) -> None:
        frame = frame.sort("customer_id")
        self.run = run
        # A file without a footer: when it was written (ns), all that is known of its features.
        self.written_ns = written_ns
        self.ids = frame["customer_id"].to_numpy().astype(np.int64)
        self.score = frame["score"].to_numpy().astype(np.float64)
        self.decile = frame["decile"].to_numpy().astype(np.int8)
        names, codes = np.unique(frame["branch_id"].fill_null("").to_numpy(), return_inverse=True)
        self._branch_names = [str(n) for n in names]
        self._branch_codes = codes.astype(np.int32)
        # Reasons as codes into one list of texts, -1 for none: three int16 a row, whatever the
        # population (a tuple of strings a row would hold gigabytes at ten million customers).
        # A row the batch gave none (its decile got none) is filled on its first request.
        reasons = [c for c in REASON_COLUMNS if c in frame.columns]
        texts = pl.concat([frame[c].drop_nulls() for c in reasons]) if reasons else pl.Series([])
        self._texts: list[str] = sorted(texts.unique().cast(pl.String).to_list())
        self._code = {text: code for code, text in enumerate(self._texts)}
        self._reasons = np.full((len(self.ids), len(REASON_COLUMNS)), -1, dtype=np.int16)
        enum = pl.Enum(self._texts)
        for k, c in enumerate(reasons):
            coded = frame[c].cast(pl.String).cast(enum).to_physical().fill_null(-1)
            self._reasons[:, k] = coded.to_numpy().astype(np.int16)
        self._explained = np.asarray((self._reasons >= 0).any(axis=1), dtype=bool)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.ids)

    def reasons(self, row: int) -> tuple[str, ...]:
        """Return stored row `row`'s reason codes (none while they are still to compute)."""
        return tuple(self._texts[code] for code in self._reasons[row].tolist() if code >= 0)

    def unexplained(self, rows: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        """Return which of the stored rows `rows` have no reasons yet (bool, same order)."""
        return ~self._explained[rows]

    def keep_reasons(self, rows: np.ndarray[Any, Any], found: Sequence[tuple[str, ...]]) -> None:
        """Keep the reasons `found` (computed live) of the stored rows `rows`."""
        with self._lock:  # two requests may bring a new text at once
            for row, reasons in zip(rows.tolist(), found, strict=True):
                codes = [self._code_of(text) for text in reasons]
                self._reasons[row] = -1
                self._reasons[row, : len(codes)] = codes
                self._explained[row] = True

    def _code_of(self, text: str) -> int:
        code = self._code.get(text)
        if code is None:
            code = self._code[text] = len(self._texts)
            self._texts.append(text)
        return code

    @classmethod
    def read(cls, path: Path, version: str) -> BatchScores | None:
        """Return the rows of the score file `path` if model `version` wrote it, else None.

        Without a footer (`read_score_run`: a file another writer gathered) the file's own
        time stands for when it was scored, and its features are the ones written before it.
        """
        try:
            frame = pl.read_parquet(path)
            run = read_score_run(path)
            modified = path.stat().st_mtime_ns
        except FileNotFoundError:
            return None
        versions = frame["model_version"].unique().to_list()
        if versions != [version] or (run is not None and run.version != version):
            return None
        if run is None:
            return cls(frame, _footless_run(frame, version, modified), written_ns=modified)
        return cls(frame, run)

    def locate(self, customer_ids: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        """Return the row of each of `customer_ids` (int64), -1 for one the batch did not score."""
        if len(self.ids) == 0:
            return np.full(len(customer_ids), -1, dtype=np.int64)
        at = np.clip(np.searchsorted(self.ids, customer_ids), 0, len(self.ids) - 1)
        return np.where(self.ids[at] == customer_ids, at, -1).astype(np.int64)

    def served(self, customer_id: int, row: int) -> ServedScore:
        """Return stored row `row` (of `customer_id`) as an answer."""
        return ServedScore(
            customer_id,
            self._branch_names[self._branch_codes[row]],
            float(self.score[row]),
            int(self.decile[row]),
            self.reasons(row),
            "batch",
            self.run.scored_at,
        )

    def covers(self, newest: FeatureStamp | None, digest: str) -> bool:
        """Return whether the newest feature build (`digest`) is the one this batch read."""
        if newest is None:
            return False
        if self.written_ns is None:
            return newest.snapshot == self.run.snapshot_date and digest == self.run.features_digest
        return newest.written_ns <= self.written_ns


def _footless_run(frame: pl.DataFrame, version: str, modified_ns: int) -> ScoreRun:
    """Return what can be said of a score file without a footer: its model and its time."""
    return ScoreRun(
        model=str(frame["model"][0]) if frame.height else "",
        version=version,
        snapshot_date="",
        scored_at=datetime.fromtimestamp(modified_ns / 1e9, UTC),
        reason_deciles=0,
    )


FileStamp = tuple[int, int, int, int]  # a file's (inode, mtime ns, ctime ns, size)


@dataclass(frozen=True, slots=True)
class FeatureStamp:
    """The newest feature folder: its snapshot and when its manifest was written."""

    snapshot: str
    inode: int
    written_ns: int


@dataclass(frozen=True, slots=True)
class ServingState:
    """What the answers depend on: CURRENT, the score file and the newest feature folder."""

    version: str | None
    scores: FileStamp | None
    features: FeatureStamp | None


def _stamp(path: str) -> FileStamp | None:
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return None
    return (stat.st_ino, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_size)


class _StateProbe:
    """Reads a run folder's ServingState for one model: a few stats, the pointer read on change.

    Every file it watches is replaced by an atomic rename (CURRENT, the score file, a feature
    manifest), so a change always shows in the file's stamp. Paths are kept as strings: this
    runs on every request. The last reading is kept with the time it began (`clock`), for
    `state(max_age=...)`.
    """

    def __init__(
        self, folder: RunFolder, model: str, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._registry = Registry(folder.models)
        self._model = model
        self._pointer = os.fspath(folder.models / model / "CURRENT")  # Registry's pointer file
        self._scores = os.fspath(folder.scores / f"{model}.parquet")
        self._features = os.fspath(folder.features)
        self._clock = clock
        self._seen: tuple[FileStamp | None, str | None] = (None, None)
        self._last: tuple[float, ServingState] | None = None
        self._not_before = -math.inf  # a reading begun earlier is never reused (`forget`)

    def state(self, *, max_age: float = 0.0) -> ServingState:
        """Return the folder's state: the last reading if it began under `max_age` seconds ago."""
        began = self._clock()
        last = self._last
        if last is not None and last[0] >= self._not_before and began - last[0] < max_age:
            return last[1]
        pointer = _stamp(self._pointer)
        seen, version = self._seen
        if pointer != seen:
            # Stat before read: a change between the two shows again at the next reading.
            version = self._registry.current(self._model) if pointer is not None else None
            self._seen = (pointer, version)
        state = ServingState(version, _stamp(self._scores), self._newest_features())
        self._last = (began, state)  # one assignment: readers on other threads see old or new
        return state

    def forget(self) -> None:
        """Make the next reading read the folder: none begun before now is reused."""
        self._not_before = self._clock()

    def _newest_features(self) -> FeatureStamp | None:
        """Return the stamp of the newest complete feature folder, or None."""
        try:
            with os.scandir(self._features) as entries:
                names = sorted((e.name for e in entries if e.is_dir()), reverse=True)
        except FileNotFoundError:
            return None
        for name in names:
            stamp = _stamp(f"{self._features}/{name}/{_MANIFEST}")
            if stamp is not None:
                return FeatureStamp(name, stamp[0], stamp[1])
        return None


@dataclass(frozen=True)
class _Loaded:
    """The index and the live scorer of one ServingState."""

    state: ServingState
    model: str
    version: str
    live: Scorer | None  # over the newest features; None when there are none
    batch: BatchScores | None  # the batch's rows, if CURRENT's version wrote them
    batch_current: bool  # the newest features are the ones the batch read


class ServingScorer:
    """Scores customers with the CURRENT version of `model`: stored batch rows, or live.

    `answer` never computes: it returns None when the request needs live work or a reload, so
    that a caller on an event loop can hand those to a thread and answer the rest at once.
    `score` answers every request, reloading and computing as needed.
    """

    def __init__(
        self,
        folder: RunFolder,
        model: str = "acquisition",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.folder = folder
        self.model = model
        self._registry = Registry(folder.models)
        self._probe = _StateProbe(folder, model, clock)
        # Its own lock: a reload takes seconds, and no other lock may wait on it.
        self._lock = threading.Lock()
        self._loaded: _Loaded | None = None

    def answer(self, customer_ids: Sequence[int]) -> ServedScores | None:
        """Return the answer if the stored rows give all of it as they are; None otherwise."""
        loaded = self._loaded
        if loaded is None or loaded.state != self._probe.state(max_age=STATE_MAX_AGE_S):
            return None
        plan = _Plan.of(loaded, customer_ids)
        return None if plan.needs_work else _served(loaded, plan)

    def refresh(self) -> None:
        """Read the run folder afresh at the next request (after this process moved CURRENT)."""
        self._probe.forget()

    def score(self, customer_ids: Sequence[int]) -> ServedScores:
        """Return the answer: stored rows where they hold, live scores for the rest."""
        loaded = self._current()
        return _served(loaded, _Plan.of(loaded, customer_ids))

    def _current(self) -> _Loaded:
        """Return the loaded index and scorer of the state now, reloading what changed."""
        state = self._probe.state()
        loaded = self._loaded
        if loaded is not None and loaded.state == state:
            return loaded
        with self._lock:
            loaded = self._loaded
            if loaded is None or loaded.state != state:
                loaded = self._load(state, loaded)
                self._loaded = loaded
            return loaded

    def _load(self, state: ServingState, before: _Loaded | None) -> _Loaded:
        """Return the index and live scorer of `state`, keeping what did not change."""
        version = state.version
        if version is None:
            raise ModelError(
                f"no {self.model} model is current; run `fusion train` for this run folder",
                model=self.model,
            )
        kept = before if before is not None and before.version == version else None
        live = kept.live if kept is not None and kept.state.features == state.features else None
        if live is None and state.features is not None:
            model = self._registry.load_score_model(self.model, version)
            live = Scorer(model, FeatureSet.read(self.folder.features / state.features.snapshot))
        batch = kept.batch if kept is not None and kept.state.scores == state.scores else None
        if batch is None:
            batch = BatchScores.read(self.folder.scores / f"{self.model}.parquet", version)
        if live is None and batch is None:
            raise ModelError(
                f"{self.model} version {version} has neither batch scores under "
                f"{self.folder.scores} nor a feature table under {self.folder.features} to "
                "score from; run `fusion features`, then `fusion score`",
                model=self.model,
            )
        current = (
            batch is not None
            and live is not None
            and batch.covers(state.features, live.features_digest)
        )
        return _Loaded(state, self.model, version, live, batch, current)


@dataclass(frozen=True)
class _Plan:
    """Where each requested id's answer comes from (positions in request order)."""

    wanted: np.ndarray[Any, Any]  # the requested ids, int64
    stored: np.ndarray[Any, Any]  # row in the batch, -1 for none
    design: np.ndarray[Any, Any]  # row of the live scorer's design matrix, -1 for none
    from_batch: np.ndarray[Any, Any]  # bool: answered by the stored row
    from_live: np.ndarray[Any, Any]  # bool: scored live
    explain: np.ndarray[Any, Any]  # request positions of stored rows still without reasons

    @classmethod
    def of(cls, loaded: _Loaded, customer_ids: Sequence[int]) -> _Plan:
        wanted = np.asarray(customer_ids, dtype=np.int64)
        none = np.full(len(wanted), -1, dtype=np.int64)
        batch, live = loaded.batch, loaded.live
        stored = batch.locate(wanted) if batch is not None else none
        design = live.locate(wanted) if live is not None else none
        # A stored row holds when the batch read the newest features, or when the newest
        # features do not hold the customer at all (nothing newer to score from).
        from_batch = (stored >= 0) & (loaded.batch_current | (design < 0))
        from_live = ~from_batch & (design >= 0)
        pending = np.flatnonzero(from_batch & (design >= 0))
        if batch is not None and len(pending):
            pending = pending[batch.unexplained(stored[pending])]
        return cls(wanted, stored, design, from_batch, from_live, pending)

    @property
    def needs_work(self) -> bool:
        return bool(self.from_live.any() or len(self.explain))


def _served(loaded: _Loaded, plan: _Plan) -> ServedScores:
    """Return the answer of `plan`, computing its live scores and missing reasons."""
    batch, live = loaded.batch, loaded.live
    if len(plan.explain) and batch is not None and live is not None:
        batch.keep_reasons(plan.stored[plan.explain], live.explain(plan.design[plan.explain]))
    scored: dict[int, ServedScore] = {}
    if live is not None and plan.from_live.any():
        at = np.flatnonzero(plan.from_live)
        rows = plan.design[at]
        score, decile = live.predict(rows)
        why, branches = live.explain(rows), live.branches(rows)
        for k, i in enumerate(at.tolist()):
            scored[i] = ServedScore(
                int(plan.wanted[i]), branches[k], float(score[k]), int(decile[k]), why[k],
                "live", None,
            )  # fmt: skip
    answers: list[ServedScore] = []
    for i, customer in enumerate(plan.wanted.tolist()):
        if plan.from_batch[i] and batch is not None:
            answers.append(batch.served(customer, int(plan.stored[i])))
        elif i in scored:
            answers.append(scored[i])
    unknown = plan.wanted[~plan.from_batch & ~plan.from_live].tolist()
    return ServedScores(loaded.model, loaded.version, answers, unknown)
