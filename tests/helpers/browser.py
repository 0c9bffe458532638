"""Drive the web page (ui/) in a real headless Chromium: shared by tests/test_ui.py and the integration
tests that look at the page (tests/integration/test_faults_names_served.py).

Debian's `chromium` (scripts/setup.sh --dev installs it) driven by Playwright with `executable_path`:
Playwright's own browser download needs the internet.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright
from serving import Server

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
WAIT_MS = 60_000  # the tiny models on a busy 2-core machine


@contextlib.contextmanager
def launched() -> Iterator[Browser]:
    """Headless Chromium; fails the test (never skips) where it is not installed."""
    if not CHROMIUM.is_file():
        pytest.fail(f"{CHROMIUM} is missing: run scripts/setup.sh --dev (it installs Debian's chromium)")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@contextlib.contextmanager
def tab(browser: Browser) -> Iterator[Page]:
    """A fresh page; a JavaScript error on it fails the test when the block ends."""
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    context.set_default_timeout(WAIT_MS)
    page = context.new_page()
    script_errors: list[str] = []
    page.on("pageerror", lambda error: script_errors.append(str(error)))
    yield page
    context.close()
    assert not script_errors, f"JavaScript errors on the page: {script_errors}"


def open_ui(page: Page, server: Server) -> None:
    page.goto(f"{server.url}/ui/")
    expect(page.locator("#status")).to_contain_text("images indexed")


def search(page: Page, query: str) -> list[str]:
    """Search from the page's box; the image names of the shown results, best first, once all
    their thumbnails are loaded."""
    page.fill("#query", query)
    page.press("#query", "Enter")
    return shown_results(page)


def shown_results(page: Page) -> list[str]:
    expect(page.locator("#summary")).to_contain_text("best match first")
    page.wait_for_function("[...document.querySelectorAll('#grid img')]"
                           ".every(img => img.complete && img.naturalWidth > 0)")
    names: list[str] = page.eval_on_selector_all("#grid .card img", "imgs => imgs.map(img => img.alt)")
    return names
