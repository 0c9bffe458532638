"""api/searching.py without a server: a fake CLIP runner, an in-memory Qdrant store, a tmp library."""

from __future__ import annotations

import asyncio
import base64
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from qdrant_client import QdrantClient
from starlette.responses import StreamingResponse

from api.errors import ApiError
from api.read_text import text_query
from api.search_fields import SearchPage, search_page
from api.searching import Searching, query_text
from api.store_calls import StoreCalls
from config import Settings
from core.library import Library
from store.interface import Point, StoreError, point_id
from store.qdrant_server import ServerStore

MODEL = "clip-test"
COLOURS = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255)}


def unit(values: Any) -> np.ndarray:
    vector = np.asarray(values, dtype=np.float32)
    return vector / np.linalg.norm(vector)


class FakeClip:
    """The CLIP runner's client: a text names a colour, an image is the vector of its corner pixel."""

    def __init__(self) -> None:
        self.to_async = self
        self.calls: list[str] = []

    async def encode_texts(self, texts: list[str]) -> list[np.ndarray]:
        self.calls.append("texts")
        return [unit(COLOURS[text]) for text in texts]

    async def encode_images(self, images: list[Image.Image]) -> list[np.ndarray]:
        self.calls.append("images")
        return [unit(image.convert("RGB").getpixel((0, 0))) for image in images]


class BrokenStore:
    """A store that cannot answer (the embedded store held by an indexer, a server down)."""

    def info(self) -> Any:
        raise StoreError("the store is locked by another process")


def png(colour: tuple[int, int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), colour).save(out, format="PNG")
    return out.getvalue()


INDEXED = {"red.png": (1.0, 0.0, 0.0), "reddish.png": (0.9, 0.3, 0.0), "green.png": (0.0, 1.0, 0.0),
           "blue.png": (0.0, 0.0, 1.0), "link_hidden.png": (0.95, 0.0, 0.1)}


@pytest.fixture
def library(tmp_path: Path) -> Library:
    root = tmp_path / "photos"
    root.mkdir()
    for name, colour in [("red.png", (255, 0, 0)), ("reddish.png", (230, 77, 0)), ("green.png", (0, 255, 0)),
                         ("blue.png", (0, 0, 255)), ("unindexed.png", (9, 9, 9)), (".secret.png", (1, 2, 3))]:
        (root / name).write_bytes(png(colour))
    (root / "link_hidden.png").symlink_to(root / ".secret.png")  # indexed before the rule refused it
    return Library(root)


@pytest.fixture
def store() -> ServerStore:
    store = ServerStore(QdrantClient(location=":memory:"), "images")
    store.ensure_collection(MODEL, 3)
    store.upsert([Point(point_id(rel), unit(v), {"path": rel}) for rel, v in INDEXED.items()])
    return store


def searching(store: Any, library: Library, model_id: str = MODEL) -> tuple[Searching, FakeClip]:
    clip, settings = FakeClip(), Settings(_env_file=None)  # type: ignore[call-arg]
    return Searching(clip, StoreCalls(store, retry_after_s=7), library, model_id, settings), clip


def page(exclude: tuple[str, ...] = ()) -> SearchPage:
    return search_page(10, 0, False, 1000, exclude=exclude)


def answered(search: Searching, call: Any) -> list[dict[str, Any]]:
    """The results as a client reads them from the answer (streamed when it carries base64 files)."""

    async def run() -> list[dict[str, Any]]:
        got = await call
        results = got[0] if isinstance(got, tuple) else got  # by_text answers (results, mode)
        response = await search.answer({"status": "success", "query": "q", "results": results})
        if isinstance(response, StreamingResponse):
            body = b"".join([chunk async for chunk in response.body_iterator])  # type: ignore[misc]
        else:
            body = bytes(response.body)
        return list(json.loads(body)["results"])

    return asyncio.run(run())


def refusal(call: Any) -> ApiError:
    with pytest.raises(ApiError) as caught:
        asyncio.run(call) if asyncio.iscoroutine(call) else call()
    return caught.value


def test_text_search_ranks_by_cosine_and_reads_only_library_files(store: ServerStore, library: Library) -> None:
    search, clip = searching(store, library)
    results = answered(search, search.by_text("red", 3, page(), include_image=True))
    assert [r["image"] for r in results] == ["red.png", "link_hidden.png", "reddish.png"]
    assert results[0]["score"] == pytest.approx(1.0, abs=1e-5) and results[0]["score"] > results[1]["score"]
    assert base64.b64decode(results[0]["image_base64"]) == (library.root / "red.png").read_bytes()
    assert results[1]["image_base64"] is None  # a link to a hidden file: never read, whatever the index holds
    assert clip.calls == ["texts"]
    plain = answered(search, search.by_text("blue", 1, page(), include_image=False))
    assert plain == [{"image": "blue.png", "score": pytest.approx(1.0, abs=1e-5), "media": "image"}]
    urls = answered(search, search.by_text("green", 1, page(), include_image="thumbnail"))[0]
    assert urls["thumbnail_url"] == "/images/green.png?size=256" and "image_base64" not in urls


def test_image_id_uses_the_stored_vector_and_leaves_itself_out(store: ServerStore, library: Library) -> None:
    search, clip = searching(store, library)
    rel = search.library_id("./red.png")
    assert rel == "red.png"
    results = asyncio.run(search.by_image_id(rel, 2, page(exclude=(point_id(rel),)), include_image=False))
    assert [r["image"] for r in results] == ["link_hidden.png", "reddish.png"] and clip.calls == []


def test_an_upload_is_encoded_by_the_runner(store: ServerStore, library: Library, tmp_path: Path) -> None:
    search, clip = searching(store, library)
    upload = tmp_path / "tmpabcdefghgreen.png"
    upload.write_bytes(png((0, 250, 5)))
    results = asyncio.run(search.by_upload(upload, 1, page(), include_image=False))
    assert results[0]["image"] == "green.png" and clip.calls == ["images"]
    upload.write_bytes(b"not an image")
    junk = refusal(search.by_upload(upload, 1, page(), include_image=False))
    assert (junk.status, junk.code) == (400, "invalid_argument") and junk.message.startswith("image:")


@pytest.mark.parametrize("image_id", ["missing.png", ".secret.png", "link_hidden.png", "../photos/red.png",
                                      "/etc/passwd", "red.png\0.txt", "notes.txt", ""])
def test_an_image_id_the_library_refuses_is_404_like_a_missing_one(store: ServerStore, library: Library,
                                                                   image_id: str) -> None:
    search, _ = searching(store, library)
    error = refusal(lambda: search.library_id(image_id))
    assert (error.status, error.code, error.message) == (404, "not_found",
                                                         f"image_id {image_id!r} is not in the image library")


def test_a_library_file_not_in_the_index_is_404(store: ServerStore, library: Library) -> None:
    search, _ = searching(store, library)
    error = refusal(search.by_image_id(search.library_id("unindexed.png"), 2, page(), include_image=False))
    assert (error.status, error.code) == (404, "not_found") and "not in the image index" in error.message


def test_an_index_of_another_model_is_409(store: ServerStore, library: Library) -> None:
    search, clip = searching(store, library, model_id="another-clip")
    error = refusal(search.by_text("red", 3, page(), include_image=False))
    assert (error.status, error.code) == (409, "model_mismatch") and "another-clip" in error.message
    assert clip.calls == []  # refused before the runner is asked


def test_a_store_that_cannot_answer_is_503_with_retry_after(library: Library) -> None:
    search, _ = searching(BrokenStore(), library)
    error = refusal(search.by_text("red", 3, page(), include_image=False))
    assert (error.status, error.code, error.headers) == (503, "store_unavailable", {"Retry-After": "7"})
    assert "locked" in error.message


def test_query_text_is_stripped_and_bounded() -> None:
    assert query_text("  红色的圆形 ", 10) == "红色的圆形"
    for text in ("", "   ", "x" * 11):
        error = refusal(lambda text=text: query_text(text, 10))
        assert (error.status, error.code) == (400, "invalid_argument")


def test_a_base64_answer_over_the_bound_is_400_before_any_file_is_read(library: Library) -> None:
    store = ServerStore(QdrantClient(location=":memory:"), "images")
    store.ensure_collection(MODEL, 3)
    sizes = {"red.png": 30 * 1024 * 1024, "reddish.png": 30 * 1024 * 1024}  # as the index records them
    store.upsert([Point(point_id(rel), unit(INDEXED[rel]), {"path": rel, "size": size}) for rel, size in sizes.items()])
    search, _ = searching(store, library)
    read: list[str] = []
    original = search.read_file

    def spy(rel: str) -> bytes | None:
        read.append(rel)
        return original(rel)

    search.read_file = spy  # type: ignore[method-assign]
    error = refusal(search.by_text("red", 2, page(), include_image=True))
    assert (error.status, error.code) == (400, "response_too_large")
    assert "80 MB, over SEARCH_MAX_RESPONSE_MB (64 MB)" in error.message and read == []
    one = answered(search, search.by_text("red", 1, page(), include_image=True))  # 40 MB of base64 fits
    assert [r["image"] for r in one] == ["red.png"] and read == ["red.png"]
    urls = answered(search, search.by_text("red", 2, page(), include_image="thumbnail"))
    assert len(urls) == 2 and read == ["red.png"]


def test_a_base64_answer_is_streamed_with_files_read_off_the_event_loop(tmp_path: Path) -> None:
    """A file bigger than one base64 piece, a refused one and a plain value, all in one streamed answer
    that parses to exactly what json.dumps of the whole answer would give."""
    import threading

    root = tmp_path / "photos"
    root.mkdir()
    big = bytes(range(256)) * 3000 + b"tail"  # 768,004 bytes: several pieces, not a multiple of 3
    (root / "big.png").write_bytes(big)
    (root / "red.png").write_bytes(png((255, 0, 0)))
    store = ServerStore(QdrantClient(location=":memory:"), "images")
    store.ensure_collection(MODEL, 3)
    store.upsert([Point(point_id("big.png"), unit((1, 0, 0)), {"path": "big.png"}),
                  Point(point_id("gone.png"), unit((0.9, 0.1, 0)), {"path": "gone.png"}),
                  Point(point_id("red.png"), unit((0.8, 0.2, 0)), {"path": "red.png"})])
    search, _ = searching(store, Library(root))
    threads: list[str] = []
    original = search.read_file

    def spy(rel: str) -> bytes | None:
        threads.append(threading.current_thread().name)
        return original(rel)

    search.read_file = spy  # type: ignore[method-assign]
    results = answered(search, search.by_text("red", 3, page(), include_image=True))
    assert [r["image"] for r in results] == ["big.png", "gone.png", "red.png"]
    assert base64.b64decode(results[0]["image_base64"]) == big and results[1]["image_base64"] is None
    assert base64.b64decode(results[2]["image_base64"]) == (root / "red.png").read_bytes()
    assert list(results[0]) == ["image", "score", "media", "image_base64"]  # the seed's order, media before the file
    assert len(threads) == 3 and all(name.startswith("files") for name in threads)


# ---------------------------------------------------------------- modes (issue 14)

def describe(store: ServerStore, rel: str, description: str, visible_text: str = "") -> None:
    store.set_descriptions({point_id(rel): {"description": description, "visible_text": visible_text,
                                            "tags": [], "described_by": "vlm#p1"}})


def test_without_descriptions_the_default_is_vector_and_text_mode_is_409(store: ServerStore,
                                                                         library: Library) -> None:
    search, clip = searching(store, library)
    hits, mode = asyncio.run(search.text_hits(text_query("red"), 3, page()))
    assert mode == "vector" and [h.payload["path"] for h in hits] == ["red.png", "link_hidden.png", "reddish.png"]
    error = refusal(search.text_hits(text_query("red"), 3, page(), "text"))
    assert (error.status, error.code) == (409, "no_descriptions")
    assert "python -m indexer --describe" in error.message


def test_with_descriptions_the_default_is_hybrid_and_text_mode_reads_them(store: ServerStore,
                                                                          library: Library) -> None:
    search, clip = searching(store, library)
    describe(store, "blue.png", "一张蓝色的发票", visible_text="发票 No. 42")
    describe(store, "green.png", "绿色的草地")
    search.described_at = float("-inf")  # as if DESCRIBED_TTL_S had passed
    results, mode = asyncio.run(search.by_text("red", 3, page(), include_image=False))
    assert mode == "hybrid" and results[0]["image"] == "red.png"  # no description says red: CLIP's order
    clip.calls.clear()
    results, mode = asyncio.run(search.by_text("发票", 3, page(), include_image=False, mode="text"))
    assert mode == "text" and clip.calls == []  # text mode needs no CLIP encode
    assert results == [{"image": "blue.png", "score": pytest.approx(results[0]["score"]),
                        "description": "一张蓝色的发票", "visible_text": "发票 No. 42", "media": "image"}]
    vector, mode = asyncio.run(search.by_text("red", 2, page(), include_image=False, mode="vector"))
    assert mode == "vector" and vector[0]["score"] == pytest.approx(1.0, abs=1e-5)


def test_hybrid_lifts_a_described_match_over_clip_neighbours(store: ServerStore, library: Library) -> None:
    search, _ = searching(store, library)
    describe(store, "green.png", "red letters on a green sign")
    hits, mode = asyncio.run(search.text_hits(text_query("red"), 3, page(), "hybrid"))
    # green.png is last by CLIP, but both rankings name it: RRF puts it first, then CLIP's own order
    assert mode == "hybrid"
    assert [h.payload["path"] for h in hits] == ["green.png", "red.png", "link_hidden.png"]


def test_the_moment_at_a_time_is_the_one_holding_it_else_the_nearest() -> None:
    from api.searching import moment_at

    moments = {"a": {"start": 0.0, "end": 3.0}, "b": {"start": 3.0, "end": 6.0}, "c": {"start": 8.0, "end": 9.5}}
    assert [moment_at("v.mp4", moments, t) for t in (0.0, 2.99, 3.0, 6.9, 7.2, 9.5)] == ["a", "a", "b", "b", "c", "c"]
    with pytest.raises(ApiError) as refused:
        moment_at("v.mp4", moments, 9.6)
    assert refused.value.status == 400 and "ends at 9.5 s" in refused.value.message
