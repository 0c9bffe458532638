"""Drive the web page (ui/) in a real headless Chromium: shared by tests/test_ui.py and the integration
tests that look at the page (tests/integration/test_faults_names_served.py).

Debian's `chromium` (scripts/setup.sh --dev installs it) driven by Playwright with `executable_path`:
Playwright's own browser download needs the internet.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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


# Every page records the CSP violations the browser reports (the page's CSP: api/ui.py UI_POLICY).
RECORD_CSP_VIOLATIONS = """
window.cspViolations = [];
document.addEventListener("securitypolicyviolation",
    (event) => window.cspViolations.push(`${event.violatedDirective} ${event.blockedURI}`));
"""


@contextlib.contextmanager
def tab(browser: Browser) -> Iterator[Page]:
    """A fresh page; a JavaScript error or a Content-Security-Policy violation on it (reported on the
    console or by the `securitypolicyviolation` event) fails the test when the block ends."""
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    context.set_default_timeout(WAIT_MS)
    context.add_init_script(RECORD_CSP_VIOLATIONS)
    page = context.new_page()
    script_errors: list[str] = []
    console_csp: list[str] = []
    page.on("pageerror", lambda error: script_errors.append(str(error)))
    page.on("console", lambda message: console_csp.append(message.text)
            if "Content Security Policy" in message.text else None)
    yield page
    violations = csp_violations(page)
    context.close()
    assert not script_errors, f"JavaScript errors on the page: {script_errors}"
    assert not console_csp and not violations, f"Content-Security-Policy violations: {console_csp} {violations}"


def csp_violations(page: Page) -> list[str]:
    if page.is_closed() or not page.url.startswith("http"):
        return []
    found: list[str] = page.evaluate("window.cspViolations || []")
    return found


def wait_until(page: Page, function: str, arg: Any = None) -> None:
    """page.wait_for_function, which runs its predicate through eval() in the page and so is blocked by
    the page's CSP: poll page.evaluate (run by the browser's debugging protocol, which CSP allows)."""
    deadline = time.monotonic() + WAIT_MS / 1000
    while not page.evaluate(function, arg):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {function}")
        page.wait_for_timeout(100)


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
    wait_until(page, "() => [...document.querySelectorAll('#grid img')]"
                     ".every(img => img.complete && img.naturalWidth > 0)")
    names: list[str] = page.eval_on_selector_all("#grid .card img", "imgs => imgs.map(img => img.alt)")
    return names
