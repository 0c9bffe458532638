"""Descriptions and hybrid search end to end (issue 14), against the real `bentoml serve` with the trained tiny
models: the tiny CLIP ranks by colour, and the tiny describer (VQA_MODEL) writes what it reads in each photo,
including a word drawn into it. The library is indexed first without descriptions; `python -m indexer
--describe` then runs while the service holds the store (its writes go through the service), and the searches
change without a restart. The web page finds "发票" by the word written in the photo."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers.browser import launched, open_ui, search, tab
from playwright.sync_api import expect
from serving import Server, run_indexer, running, service_env
from shapes import COLOR_ZH, draw_described

# name -> (shape, colour, visible word); the words are those the tiny describer reads.
PHOTOS = {
    "receipts/shop.png": ("square", "blue", "发票"),
    "street/exit.png": ("circle", "green", "出口"),
    "street/sale.png": ("triangle", "red", "SALE"),
    "street/taxi.png": ("square", "yellow", "TAXI"),
    "plain/red_circle.png": ("circle", "red", ""),
    "plain/red_square.png": ("square", "red", ""),
    "plain/blue_circle.png": ("circle", "blue", ""),
    "plain/green_triangle.png": ("triangle", "green", ""),
    "plain/purple_circle.png": ("circle", "purple", ""),
    "plain/orange_square.png": ("square", "orange", ""),
}


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, tiny_clip_dir: Path,
          tiny_describer_dir: Path) -> Iterator[tuple[Server, dict[str, str]]]:
    tmp = tmp_path_factory.mktemp("hybrid")
    library = tmp / "photos"
    for seed, (rel, (shape, color, word)) in enumerate(PHOTOS.items()):
        (library / rel).parent.mkdir(parents=True, exist_ok=True)
        draw_described(shape, color, word, seed=100 + seed).save(library / rel)
    env = {**service_env(tmp, tiny_clip_dir, library, vqa_model=tiny_describer_dir), "VQA_QUANTIZATION": "none"}
    done = run_indexer(env)
    assert done.returncode == 0, done.stderr
    with running(env, tmp / "server.log") as srv:
        yield srv, env


def post(server: Server, path: str, **kwargs: Any) -> httpx.Response:
    return httpx.post(f"{server.url}{path}", timeout=120, **kwargs)


def ranked(server: Server, query: str, **fields: Any) -> tuple[str, list[dict[str, Any]]]:
    answer = post(server, "/text2image_search", json={"text_query": query, "top_k": len(PHOTOS),
                                                       "include_image": False, **fields})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    return body["mode"], body["results"]


def names(results: list[dict[str, Any]]) -> list[str]:
    return [r["image"] for r in results]


@pytest.fixture(scope="module")
def described(setup: tuple[Server, dict[str, str]]) -> dict[str, Any]:
    """Before: what the searches give on an index without descriptions. Then `--describe` runs through the
    live service; returns the before-figures and the indexer's summary."""
    server, env = setup
    before = {"vector": ranked(server, "qzx"), "red": ranked(server, "红色"),
              "text": post(server, "/text2image_search", json={"text_query": "发票", "mode": "text"}),
              "health": httpx.get(f"{server.url}/health", timeout=60).json()}
    done = run_indexer(env, "--describe", "--json")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    deadline = time.monotonic() + 30
    while ranked(server, "qzx")[0] != "hybrid" and time.monotonic() < deadline:  # DESCRIBED_TTL_S
        time.sleep(0.5)
    return {"before": before, "summary": summary}


def test_before_describe_search_is_vector_and_text_mode_says_how_to_fix(described: dict[str, Any]) -> None:
    before = described["before"]
    assert before["vector"][0] == "vector" and before["red"][0] == "vector"
    refused = before["text"]
    assert refused.status_code == 409, refused.text
    assert refused.json()["error"]["code"] == "no_descriptions"
    assert "python -m indexer --describe" in refused.json()["error"]["message"]
    assert before["health"]["described_images"] == 0 and before["health"]["descriptions_by"] == {}
    assert all("description" not in r for r in before["vector"][1])


def test_describe_through_the_live_service_describes_every_photo_once(setup: tuple[Server, dict[str, str]],
                                                                      described: dict[str, Any]) -> None:
    server, env = setup
    summary = described["summary"]
    assert (summary["described"], summary["describe_failed"], summary["added"]) == (len(PHOTOS), 0, 0)
    health = httpx.get(f"{server.url}/health", timeout=60).json()
    assert health["described_images"] == len(PHOTOS)
    [(by, count)] = health["descriptions_by"].items()
    assert count == len(PHOTOS) and by.startswith(env["VQA_MODEL"])
    again = run_indexer(env, "--describe", "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["described"] == 0


def test_text_mode_finds_photos_by_the_word_written_in_them(setup: tuple[Server, dict[str, str]],
                                                           described: dict[str, Any]) -> None:
    server, _ = setup
    for rel, (_, _, word) in PHOTOS.items():
        if not word:
            continue
        mode, results = ranked(server, word, mode="text")
        assert mode == "text" and names(results) == [rel], (word, results)
        assert results[0]["visible_text"] == word
        assert results[0]["description"]
    mode, results = ranked(server, "发票")  # the default mode, now that the index holds descriptions
    assert mode == "hybrid" and names(results)[0] == "receipts/shop.png"


def test_text_mode_finds_photos_by_their_described_colour(setup: tuple[Server, dict[str, str]],
                                                         described: dict[str, Any]) -> None:
    server, _ = setup
    _, results = ranked(server, COLOR_ZH["red"], mode="text")
    red = {rel for rel, (_, color, _) in PHOTOS.items() if color == "red"}
    assert set(names(results)[:len(red)]) == red
    assert all(COLOR_ZH["red"] in r["description"] for r in results[:len(red)])


def test_hybrid_keeps_the_clip_ranking_where_descriptions_say_nothing(setup: tuple[Server, dict[str, str]],
                                                                      described: dict[str, Any]) -> None:
    server, _ = setup
    mode, hybrid = ranked(server, "qzx", mode="hybrid")
    vector_mode, vector = ranked(server, "qzx", mode="vector")
    assert (mode, vector_mode) == ("hybrid", "vector")
    assert names(hybrid) == names(vector) == names(described["before"]["vector"][1])
    # vector mode still answers the cosine, exactly as before the descriptions existed
    assert [r["score"] for r in vector] == [r["score"] for r in described["before"]["vector"][1]]


def test_bad_modes_and_ask_with_a_mode(setup: tuple[Server, dict[str, str]], described: dict[str, Any]) -> None:
    server, _ = setup
    bad = post(server, "/text2image_search", json={"text_query": "发票", "mode": "bm25"})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_argument"
    asked = post(server, "/ask", json={"question": "What is written here?", "query": "出口", "mode": "text",
                                       "top_k": 1})
    assert asked.status_code == 200, asked.text
    source = asked.json()["sources"][0]
    assert (source["image"], source["visible_text"]) == ("street/exit.png", "出口")


def test_the_page_shows_descriptions_and_finds_the_invoice(setup: tuple[Server, dict[str, str]],
                                                           described: dict[str, Any]) -> None:
    server, _ = setup
    with launched() as browser, tab(browser) as page:
        open_ui(page, server)
        expect(page.locator("#status")).to_contain_text(f"{len(PHOTOS)} described")
        shown = search(page, "发票")
        assert shown[0] == "receipts/shop.png"
        first = page.locator("#grid .card").first
        expect(first.locator(".visible-text")).to_have_text("“发票”")
        expect(first.locator(".description")).not_to_be_empty()
        expect(page.locator("#summary")).to_contain_text("ranked by photos and descriptions")
        page.select_option("#mode", "vector")
        search(page, COLOR_ZH["red"])
        expect(page.locator("#summary")).to_contain_text("ranked by the photos (CLIP)")
