"""api/asking.py without a server: citation parsing, the message the VQA model gets, and the /ask,
/ask/stream and chat-"library" flows over a fake CLIP runner, an in-memory store and a fake VQA runner."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers.events import events
from PIL import Image
from qdrant_client import QdrantClient
from starlette.responses import Response

from api import chat_completions, chat_messages
from api.asking import NO_MATCH, Asking, cited_photos, photo_content, sources_markdown
from api.errors import ApiError
from api.http import json_body
from api.search_fields import SearchPage, search_page
from api.searching import Searching
from api.store_calls import StoreCalls
from api.vqa_requests import VqaRequests
from config import Settings
from core.library import Library
from store.interface import Point, point_id
from store.qdrant_server import ServerStore

MODEL = "clip-test"
COLOURS = {"red": (1.0, 0.0, 0.0), "green": (0.0, 1.0, 0.0), "blue": (0.0, 0.0, 1.0)}
INDEXED = {"red.png": (1.0, 0.0, 0.0), "gone.png": (0.97, 0.1, 0.0), "reddish.png": (0.9, 0.3, 0.0),
           "green.png": (0.0, 1.0, 0.0), "blue.png": (0.0, 0.0, 1.0)}


def unit(values: Any) -> np.ndarray:
    vector = np.asarray(values, dtype=np.float32)
    return vector / np.linalg.norm(vector)


class FakeClip:
    def __init__(self) -> None:
        self.to_async = self

    async def encode_texts(self, texts: list[str]) -> list[np.ndarray]:
        return [unit(COLOURS[text.split()[-1]]) for text in texts]


class FakeVqa:
    """The VQA runner's client: answers `answer`, streamed in two pieces after the header line."""

    def __init__(self, answer: str) -> None:
        self.to_async = self
        self.answer = answer
        self.requests: list[Any] = []

    async def generate(self, requests: list[Any]) -> list[dict[str, Any]]:
        self.requests += requests
        return [{"text": self.answer, "prompt_tokens": 9, "completion_tokens": 3, "finish_reason": "stop"}
                for _ in requests]

    async def stream(self, request: Any) -> AsyncIterator[str]:
        self.requests.append(request)
        yield '{"error": null}\n'
        half = len(self.answer) // 2
        yield self.answer[:half]
        yield self.answer[half:]


def png(colour: tuple[int, int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), colour).save(out, format="PNG")
    return out.getvalue()


@pytest.fixture
def library(tmp_path: Path) -> Library:
    root = tmp_path / "photos"
    root.mkdir()
    for name, colour in [("red.png", (255, 0, 0)), ("reddish.png", (230, 77, 0)), ("green.png", (0, 255, 0)),
                         ("blue.png", (0, 0, 255))]:
        (root / name).write_bytes(png(colour))
    return Library(root)  # gone.png is indexed but deleted since


@pytest.fixture
def store() -> ServerStore:
    store = ServerStore(QdrantClient(location=":memory:"), "images")
    store.ensure_collection(MODEL, 3)
    store.upsert([Point(point_id(rel), unit(v), {"path": rel, **({"description": "a red square"}
                                                                  if rel == "red.png" else {})})
                  for rel, v in INDEXED.items()])
    return store


def asking(store: Any, library: Library, answer: str = "Photo 2 shows it.", **settings: Any) -> tuple[Asking, FakeVqa]:
    config = Settings(_env_file=None, max_query_chars=40, **settings)  # type: ignore[call-arg]
    runner = FakeVqa(answer)
    searching = Searching(FakeClip(), StoreCalls(store, retry_after_s=7), library, MODEL, config)
    vqa = VqaRequests(runner, library, config)
    return Asking(searching, vqa, library, config), runner


def page(top_k: int, folder: str | None = None) -> SearchPage:
    return search_page(top_k, 0, False, 1000, folder=folder, modified_after=None, modified_before=None,
                       min_width=None, min_height=None, min_bytes=None)


def body_of(response: Response) -> str:
    async def read() -> str:
        return "".join([c if isinstance(c, str) else c.decode() async for c in response.body_iterator])  # type: ignore[attr-defined]

    return asyncio.run(read())


@pytest.mark.parametrize(("answer", "count", "cited"), [
    ("Photo 2 shows a red circle.", 3, [2]),
    ("photos 1 and 3 are red; image #2 is not", 3, [1, 2, 3]),
    ("In Picture 3, the car is blue", 3, [3]),
    ("图2里是红色的圆形。", 3, [2]),
    ("照片1、3中都有海。", 3, [1, 3]),
    ("第2张照片是蓝色的，第三张是绿色的", 3, [2, 3]),
    ("It is red [1][3], see also [2, 3]", 3, [1, 2, 3]),
    ("red (#2)", 2, [2]),
    ("photo 7 and photo 0 do not exist", 3, []),
    ("red", 3, []),
    ("There are 2 photos of 3 cats.", 3, []),
])
def test_cited_photos_reads_the_numbers_an_answer_names(answer: str, count: int, cited: list[int]) -> None:
    assert cited_photos(answer, count) == cited


def test_one_photo_and_no_instruction_is_exactly_what_vqa_sends(library: Library, tmp_path: Path) -> None:
    upload = tmp_path / "upload"
    upload.write_bytes(png((255, 0, 0)))
    config = Settings(_env_file=None)  # type: ignore[call-arg]
    vqa_request = VqaRequests(FakeVqa(""), library, config).build("What color is the shape?", upload, None, None, None)
    assert photo_content([png((255, 0, 0))], "What color is the shape?", "") == vqa_request.messages[0]["content"]


def test_several_photos_are_numbered_and_the_instruction_precedes_the_question() -> None:
    content = photo_content([b"one", b"two"], "Which is red?", "Answer from these photos.")
    assert content == [{"type": "text", "text": "Photo 1:"}, {"type": "image", "image": b"one"},
                       {"type": "text", "text": "Photo 2:"}, {"type": "image", "image": b"two"},
                       {"type": "text", "text": "Answer from these photos.\n\nWhich is red?"}]
    assert photo_content([b"one", b"two"], "q", "")[-1] == {"type": "text", "text": "q"}  # still numbered
    assert photo_content([b"one"], "q", "Name the photo.")[0] == {"type": "text", "text": "Photo 1:"}


def test_ask_answers_from_the_search_results_in_order_skipping_deleted_files(store: ServerStore,
                                                                              library: Library) -> None:
    ask, runner = asking(store, library, ask_instruction="INSTRUCT")
    question, query = ask.question(" Which one is red? ", "a red")
    answer = asyncio.run(ask.ask(question, query, 3, page(3)))
    assert [s["image"] for s in answer["sources"]] == ["red.png", "reddish.png"]  # gone.png: deleted, skipped
    first = answer["sources"][0]
    assert first["thumbnail_url"] == "/images/red.png?size=256" and first["image_url"] == "/images/red.png?size=0"
    assert first["description"] == "a red square" and "description" not in answer["sources"][1]
    assert first["score"] > answer["sources"][1]["score"]
    assert {k: answer[k] for k in ("status", "question", "answer", "cited")} == {
        "status": "success", "question": "Which one is red?", "answer": "Photo 2 shows it.", "cited": [2]}
    [request] = runner.requests
    assert request.messages[0]["content"] == photo_content(
        [png((255, 0, 0)), png((230, 77, 0))], "Which one is red?", "INSTRUCT")


def test_nothing_matching_answers_without_the_model(store: ServerStore, library: Library) -> None:
    ask, runner = asking(store, library)
    answer = asyncio.run(ask.ask("q", "red", 3, page(3, folder="nowhere")))
    assert answer == {"status": "success", "question": "q", "answer": NO_MATCH, "sources": [], "cited": []}
    assert runner.requests == []
    streamed = events(body_of(asyncio.run(ask.ask_stream("q", "red", 3, page(3, folder="nowhere")))))
    assert streamed == [("sources", {"sources": []}), ("delta", {"text": NO_MATCH}),
                        ("done", {"answer": NO_MATCH, "cited": []})]


def test_bad_questions_are_400_and_disabled_vqa_503(store: ServerStore, library: Library) -> None:
    ask, _ = asking(store, library)
    for question, query, expected in [("  ", None, "question is empty"), ("x" * 41, None, "question is longer"),
                                      ("q", "y" * 41, "query is longer")]:
        with pytest.raises(ApiError) as caught:
            ask.question(question, query)
        assert caught.value.status == 400 and expected in caught.value.message
    assert ask.question("red?", "  ") == ("red?", "red?")  # a blank query searches with the question
    disabled, _ = asking(store, library, vqa_enabled=False)
    with pytest.raises(ApiError) as caught:
        disabled.question("q", None)
    assert (caught.value.status, caught.value.code) == (503, "vqa_disabled")


def test_the_stream_sends_sources_then_deltas_then_cited(store: ServerStore, library: Library) -> None:
    ask, _ = asking(store, library, answer="图1是红色的")
    streamed = events(body_of(asyncio.run(ask.ask_stream("q", "red", 3, page(3)))))
    assert [name for name, _ in streamed] == ["sources", "delta", "delta", "done"]
    assert [s["image"] for s in streamed[0][1]["sources"]] == ["red.png", "reddish.png"]
    assert "".join(data["text"] for name, data in streamed if name == "delta") == "图1是红色的"
    assert streamed[-1][1] == {"answer": "图1是红色的", "cited": [1]}


def test_a_full_vqa_queue_refuses_the_stream_before_it_starts(store: ServerStore, library: Library) -> None:
    ask, _ = asking(store, library, vqa_max_queue=1)
    ask.vqa.in_flight = 1
    with pytest.raises(ApiError) as caught:
        asyncio.run(ask.ask_stream("q", "red", 2, page(2)))
    assert (caught.value.status, caught.value.code) == (503, "vqa_busy")


def chat(stream: bool) -> bytes:
    return json.dumps({"model": "library", "stream": stream,
                       "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
                                    {"role": "user", "content": "which is blue"}]}).encode()


def test_the_library_chat_model_answers_the_last_user_message_with_sources(store: ServerStore,
                                                                           library: Library) -> None:
    ask, runner = asking(store, library, answer="Photo 1 is blue.")
    plain = json.loads(bytes(asyncio.run(ask.chat_completion(chat(False), "/v1/chat/completions")).body))
    content = plain["choices"][0]["message"]["content"]
    assert plain["model"] == "library" and content.startswith("Photo 1 is blue.\n\nSources:\n")
    assert "1. [blue.png](/images/blue.png?size=0) (cited)" in content
    assert runner.requests[0].messages[0]["content"][-1]["text"].endswith("which is blue")
    streamed = body_of(asyncio.run(ask.chat_completion(chat(True), "/v1/chat/completions")))
    chunks = [json.loads(line[6:]) for line in streamed.split("\n\n") if line.startswith("data: {")]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert text == content and streamed.rstrip().endswith("data: [DONE]")


def test_only_a_body_naming_the_library_model_asks_the_library(store: ServerStore, library: Library) -> None:
    ask, runner = asking(store, library, answer="red")

    def answer(raw: bytes) -> dict[str, Any]:
        response = asyncio.run(chat_completions.complete(raw, "/v1/chat/completions", ask.vqa, ask))
        return dict(json.loads(bytes(response.body)))

    assert answer(chat(False))["model"] == "library"
    other = answer(b'{"model": "other", "messages": [{"role": "user", "content": "library"}]}')
    assert other["model"] == ask.vqa.model_id and other["choices"][0]["message"]["content"] == "red"
    assert runner.requests[-1].messages == [{"role": "user", "content": "library"}]
    with pytest.raises(ApiError) as caught:  # not JSON: 400, as the VQA chat answers it
        answer(b'{"model": "library"')
    assert (caught.value.status, caught.value.code) == (400, "invalid_json")
    assert sources_markdown([], []) == ""


@pytest.mark.parametrize(("model", "stream"), [("library", False), ("library", True), ("Qwen", False), ("Qwen", True)])
def test_a_chat_body_is_parsed_once_for_the_library_and_the_vqa_model(
        store: ServerStore, library: Library, monkeypatch: pytest.MonkeyPatch, model: str, stream: bool) -> None:
    ask, runner = asking(store, library, answer="Photo 1 is blue.")
    calls: list[str] = []

    def counted(name: str, parse: Any) -> Any:
        def wrapper(*args: Any) -> Any:
            calls.append(name)
            return parse(*args)
        return wrapper

    monkeypatch.setattr(chat_completions, "parse_json", counted("json", json_body.parse_json))
    monkeypatch.setattr(chat_completions, "parse_chat", counted("chat", chat_messages.parse_chat))
    raw = json.dumps({"model": model, "stream": stream, "messages": [{"role": "user", "content": "which is blue"}]})

    async def call() -> str:  # one event loop for the call and its stream, as a server reads it
        response = await chat_completions.complete(raw.encode(), "/v1/chat/completions", ask.vqa, ask)
        if not stream:
            return str(json.loads(bytes(response.body))["choices"][0]["message"]["content"])
        sent = [event async for event in response.body_iterator]  # type: ignore[attr-defined]
        return "".join(json.loads(e[6:])["choices"][0]["delta"].get("content") or "" for e in sent[:-1])

    text = asyncio.run(call())
    assert calls == ["json", "chat"]
    assert text.startswith("Photo 1 is blue.") and ("Sources:" in text) == (model == "library")
    assert len(runner.requests) == 1
