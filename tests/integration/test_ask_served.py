"""Asking the library against the real `bentoml serve` with the trained tiny models: /ask, /ask/stream,
the chat model "library" (official openai client) and the web page's "Ask your library" box. One server,
with ASK_INSTRUCTION="" so that one photo gets exactly what /vqa sends for it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from helpers.browser import launched, open_ui, tab, wait_until
from helpers.events import events
from playwright.sync_api import Route, expect
from serving import Server, run_indexer, running, service_env
from shapes import make_library

COLOR_Q = "What color is the shape?"
RED_CIRCLE = "红色的圆形"
NO_MATCH_START = "No photos in the library matched"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, tiny_clip_dir: Path) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("ask")
    library = tmp / "photos"
    make_library(library, n_per_class=2, seed=11)
    env = {**service_env(tmp, tiny_clip_dir, library), "ASK_INSTRUCTION": "", "ASK_MAX_IMAGES": "4"}
    done = run_indexer(env)
    assert done.returncode == 0, done.stderr
    with running(env, tmp / "server.log") as srv:
        yield srv


def post(server: Server, path: str, **kwargs: Any) -> httpx.Response:
    return httpx.post(f"{server.url}{path}", timeout=120, **kwargs)


def test_ask_with_one_photo_answers_what_vqa_answers_for_it(server: Server) -> None:
    top = post(server, "/text2image_search", json={"text_query": RED_CIRCLE, "top_k": 3, "include_image": "thumbnail"})
    first = top.json()["results"][0]
    asked = post(server, "/ask", json={"question": COLOR_Q, "query": RED_CIRCLE, "top_k": 1})
    assert asked.status_code == 200, asked.text
    body = asked.json()
    assert [s["image"] for s in body["sources"]] == [first["image"]]
    assert {k: body["sources"][0][k] for k in ("thumbnail_url", "image_url")} == {
        k: first[k] for k in ("thumbnail_url", "image_url")}
    vqa = post(server, "/vqa", data={"question": COLOR_Q, "image_id": first["image"]}).json()
    assert body["answer"] == vqa["answer"] == "red"
    assert (body["status"], body["question"], body["cited"]) == ("success", COLOR_Q, [])
    several = post(server, "/ask", data={"question": COLOR_Q, "query": RED_CIRCLE, "top_k": 3}).json()  # a form
    assert [s["image"] for s in several["sources"]] == [r["image"] for r in top.json()["results"]]


def test_the_stream_sends_sources_before_any_text_then_cited(server: Server) -> None:
    with httpx.stream("POST", f"{server.url}/ask/stream", timeout=120,
                      json={"question": COLOR_Q, "query": RED_CIRCLE, "top_k": 2}) as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        streamed = events(response.read().decode())
    names = [name for name, _ in streamed]
    assert names[0] == "sources" and names[-1] == "done" and set(names[1:-1]) == {"delta"}
    plain = post(server, "/ask", json={"question": COLOR_Q, "query": RED_CIRCLE, "top_k": 2}).json()
    assert streamed[0][1]["sources"] == plain["sources"] and len(plain["sources"]) == 2
    text = "".join(data["text"] for name, data in streamed if name == "delta")
    assert streamed[-1][1] == {"answer": text, "cited": plain["cited"]} and text == plain["answer"]


def test_the_openai_client_asks_the_library(server: Server) -> None:
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused")
    assert "library" in [m.id for m in client.models.list().data]
    messages: Any = [{"role": "user", "content": f"{RED_CIRCLE}: {COLOR_Q}"}]
    reply = client.chat.completions.create(model="library", messages=messages, temperature=0)
    content = reply.choices[0].message.content or ""
    assert reply.model == "library" and "\n\nSources:\n1. [" in content and "](/images/" in content
    assert content.split("\n\nSources:")[0].strip()
    stream: Any = client.chat.completions.create(model="library", messages=messages, temperature=0, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == content


def test_bad_input_is_400_and_no_match_is_200_without_sources(server: Server) -> None:
    for body, field in [({"question": "  "}, "question"), ({"question": "q", "top_k": 0}, "top_k"),
                        ({"question": "q", "top_k": 5}, "top_k"), ({"question": "x" * 600}, "question"),
                        ({"question": "q", "modified_after": "yesterday"}, "modified_after")]:
        for path in ("/ask", "/ask/stream"):
            refused = post(server, path, json=body)
            assert refused.status_code == 400 and field in refused.json()["error"]["message"], (path, body)
    empty = post(server, "/ask", json={"question": COLOR_Q, "folder": "no/such/folder"})
    assert empty.status_code == 200
    assert empty.json()["sources"] == [] and empty.json()["cited"] == []
    assert empty.json()["answer"].startswith(NO_MATCH_START)
    chat = post(server, "/v1/chat/completions", json={"model": "library", "messages": []})
    assert chat.status_code == 400


def canned_stream(route: Route) -> None:
    """The answer of /ask/stream for the page's second question, naming photo 2 (the tiny model names none)."""
    body = json.loads(route.request.post_data or "{}")
    real = httpx.post(route.request.url.replace("/ask/stream", "/ask"), json=body, timeout=120).json()
    events_text = "".join(f"event: {name}\ndata: {json.dumps(data)}\n\n" for name, data in [
        ("sources", {"sources": real["sources"]}), ("delta", {"text": "Photo 2 "}), ("delta", {"text": "is red."}),
        ("done", {"answer": "Photo 2 is red.", "cited": [2]})])
    route.fulfill(status=200, headers={"Content-Type": "text/event-stream"}, body=events_text)


def test_the_page_asks_the_library_and_marks_the_cited_sources(server: Server) -> None:
    expected = post(server, "/ask", json={"question": f"{RED_CIRCLE} {COLOR_Q}", "top_k": 3}).json()
    with launched() as browser, tab(browser) as page:
        open_ui(page, server)
        page.fill("#library-question", f"{RED_CIRCLE} {COLOR_Q}")
        page.press("#library-question", "Enter")
        wait_until(page, "() => document.querySelector('#library-answer').dataset.state === 'done'")
        expect(page.locator("#library-answer")).to_have_text(expected["answer"])
        names = page.eval_on_selector_all("#library-sources .source", "cards => cards.map(c => c.dataset.image)")
        assert names == [s["image"] for s in expected["sources"]]
        wait_until(page, "() => [...document.querySelectorAll('#library-sources img')]"
                         ".every(img => img.complete && img.naturalWidth > 0)")
        assert page.locator("#library-sources .source.cited").count() == len(expected["cited"])

        page.route("**/ask/stream", canned_stream)
        page.fill("#library-question", "Which one is red?")
        page.press("#library-question", "Enter")
        wait_until(page, "() => document.querySelector('#library-answer').textContent === 'Photo 2 is red.'")
        wait_until(page, "() => document.querySelectorAll('#library-sources .source.cited').length === 1")
        cited = page.locator("#library-sources .source.cited")
        assert cited.get_attribute("data-number") == "2"
        expect(cited.locator(".cited-mark")).to_be_visible()
        cited.click()
        expect(page.locator("#viewer")).to_be_visible()
        expect(page.locator("#viewer-title")).to_have_text(cited.get_attribute("data-image") or "")
