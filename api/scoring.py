"""The scorer behind POST /v1/scores: the current acquisition model over its features, cached."""

from __future__ import annotations

import threading

from contracts.errors import ModelError
from fusion.features import FeatureSet
from fusion.registry import Registry
from fusion.runfolder import RunFolder
from fusion.scoring import Scorer

__all__ = ["CurrentScorer"]


class CurrentScorer:
    """The scorer of whichever acquisition model is current, loaded once per model version."""

    def __init__(self, folder: RunFolder) -> None:
        self._folder = folder
        self._registry = Registry(folder.models)
        # Its own lock: loading a model and its features takes seconds, and the locks the
        # event loop takes (metrics, audit) must never wait on that.
        self._lock = threading.Lock()
        self._loaded: tuple[str, Scorer] | None = None

    def get(self) -> Scorer:
        """Return the scorer of the CURRENT acquisition model over the newest features."""
        version = self._registry.current("acquisition")
        if version is None:
            raise ModelError(
                "no acquisition model is current; run `fusion train` for this run folder",
                model="acquisition",
            )
        cached = self._loaded
        if cached is not None and cached[0] == version:
            return cached[1]
        with self._lock:
            if self._loaded is None or self._loaded[0] != version:
                self._loaded = (version, self._load(version))
            return self._loaded[1]

    def _load(self, version: str) -> Scorer:
        """Return a scorer of model `version` over the features of the snapshot it was
        trained on; ModelError when they are gone."""
        model = self._registry.load_score_model("acquisition", version)
        snapshot = str(model.metadata.get("snapshot_date", ""))
        folder = self._folder.features / snapshot
        if not (folder / "manifest.json").exists():
            raise ModelError(
                f"the features of snapshot {snapshot} that model {version} was trained "
                f"on are not under {self._folder.features}; run `fusion features`",
                model="acquisition",
            )
        return Scorer(model, FeatureSet.read(folder))
