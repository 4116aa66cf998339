"""Each package says what it exports, and every exported name exists (STYLE.md, habit 5)."""

from __future__ import annotations

import importlib

import pytest

SURFACE = {
    "contracts": ["errors", "schemas", "suites", "taxonomy"],
    "matcher": [
        "envelope",
        "identity",
        "keyed_hash",
        "keyring",
        "oprf",
        "oprf_exchange",
        "oprf_match",
        "pack",
        "psi",
    ],
    "fusion": [
        "coverage",
        "engine",
        "features",
        "ingest",
        "lists",
        "match",
        "oprf_psi",
        "query",
        "registry",
        "runfolder",
        "scoring",
        "store",
        "tokens",
        "training",
    ],
    "fusion.models": [
        "acquisition",
        "campaign",
        "classifier",
        "design",
        "distributed",
        "metrics",
        "rescue",
        "uplift",
    ],
    "labs": ["bench", "cli", "model_report", "report", "scale", "world"],
    "api": ["ApiSettings", "create_app", "serve"],
}


@pytest.mark.parametrize("package", sorted(SURFACE))
def test_package_exports_exactly_its_surface(package: str):
    module = importlib.import_module(package)
    assert module.__all__ == SURFACE[package]


@pytest.mark.parametrize(
    "module",
    [f"{p}.{m}" for p, mods in SURFACE.items() if p != "api" for m in mods] + ["api.app"],
)
def test_every_module_declares_and_defines_its_exports(module: str):
    loaded = importlib.import_module(module)
    assert isinstance(loaded.__all__, list) and loaded.__all__
    missing = [name for name in loaded.__all__ if not hasattr(loaded, name)]
    assert not missing
