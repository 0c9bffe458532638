"""Issue 22 D11: /ask answers only from photos whose picture supports the query (api/asking.py `pictured`).

Words drawn on a photo reach its description (the tiny describer reads them into `visible_text`), and hybrid
ranking then lifts that photo for a query holding the word, whatever the picture shows: here three blue
squares with TAXI drawn on them (described) beat three red circles (indexed later, not described yet) for
"red circle TAXI", although CLIP ranks every circle above them. The rule: such a photo
goes to the VQA model, and so can be cited, only when CLIP's image-text ranking alone also puts it among the
ASK_CLIP_SUPPORT best photos for the query. Real tiny models index, describe and encode the query; the VQA
runner is a recorder (the rule is about which photos it is given, not about its answer)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers.indexing import index
from shapes import draw_described

from api.asking import Asking
from api.search_fields import SearchPage, search_page
from api.searching import Searching
from api.store_calls import StoreCalls
from api.vqa_requests import VqaRequests
from config import DEFAULT_DESCRIBE_PROMPT, Settings
from core.library import Library
from indexer.describe_stage import DescribeStage
from indexer.payload_stage import PayloadOptions
from indexer.pipeline import Summary
from runners.clip import ClipEncoder
from runners.vlm import VisionLanguageModel
from runners.vlm.describe import Describer
from store import memory_store

QUERY = "红色的圆形 TAXI"  # the picture of a red circle, or the word TAXI
CIRCLES = 3


class ClipRunner:
    """The tiny CLIP as the service's runner client (`to_async.encode_texts`)."""

    def __init__(self, encoder: ClipEncoder) -> None:
        self.encoder = encoder
        self.to_async = self

    async def encode_texts(self, texts: list[str]) -> np.ndarray:
        return self.encoder.encode_texts(texts)


class RecordingVqa:
    def __init__(self) -> None:
        self.to_async = self
        self.requests: list[Any] = []

    async def generate(self, requests: list[Any]) -> list[dict[str, Any]]:
        self.requests += requests
        return [{"text": "Photo 1.", "prompt_tokens": 1, "completion_tokens": 1, "finish_reason": "stop"}
                for _ in requests]


@pytest.fixture(scope="module")
def described(tmp_path_factory: pytest.TempPathFactory, tiny_clip_dir: Path,
              tiny_describer: VisionLanguageModel) -> Iterator[tuple[Any, Path, ClipEncoder]]:
    """Three blue squares with TAXI drawn on them, indexed and described; then three red circles, indexed."""
    root = tmp_path_factory.mktemp("ask-rule") / "photos"
    root.mkdir()
    for i in range(3):
        draw_described("square", "blue", "TAXI", seed=i).save(root / f"taxi-{i}.png")
    encoder = ClipEncoder(str(tiny_clip_dir), "cpu", model_id="tiny")
    store = memory_store()
    index(store, encoder, root)
    describer = Describer(tiny_describer, DEFAULT_DESCRIBE_PROMPT, max_new_tokens=40)
    DescribeStage(store, root, describer.described_by, lambda: describer, Summary(),
                  PayloadOptions(batch_size=3, workers=1, progress=False)).run()
    for i in range(CIRCLES):
        draw_described("circle", "red", "", seed=i).save(root / f"circle-{i}.png")
    index(store, encoder, root)
    yield store, root, encoder
    store.close()


def page(top_k: int) -> SearchPage:
    return search_page(top_k, 0, False, 1000, folder=None, modified_after=None, modified_before=None,
                       min_width=None, min_height=None, min_bytes=None)


def ask(described: tuple[Any, Path, ClipEncoder], **settings: Any) -> tuple[dict[str, Any], RecordingVqa]:
    store, root, encoder = described
    config = Settings(_env_file=None, **settings)  # type: ignore[call-arg]
    library = Library(root)
    vqa = RecordingVqa()
    searching = Searching(ClipRunner(encoder), StoreCalls(store, retry_after_s=1), library, "tiny", config)
    asking = Asking(searching, VqaRequests(vqa, library, config), library, config)
    return asyncio.run(asking.ask("Which photo?", QUERY, 3, page(3), "hybrid")), vqa


def test_the_describer_read_the_drawn_word_and_clip_sees_the_circles(described: Any) -> None:
    store, _, encoder = described
    texts = {p["path"]: p.get("visible_text") for _, p in store.payloads()}
    assert all(texts[f"taxi-{i}.png"] == "TAXI" for i in range(3)), texts
    clip_best = store.search(encoder.encode_texts([QUERY])[0], CIRCLES)
    assert {hit.payload["path"] for hit in clip_best} == {f"circle-{i}.png" for i in range(CIRCLES)}


def test_without_the_rule_a_photo_that_only_says_the_query_is_answered_from(described: Any) -> None:
    answer, vqa = ask(described, ask_clip_support=0)
    sources = [s["image"] for s in answer["sources"]]
    assert sources and all(name.startswith("taxi-") for name in sources), sources  # the defect the rule answers


def test_with_the_rule_only_photos_clip_supports_are_given_to_the_model_and_cited(described: Any) -> None:
    answer, vqa = ask(described, ask_clip_support=CIRCLES)
    sources = [s["image"] for s in answer["sources"]]
    assert sorted(sources) == [f"circle-{i}.png" for i in range(CIRCLES)], sources  # refilled from the ranking
    images = [part for part in vqa.requests[0].messages[0]["content"] if part["type"] == "image"]
    assert len(images) == len(sources)  # what the model saw is what the answer lists
    assert answer["cited"] == [1]
