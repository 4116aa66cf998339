"""Versioned model artifacts with a current pointer, in a folder of the run.

    <root>/<name>/<version>/model.json       what the model is: kind, inputs, labels, deciles,
                                             metrics, snapshot, training-data digest, config,
                                             and the sha256 of every other file
    <root>/<name>/<version>/<part>.json       xgboost boosters (one, or one per uplift part)
    <root>/<name>/<version>/tag_profile.npz   the tag profile, when the model uses one
    <root>/<name>/<version>/holdout.npz       the held-out customers it was judged on (ids,
                                             labels, arms for uplift): what a promotion gate
                                             scores the champion and the challenger on
    <root>/<name>/CURRENT                     the version scoring uses

A version is `<UTC time>-<first 10 hex of the sha256 of model.json>` (model.json without its
version, as canonical JSON): sortable and tied to everything the model is, since model.json holds
the digest of every other file. A version folder is written under a temporary name and renamed,
and CURRENT is replaced atomically, so a reader never sees half a model. Loading reads each file
once, checks model.json against the version and every other file against its digest, and builds
the model from those same bytes: an artifact edited after training is refused, not scored.
Nothing is pickled: boosters are xgboost's own JSON model format (readable by any xgboost
binding, and by a reviewer), the profile numpy arrays.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
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
from matcher.atomic import atomic_path, write_atomic

__all__ = ["Holdout", "ModelRef", "Registry", "UpliftArtifact"]

FORMAT = "bankfusion-model/3"  # /2: the version digests model.json too; /3: boosters as JSON
_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")
_VERSION = re.compile(r"^[0-9]{8}T[0-9]{6}Z-[0-9a-f]{10}$")
_PROFILE = "tag_profile.npz"
_HOLDOUT = "holdout.npz"
_FILE = re.compile(r"^[a-z0-9_]{1,64}\.(json|npz)$")  # a file of the version folder itself


@dataclass
class UpliftArtifact:
    """An uplift learner with the design it reads and its metadata."""

    name: str
    model: UpliftModel
    spec: DesignSpec
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Holdout:
    """The held-out customers a version was judged on: ids, labels and (uplift) arms."""

    customer_id: np.ndarray[Any, np.dtype[np.int64]]
    label: np.ndarray[Any, np.dtype[np.int8]]
    treatment: np.ndarray[Any, np.dtype[np.int8]] | None = None

    def to_bytes(self) -> bytes:
        """Return the arrays as an .npz file (no pickles)."""
        buffer = io.BytesIO()
        ids = np.asarray(self.customer_id, dtype=np.int64)
        label = np.asarray(self.label, dtype=np.int8)
        if self.treatment is None:
            np.savez(buffer, customer_id=ids, label=label)
        else:
            np.savez(buffer, customer_id=ids, label=label, treatment=np.asarray(self.treatment))
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> Holdout:
        """Return the holdout `to_bytes` wrote."""
        with np.load(io.BytesIO(data), allow_pickle=False) as found:
            treatment = found["treatment"] if "treatment" in found.files else None
            return cls(found["customer_id"], found["label"], treatment)


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
        holdout: Holdout | None = None,
    ) -> ModelRef:
        """Write `model` as a new version and return where it went (CURRENT moves unless asked).

        `holdout` (the held-out customers it was judged on) is kept beside it for the
        promotion gate (`fusion.models.promotion`).
        """
        name = _check_name(model.name)
        if created_at.tzinfo is None:
            raise ConfigError("created_at must be timezone-aware (UTC)", setting="created_at")
        if isinstance(model, ScoreModel):
            kind = "score"
            parts = {"booster": bytes(model.booster.save_raw("json"))}
            extra: dict[str, Any] = {
                "labels": model.labels,
                "decile_edges": [float(e) for e in model.decile_edges],
            }
        else:
            kind = "uplift"
            state, documents = model.model.to_state()
            parts = {f"uplift_{part}": doc for part, doc in documents.items()}
            extra = {"uplift": state}
        files = {f"{part}.json": data for part, data in parts.items()}
        if model.spec.tag_profile is not None:
            files[_PROFILE] = model.spec.tag_profile.to_bytes()
        if holdout is not None:
            files[_HOLDOUT] = holdout.to_bytes()
        document: dict[str, Any] = {
            "format": FORMAT,
            "name": name,
            "kind": kind,
            "created_at": created_at.astimezone(UTC).isoformat(),
            "columns": list(model.spec.columns),
            "inputs": model.spec.names,
            "metadata": model.metadata,
            **extra,
            "files": {f: hashlib.sha256(data).hexdigest() for f, data in sorted(files.items())},
        }
        # Plain JSON from here on (numpy values and dates converted), so the content digest
        # computed now is the one `load` recomputes from the file.
        document = json.loads(json.dumps(document, default=_json_default))
        version = f"{created_at.astimezone(UTC):%Y%m%dT%H%M%S}Z-{_content(document)[:10]}"
        document = {**document, "version": version}
        folder = self.root / name / version
        if folder.exists():
            raise ModelError(
                f"model {name} version {version} already exists; the same model (files and "
                "model.json) was saved at the same second. Load it instead of saving again.",
                model=name,
            )
        with atomic_path(folder) as tmp:  # the version folder appears whole, or not at all
            tmp.mkdir()
            for file, data in files.items():
                (tmp / file).write_bytes(data)
            text = json.dumps(document, indent=1, ensure_ascii=False)
            (tmp / "model.json").write_text(text + "\n", encoding="utf-8")
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
        write_atomic(self.root / name / "CURRENT", version + "\n")

    def describe(self, name: str, version: str | None = None) -> dict[str, Any]:
        """Return model.json of `version` (CURRENT when None), every file checked."""
        return self._read(name, version)[0]

    def holdout(self, name: str, version: str | None = None) -> Holdout | None:
        """Return the held-out customers of `version` (CURRENT when None), checked, or None."""
        blobs = self._read(name, version)[1]
        return Holdout.from_bytes(blobs[_HOLDOUT]) if _HOLDOUT in blobs else None

    def load(self, name: str, version: str | None = None) -> ScoreModel | UpliftArtifact:
        """Return the model of `version` (CURRENT when None), built from the bytes it checked."""
        document, blobs = self._read(name, version)
        folder = self.root / name / document["version"]
        profile = None
        if _PROFILE in blobs:
            profile = TagProfile.from_bytes(blobs[_PROFILE])
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
            booster.load_model(bytearray(blobs["booster.json"]))
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
            file.removeprefix("uplift_").removesuffix(".json"): data
            for file, data in blobs.items()
            if file.startswith("uplift_")
        }
        return UpliftArtifact(name, load_uplift_model(state, parts), spec, metadata)

    def load_score_model(self, name: str, version: str | None = None) -> ScoreModel:
        """Return a scoring (binary) model, refusing an uplift artifact."""
        model = self.load(name, version)
        if not isinstance(model, ScoreModel):
            raise ModelError(f"model {name} is an uplift model, not a scoring model", model=name)
        return model

    def _read(self, name: str, version: str | None) -> tuple[dict[str, Any], dict[str, bytes]]:
        """Return model.json and the bytes of every file it lists, each read once and checked.

        Checking the bytes that are then used (not the files, read again later) leaves no gap
        in which a swapped file could be loaded unchecked.
        """
        folder = self._folder(name, version)
        document: dict[str, Any] = json.loads((folder / "model.json").read_bytes())
        if document.get("format") != FORMAT:
            raise ModelError(
                f"{folder / 'model.json'} is not a {FORMAT} artifact (format "
                f"{document.get('format')!r}); retrain with this version of the platform",
                model=name,
            )
        described = {k: v for k, v in document.items() if k != "version"}
        if document.get("version") != folder.name or not folder.name.endswith(
            "-" + _content(described)[:10]
        ):
            raise ModelError(
                f"model {name} {folder.name}: model.json differs from the content its version "
                "was named after; the artifact was altered. Restore it or retrain.",
                model=name,
            )
        blobs: dict[str, bytes] = {}
        for file, digest in document["files"].items():
            data = None
            if _FILE.match(file) and file != "model.json":
                try:
                    data = (folder / file).read_bytes()
                except OSError:
                    data = None
            if data is None or hashlib.sha256(data).hexdigest() != digest:
                raise ModelError(
                    f"model {name} {folder.name}: {file} is missing or differs from the digest "
                    "recorded at training; the artifact was altered. Restore it or retrain.",
                    model=name,
                )
            blobs[file] = data
        return document, blobs

    def _folder(self, name: str, version: str | None) -> Path:
        chosen = version or self.current(name)
        if chosen is None:
            raise ModelError(
                f"no current version of model {name} under {self.root}; run `fusion train` first",
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


def _content(document: dict[str, Any]) -> str:
    """Return the sha256 of `document` (model.json without its version) as canonical JSON."""
    text = json.dumps(document, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"not JSON-ready: {type(value).__name__}")
