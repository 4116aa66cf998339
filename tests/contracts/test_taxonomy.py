"""The app/tag taxonomy: its size, its Zipf-like spread and the stability of its ids."""

from __future__ import annotations

import hashlib

import pytest

from contracts.errors import ConfigError
from contracts.taxonomy import CURRENT_VERSION, build_taxonomy, load_taxonomy

MARKET_CATEGORIES = {
    "social", "games", "food_delivery", "ecommerce", "travel", "short_video", "finance",
    "education", "mother_baby", "auto", "property", "health", "news", "tools", "office", "sport",
    "beauty", "local_life", "jobs", "reading", "music", "maps_mobility", "photo",
    "live_streaming", "lottery", "banking",
}  # fmt: skip


def test_sizes_and_categories():
    taxonomy = load_taxonomy()
    assert taxonomy.version == CURRENT_VERSION
    assert set(taxonomy.categories["code"].to_list()) == MARKET_CATEGORIES
    assert taxonomy.n_apps >= 1300 and taxonomy.n_tags >= 10_000
    assert taxonomy.apps["app_id"].is_unique().all() and taxonomy.tags["tag_id"].is_unique().all()
    assert taxonomy.tags["name"].is_unique().all()


def test_apps_spread_zipf_like_over_categories():
    counts = load_taxonomy().apps.group_by("category_id").len().sort("category_id")["len"]
    assert counts.min() >= 12 and counts[0] == counts.max()
    assert counts.to_list() == sorted(counts.to_list(), reverse=True)
    assert counts[0] / counts[len(counts) // 2] > 3  # a heavy head, a long tail


# Ids and names of a released version never change: a batch names its version and the bank
# checks ids against exactly that. A new taxonomy is a new version.
PINNED_2026_1 = "919899527162853692c0c154a6377586102f173213d0dca9926954bad6472b89"


def test_ids_are_stable_across_builds():
    def digest() -> str:
        built = build_taxonomy(CURRENT_VERSION)
        text = built.apps.write_csv() + built.tags.write_csv() + built.categories.write_csv()
        return hashlib.sha256(text.encode()).hexdigest()

    assert digest() == digest() == PINNED_2026_1
    assert load_taxonomy().apps.equals(build_taxonomy(CURRENT_VERSION).apps)


def test_unknown_version_is_refused_with_advice():
    with pytest.raises(ConfigError, match="Ask the vendor"):
        load_taxonomy("1999.1")
