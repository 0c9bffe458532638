"""Hostile file names (issue 11) through the whole path, one `bentoml serve` for the module: a library
of every kind of name (tests/helpers/hostile_names.py: newlines, `%`, `#`, `?`, quotes, HTML, emoji,
Chinese, NFC and NFD, 255 bytes, names that are not UTF-8) → `python -m indexer --json` → search →
each thumbnail_url and image_url → `image_id` on /image2image_search and /vqa → the web page."""

from __future__ import annotations

import base64
import json
import posixpath
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import httpx
import pytest
from helpers.browser import launched, open_ui, search, tab, wait_until
from helpers.hostile_names import INDEXED, REASON, SKIPPED, make_hostile_library
from playwright.sync_api import expect
from serving import Server, run_indexer, running, service_env

QUERY = "红色"
GBK = "\\xc9\\xcf\\xba\\xa3.jpg"  # GBK 上海.jpg, as the service names it
NAMES = set(INDEXED.values())
BYTES_OF: dict[str, bytes] = {}  # library name -> the file's bytes
ASKED_BY_VQA = [name for name in INDEXED.values() if "\\x" in name or "\n" in name or len(name) > 200
                or "#" in name or "?" in name or "😀" in name]


class Served(NamedTuple):
    server: Server
    summary: dict[str, Any]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, tiny_clip_dir: Path) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("hostile-names")
    written = make_hostile_library(tmp / "photos")
    BYTES_OF.update({INDEXED[raw]: data for raw, data in written.items() if raw in INDEXED})
    env = service_env(tmp, tiny_clip_dir, tmp / "photos")
    done = run_indexer(env, "--json")
    assert done.returncode == 0, done.stderr
    with running(env, tmp / "server.log") as server:
        yield Served(server, json.loads(done.stdout))


def post(served: Served, endpoint: str, timeout: float = 120, **fields: Any) -> Any:
    response = httpx.post(f"{served.server.url}{endpoint}", json=fields, timeout=timeout)
    assert response.status_code == 200, (endpoint, fields, response.text)
    return response.json()


def test_the_indexer_takes_every_name_and_lists_the_skipped(served: Served) -> None:
    summary = served.summary
    assert (summary["added"], summary["failed"]) == (len(INDEXED), len(SKIPPED)), summary["failures"]
    assert sorted(map(tuple, summary["failures"])) == sorted((name, REASON) for name in SKIPPED.values())


def test_search_returns_every_name_and_its_urls_serve_its_bytes(served: Served) -> None:
    results = post(served, "/text2image_search", text_query=QUERY, top_k=100, include_image="thumbnail")["results"]
    assert {r["image"] for r in results} == NAMES
    with httpx.Client(base_url=served.server.url, timeout=60) as client:
        for result in results:
            original = client.get(result["image_url"])
            assert (original.status_code, original.content) == (200, BYTES_OF[result["image"]]), result
            thumbnail = client.get(result["thumbnail_url"])
            assert thumbnail.status_code == 200 and thumbnail.headers["content-type"] == "image/jpeg", result
        assert client.get("/images/%5Cxc9%5Cxcf%5Cxba%5Cxa3.jpg").status_code == 404  # the name is no URL
    inline = post(served, "/text2image_search", text_query=QUERY, top_k=100, include_image=True)["results"]
    assert {r["image"]: base64.b64decode(r["image_base64"]) for r in inline} == BYTES_OF


def test_every_name_works_as_image_id(served: Served) -> None:
    for name in sorted(NAMES):
        body = post(served, "/image2image_search", image_id=name, top_k=3, include_image="thumbnail")
        found = [r["image"] for r in body["results"]]  # its stored vector found, itself left out by its id
        assert body["query"] == name and len(found) == 3 and name not in found, (name, found)
    for name in ASKED_BY_VQA:
        response = httpx.post(f"{served.server.url}/vqa", data={"question": "What color is the shape?",
                                                                "image_id": name}, timeout=120)
        assert response.status_code == 200 and response.json()["answer"], (name, response.text)


def test_the_page_shows_every_name_as_text_and_opens_it(served: Served) -> None:
    dialogs: list[str] = []
    with launched() as browser, tab(browser) as page:

        def on_dialog(dialog: Any) -> None:  # an alert() from a name that ran as markup
            dialogs.append(dialog.message)
            dialog.dismiss()

        page.on("dialog", on_dialog)
        open_ui(page, served.server)
        page.select_option("#top-k", "50")
        assert set(search(page, QUERY)) == NAMES  # every thumbnail loaded (alt = the name)
        shown = page.eval_on_selector_all("#grid .card .name", "spans => spans.map(s => [s.textContent, s.title])")
        assert sorted(map(tuple, shown)) == sorted((posixpath.basename(name), name) for name in NAMES)
        assert page.locator("#grid script, #grid img[src='x']").count() == 0 and not dialogs  # no markup ran
        for name in [GBK, "new\nline.jpg", "<script>alert(1)</script>.jpg"]:
            open_card(page, name)
            wait_until(page, "() => document.getElementById('viewer-img').naturalWidth > 0")
            page.keyboard.press("Escape")
        open_card(page, GBK)
        page.click("#similar")  # image_id from the page
        expect(page.locator("#summary")).to_contain_text(f"similar to {GBK}")
        similar = search_names(page)
        assert len(similar) == len(NAMES) - 1 and GBK not in similar  # every other name, itself left out
        assert page.locator("#grid script, #grid img[src='x']").count() == 0 and not dialogs


def open_card(page: Any, name: str) -> None:
    """Open the result named `name` and wait until the viewer shows that very name as text."""
    index = page.eval_on_selector_all("#grid .card", "cards => cards.map(c => c.dataset.image)").index(name)
    page.locator("#grid .card").nth(index).click()
    wait_until(page, "name => document.getElementById('viewer-title').textContent === name", name)


def search_names(page: Any) -> list[str]:
    wait_until(page, "() => [...document.querySelectorAll('#grid img')]"
                     ".every(img => img.complete && img.naturalWidth > 0)")
    names: list[str] = page.eval_on_selector_all("#grid .card img", "imgs => imgs.map(img => img.alt)")
    return names
