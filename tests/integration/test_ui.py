"""The web page (ui/, served at /ui/) in a real headless Chromium against the real service.

Debian's `chromium` driven by Playwright (tests/helpers/browser.py). The service runs the trained tiny models
on a small library of coloured shapes, so what the page shows is known. Screenshots go to
test-artifacts/ui/.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers.browser import (
    RECORD_CSP_VIOLATIONS,
    csp_violations,
    launched,
    open_ui,
    search,
    shown_results,
    tab,
    wait_until,
)
from playwright.sync_api import Browser, FilePayload, Page, expect
from serving import ROOT, Server, png, run_indexer, running, service_env
from shapes import caption, draw_shape, make_library

SHOTS = ROOT / "test-artifacts" / "ui"
KEY = "ui-test-key-3141"
COLOR_Q = "What color is the shape?"

Shapes = dict[str, tuple[str, str]]


@pytest.fixture(scope="module")
def indexed(tmp_path_factory: pytest.TempPathFactory, tiny_clip_dir: Path) -> tuple[Path, Path, Shapes]:
    tmp = tmp_path_factory.mktemp("ui")
    library = tmp / "photos"
    shapes = make_library(library, n_per_class=2, seed=11)
    return tmp, library, shapes


def indexed_env(tmp: Path, library: Path, tiny_clip_dir: Path, name: str, **extra: str) -> dict[str, str]:
    """The service's environment with its own freshly indexed store under tmp/name."""
    env = {**service_env(tmp / name, tiny_clip_dir, library), **extra}
    done = run_indexer(env)
    assert done.returncode == 0, done.stderr
    return env


@pytest.fixture(scope="module")
def server(indexed: tuple[Path, Path, Shapes], tiny_clip_dir: Path) -> Iterator[Server]:
    tmp, library, _ = indexed
    env = indexed_env(tmp, library, tiny_clip_dir, "open")
    with running(env, tmp / "server.log") as srv:
        yield srv


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    SHOTS.mkdir(parents=True, exist_ok=True)
    with launched() as chromium:
        yield chromium


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    with tab(browser) as opened:
        yield opened


def scores(page: Page) -> list[float]:
    return [float(text) for text in page.locator("#grid .card .score").all_inner_texts()]


def upload(page: Page, name: str, mime_type: str, data: bytes) -> None:
    """Pick a file with the page's file input (as the drop zone's "choose one" does)."""
    page.set_input_files("#file", files=[FilePayload(name=name, mimeType=mime_type, buffer=data)])


def drop(page: Page, name: str, mime_type: str, data: bytes) -> None:
    """Drop a file on the page's drop zone, as a drag from the desktop does."""
    page.evaluate("""([name, type, bytes]) => {
        const transfer = new DataTransfer();
        transfer.items.add(new File([new Uint8Array(bytes)], name, {type}));
        const zone = document.getElementById("drop");
        for (const kind of ["dragenter", "dragover", "drop"]) {
            zone.dispatchEvent(new DragEvent(kind, {dataTransfer: transfer, bubbles: true, cancelable: true}));
        }
    }""", [name, mime_type, list(data)])


def ask(page: Page, question: str) -> None:
    page.fill("#question", question)
    page.press("#question", "Enter")


def test_page_is_served_with_its_files(server: Server) -> None:
    redirect = httpx.get(f"{server.url}/ui", timeout=30)
    assert redirect.status_code == 307 and redirect.headers["location"].endswith("/ui/")
    html = httpx.get(f"{server.url}/ui/", timeout=30)
    assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
    assert '<script src="app.js">' in html.text and "http" not in html.text.split("<body>")[0]  # nothing from a CDN
    for name, kind in (("app.js", "javascript"), ("style.css", "text/css")):
        response = httpx.get(f"{server.url}/ui/{name}", timeout=30)
        assert response.status_code == 200 and kind in response.headers["content-type"]
    missing = httpx.get(f"{server.url}/ui/nothing.js", timeout=30)
    assert missing.status_code == 404 and missing.json()["status"] == "error"


def test_the_page_runs_under_its_csp_without_violations(page: Page, browser: Browser, server: Server) -> None:
    """The page is sent with a strict CSP and everything it does (search, blob: thumbnails, the viewer)
    runs under it without a violation (the `page` fixture fails on any, from the console or the
    `securitypolicyviolation` event); an inline script injected into the page is blocked and reported."""
    response = page.goto(f"{server.url}/ui/")
    assert response is not None and "script-src 'self'" in response.headers["content-security-policy"]
    assert response.headers["x-content-type-options"] == "nosniff"
    expect(page.locator("#status")).to_contain_text("images indexed")
    search(page, caption("circle", "red"))
    page.locator("#grid .card").first.click()
    expect(page.locator("#viewer")).to_be_visible()
    wait_until(page, "() => document.getElementById('viewer-img').naturalWidth > 0")
    assert csp_violations(page) == []

    probe = browser.new_context()  # its own tab: the violation it provokes is meant
    probe.add_init_script(RECORD_CSP_VIOLATIONS)
    other = probe.new_page()
    other.goto(f"{server.url}/ui/")
    other.evaluate("""() => { const s = document.createElement("script"); s.textContent = "window.ran = 1";
                              document.body.append(s); }""")
    wait_until(other, "() => window.cspViolations.length > 0")
    assert other.evaluate("window.ran") is None and csp_violations(other)[0].startswith("script-src")
    probe.close()


def test_search_shows_the_right_thumbnails_first(page: Page, server: Server, indexed: Any) -> None:
    shapes: Shapes = indexed[2]
    open_ui(page, server)
    expect(page.locator("#status")).to_contain_text(f"{len(shapes)} images indexed")
    expect(page.locator("#status")).to_contain_text("device: cpu")
    names = search(page, caption("circle", "red"))  # 红色的圆形
    expect(page.locator("#summary")).to_have_text(f"20 photos for “{caption('circle', 'red')}”, best match first")
    page.screenshot(path=SHOTS / "search.png", full_page=True)
    assert len(names) == 20 and len(set(names)) == 20
    assert [shapes[name] for name in names[:2]] == [("circle", "red")] * 2, names[:5]
    assert scores(page) == sorted(scores(page), reverse=True)
    sources = page.eval_on_selector_all("#grid .card img", "imgs => imgs.map(img => img.src)")
    assert all(src.startswith("blob:") for src in sources)  # thumbnails from /images/..., fetched
    page.click("#more")  # the next page (offset): the rest of the library, nothing twice
    expect(page.locator("#summary")).to_contain_text(f"{len(shapes)} photos for")
    expect(page.locator("#more")).to_be_hidden()
    assert sorted(shown_results(page)) == sorted(shapes)
    names = search(page, caption("square", "blue"))
    assert shapes[names[0]] == ("square", "blue"), names[:5]


def test_filters_narrow_the_search(page: Page, server: Server, indexed: Any) -> None:
    shapes: Shapes = indexed[2]
    in_red = {name for name in shapes if name.startswith("red/")}
    assert 0 < len(in_red) < 20
    open_ui(page, server)
    page.click(".filters summary")
    page.fill("#f-folder", "red")
    names = search(page, caption("triangle", "blue"))
    assert set(names) == in_red and len(names) == len(in_red)
    expect(page.locator("#more")).to_be_hidden()


def test_open_a_result_and_the_answer_streams_in(page: Page, server: Server, indexed: Any) -> None:
    shapes: Shapes = indexed[2]
    open_ui(page, server)
    names = search(page, caption("triangle", "green"))
    page.locator("#grid .card").first.click()
    viewer = page.locator("#viewer")
    expect(viewer).to_be_visible()
    expect(page.locator("#viewer-title")).to_have_text(names[0])
    wait_until(page, "() => document.getElementById('viewer-img').naturalWidth > 0")
    ask(page, COLOR_Q)
    expect(page.locator("#answer")).to_have_attribute("data-state", "done")
    answer = page.locator("#answer").inner_text().strip().lower()
    assert answer == shapes[names[0]][1], answer
    page.screenshot(path=SHOTS / "answer.png")
    page.keyboard.press("Escape")
    expect(viewer).to_be_hidden()
    expect(page.locator("#grid .card").first).to_be_focused()  # focus back where it was


def test_ask_about_an_uploaded_photo(page: Page, server: Server) -> None:
    open_ui(page, server)
    photo = png(draw_shape("square", "yellow", size=80, seed=5))
    upload(page, "mine.png", "image/png", photo)
    expect(page.locator("#viewer-title")).to_have_text("mine.png")
    ask(page, COLOR_Q)
    expect(page.locator("#answer")).to_have_attribute("data-state", "done")
    assert page.locator("#answer").inner_text().strip().lower() == "yellow"


def test_a_bad_upload_shows_a_readable_error(page: Page, server: Server) -> None:
    open_ui(page, server)
    upload(page, "notes.txt", "text/plain", b"these are not pixels")
    expect(page.locator("#viewer-noimage")).to_be_visible()
    ask(page, COLOR_Q)
    error = page.locator("#viewer-error")
    expect(error).to_be_visible()
    text = error.inner_text()
    assert text.startswith("Could not answer: image:"), text
    assert "{" not in text and "status" not in text, text  # the message, not the JSON
    expect(page.locator("#answer")).to_be_hidden()
    page.screenshot(path=SHOTS / "error.png")


def test_find_similar_from_a_result_and_from_a_dropped_photo(page: Page, server: Server, indexed: Any) -> None:
    shapes: Shapes = indexed[2]
    open_ui(page, server)
    first = search(page, caption("square", "orange"))[0]
    assert shapes[first] == ("square", "orange")
    page.locator("#grid .card").first.click()
    page.click("#similar")
    expect(page.locator("#viewer")).to_be_hidden()
    expect(page.locator("#summary")).to_contain_text(f"20 photos similar to {first}")
    names = shown_results(page)
    assert first not in names  # the photo itself is left out
    assert shapes[names[0]] == ("square", "orange"), names[:5]
    page.screenshot(path=SHOTS / "similar.png", full_page=True)

    drop(page, "dropped.png", "image/png", png(draw_shape("circle", "red", size=96, seed=8)))
    expect(page.locator("#viewer-title")).to_have_text("dropped.png")
    page.click("#similar")
    expect(page.locator("#summary")).to_contain_text("similar to dropped.png")
    names = shown_results(page)
    assert shapes[names[0]] == ("circle", "red"), names[:5]


def test_with_an_api_key_the_page_asks_for_it_then_works(
        page: Page, indexed: Any, tiny_clip_dir: Path) -> None:
    tmp, library, shapes = indexed
    env = indexed_env(tmp, library, tiny_clip_dir, "guarded", API_KEY=KEY)
    with running(env, tmp / "guarded.log") as guarded:
        assert httpx.get(f"{guarded.url}/ui/", timeout=30).status_code == 200  # the page is public
        assert httpx.get(f"{guarded.url}/health", timeout=30).status_code == 401  # its data is not
        page.goto(f"{guarded.url}/ui/")
        dialog = page.locator("#key-dialog")
        expect(dialog).to_be_visible()
        page.fill("#api-key", "wrong-key")
        page.press("#api-key", "Enter")
        expect(page.locator("#key-help")).to_contain_text("not accepted")
        page.screenshot(path=SHOTS / "api-key.png")
        page.fill("#api-key", KEY)
        page.press("#api-key", "Enter")
        expect(dialog).to_be_hidden()
        expect(page.locator("#status")).to_contain_text(f"{len(shapes)} images indexed")
        names = search(page, caption("circle", "purple"))
        assert shapes[names[0]] == ("circle", "purple"), names[:5]
        page.reload()  # kept for the browser session: not asked again
        expect(page.locator("#status")).to_contain_text("images indexed")
        expect(dialog).to_be_hidden()
        assert page.evaluate("sessionStorage.getItem('mms-api-key')") == KEY
