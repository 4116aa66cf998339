"""Debian's headless Chromium for the console's browser tests (`make browser` installs it),
screenshots under test-artifacts/console/ for review, and the check that a page's plots
loaded."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

CHROMIUM = Path("/usr/bin/chromium")  # Debian's chromium package (`make browser`)
# Without the background-networking flags Chromium waits on the network, which is closed here.
FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "console"


@contextmanager
def chromium() -> Iterator[Browser]:
    if not CHROMIUM.is_file():
        pytest.fail(f"{CHROMIUM} is missing: `make browser` installs Debian's chromium package")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=FLAGS
        )
        yield launched
        launched.close()


def shot(page: Page, name: str) -> None:
    page.screenshot(path=SCREENSHOTS / f"{name}.png", full_page=True)


def assert_images_loaded(page: Page, count: int) -> None:
    """The page has `count` images and, once its load event has fired (every image fetched or
    failed), each one decoded: a plot the console's route failed to serve has no width. A check
    made before the load event races a busy machine's image fetches."""
    images = page.locator("img")
    assert images.count() == count
    page.wait_for_load_state("load")
    for i in range(count):
        assert images.nth(i).evaluate("img => img.complete && img.naturalWidth > 0"), i
