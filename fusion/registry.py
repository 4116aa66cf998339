"""Versioned model artifacts with a current pointer, in a folder of the run.

    <root>/<name>/<version>/model.json       what the model is: kind, inputs, labels, deciles,
                                             metrics, snapshot, training-data digest, config,
                                             and the sha256 of every other file
    <root>/<name>/<version>/<part>.ubj        xgboost boosters (one, or one per uplift part)
    <root>/<name>/<version>/tag_profile.npz   the tag profile, when the model uses one
    <root>/<name>/CURRENT                     the version scoring uses

A version is `<UTC time>-<first 10 hex of the boosters' sha256>`: sortable and tied to content.
A version folder is written under a temporary name and renamed, and CURRENT is replaced
atomically, so a reader never sees half a model. Loading checks every file against the digests
in model.json: an artifact edited after training is refused, not scored. Nothing is pickled:
boosters are xgboost's own UBJSON, the profile numpy arrays.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import xgboost as xgb

from contracts.errors import ConfigError, ModelError
from fusion.models.classifier import ScoreModel
from fusion.models.design import DesignSpec, TagProfile
from fusion.models.uplift import UpliftModel, load_uplift_model

__all__ = ["ModelRef", "Registry", "UpliftArtifact"]

FORMAT = "bankfusion-model/1"
_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")
_VERSION = re.compile(r"^[0-9]{8}T[0-9]{6}Z-[0-9a-f]{10}$")
_PROFILE = "tag_profile.npz"


@dataclass
class UpliftArtifact:
    """An uplift learner with the design it reads and its metadata."""

    name: str
    model: UpliftModel
    spec: DesignSpec
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelRef:
    """Where a saved model lives."""

    name: str
    version: str
    path: Path


class Registry:
    """Model versions under one folder; `save`, `load`, `versions`, `current`, `promote`."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def save(
        self,
        model: ScoreModel | UpliftArtifact,
        *,
        created_at: datetime,
        make_current: bool = True,
    ) -> ModelRef:
        """Write `model` as a new version and return where it went (CURRENT moves unless asked)."""
        name = _check_name(model.name)
        if created_at.tzinfo is None:
            raise ConfigError("created_at must be timezone-aware (UTC)", setting="created_at")
        if isinstance(model, ScoreModel):
            kind = "score"
            parts = {"booster": bytes(model.booster.save_raw("ubj"))}
            extra: dict[str, Any] = {
                "labels": model.labels,
                "decile_edges": [float(e) for e in model.decile_edges],
            }
        else:
            kind = "uplift"
            state, documents = model.model.to_state()
            parts = {f"uplift_{part}": doc for part, doc in documents.items()}
            extra = {"uplift": state}
        files = {f"{part}.ubj" if kind == "score" else f"{part}.json": data
                 for part, data in parts.items()}  # fmt: skip
        if model.spec.tag_profile is not None:
            files[_PROFILE] = model.spec.tag_profile.to_bytes()
        content = hashlib.sha256(b"".join(parts[p] for p in sorted(parts))).hexdigest()
        version = f"{created_at.astimezone(UTC):%Y%m%dT%H%M%S}Z-{content[:10]}"
        document = {
            "format": FORMAT,
            "name": name,
            "version": version,
            "kind": kind,
            "created_at": created_at.astimezone(UTC).isoformat(),
            "columns": list(model.spec.columns),
            "inputs": model.spec.names,
            "metadata": model.metadata,
            **extra,
            "files": {f: hashlib.sha256(data).hexdigest() for f, data in sorted(files.items())},
        }
        folder = self.root / name / version
        if folder.exists():
            raise ModelError(
                f"model {name} version {version} already exists; the same boosters were saved "
                "at the same second. Load it instead of saving again.",
                model=name,
            )
        tmp = folder.with_name(f".{version}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            for file, data in files.items():
                (tmp / file).write_bytes(data)
            text = json.dumps(document, indent=1, ensure_ascii=False, default=_json_default)
            (tmp / "model.json").write_text(text + "\n", encoding="utf-8")
            os.replace(tmp, folder)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        if make_current:
            self.promote(name, version)
        return ModelRef(name, version, folder)

    def versions(self, name: str) -> list[str]:
        """Return the saved versions of `name`, oldest first."""
        folder = self.root / _check_name(name)
        if not folder.is_dir():
            return []
        return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))

    def names(self) -> list[str]:
        """Return the model names that have at least one version."""
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and self.versions(p.name))

    def current(self, name: str) -> str | None:
        """Return the version CURRENT points at, or None."""
        pointer = self.root / _check_name(name) / "CURRENT"
        return pointer.read_text(encoding="utf-8").strip() if pointer.exists() else None

    def promote(self, name: str, version: str) -> None:
        """Point CURRENT at `version` (atomically)."""
        if not _VERSION.match(version) or version not in self.versions(name):
            raise ModelError(
                f"model {name} has no version {version!r}; saved versions: "
                f"{', '.join(self.versions(name)) or 'none'}",
                model=name,
            )
        pointer = self.root / name / "CURRENT"
        tmp = pointer.with_name(".CURRENT.tmp")
        tmp.write_text(version + "\n", encoding="utf-8")
        os.replace(tmp, pointer)

    def describe(self, name: str, version: str | None = None) -> dict[str, Any]:
        """Return model.json of `version` (CURRENT when None), digests checked."""
        folder = self._folder(name, version)
        document: dict[str, Any] = json.loads((folder / "model.json").read_text(encoding="utf-8"))
        if document.get("format") != FORMAT:
            raise ModelError(
                f"{folder / 'model.json'} is not a {FORMAT} artifact (format "
                f"{document.get('format')!r}); retrain with this version of the platform",
                model=name,
            )
        for file, digest in document["files"].items():
            path = folder / file
            if not path.exists() or hashlib.sha256(path.read_bytes()).hexdigest() != digest:
                raise ModelError(
                    f"model {name} {folder.name}: {file} is missing or differs from the digest "
                    "recorded at training; the artifact was altered. Restore it or retrain.",
                    model=name,
                )
        return document

    def load(self, name: str, version: str | None = None) -> ScoreModel | UpliftArtifact:
        """Return the model of `version` (CURRENT when None), every file checked."""
        document = self.describe(name, version)
        folder = self.root / name / document["version"]
        profile = None
        if _PROFILE in document["files"]:
            profile = TagProfile.from_bytes((folder / _PROFILE).read_bytes())
        spec = DesignSpec(tuple(document["columns"]), profile)
        if spec.names != document["inputs"]:
            raise ModelError(
                f"model {name} {folder.name}: its inputs do not match its columns and profile; "
                "the artifact is inconsistent. Retrain.",
                model=name,
            )
        metadata = {**document["metadata"], "version": document["version"]}
        if document["kind"] == "score":
            booster = xgb.Booster()
            booster.load_model(bytearray((folder / "booster.ubj").read_bytes()))
            return ScoreModel(
                name=name,
                booster=booster,
                spec=spec,
                labels=dict(document["labels"]),
                decile_edges=np.array(document["decile_edges"], dtype=np.float64),
                metadata=metadata,
            )
        state = document["uplift"]
        parts = {
            file.removeprefix("uplift_").removesuffix(".json"): (folder / file).read_bytes()
            for file in document["files"]
            if file.startswith("uplift_")
        }
        return UpliftArtifact(name, load_uplift_model(state, parts), spec, metadata)

    def load_score_model(self, name: str, version: str | None = None) -> ScoreModel:
        """Return a scoring (binary) model, refusing an uplift artifact."""
        model = self.load(name, version)
        if not isinstance(model, ScoreModel):
            raise ModelError(f"model {name} is an uplift model, not a scoring model", model=name)
        return model

    def _folder(self, name: str, version: str | None) -> Path:
        chosen = version or self.current(name)
        if chosen is None:
            raise ModelError(
                f"no current version of model {name} under {self.root}; run `fusion train` "
                "first (or `fusion models promote`)",
                model=name,
            )
        folder = self.root / _check_name(name) / chosen
        if not _VERSION.match(chosen) or not (folder / "model.json").exists():
            raise ModelError(
                f"model {name} has no version {chosen!r} under {self.root}", model=name
            )
        return folder


def _check_name(name: str) -> str:
    if not _NAME.match(name):
        raise ConfigError(
            f"a model name is 1-64 of a-z, 0-9, '-' and '_', starting with a letter; got {name!r}",
            setting="name",
        )
    return name


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"not JSON-ready: {type(value).__name__}")
