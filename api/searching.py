"""The search flow behind /text2image_search and /image2image_search: check the index was built with
this CLIP model, turn the query into a vector (CLIP runner, or the vector stored for a library
image) and, for a text query, pick the mode (CLIP vector, the photos' descriptions, or both fused),
rank the store's hits and shape each result. The CLIP runner, the store and the library are
passed in, so a fake encoder and an in-memory store test it without a server."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from starlette.responses import JSONResponse, Response, StreamingResponse

from api.errors import ApiError, bad_request, not_found
from api.moment_hits import MomentSearch, moment_frame, result_bytes
from api.read_text import read_fields, text_query, with_phrases
from api.runner_calls import from_runner
from api.search_fields import SearchPage, result_item
from api.store_calls import StoreCalls
from api.stream_slots import StreamSlots
from api.vqa_moments import check_t
from config import Settings
from core.images import DRAFT_SIZE, BadImage, clip_view, load_image
from core.library import Library, NotInLibrary, is_video_name
from indexer.moments import moment_id
from runners.ocr import TextQuery
from store.interface import Hit, point_id

log = logging.getLogger("service")

# How long /text2image_search trusts its count of described photos before asking the store again: the default
# mode turns to "hybrid" this long after the indexer's first `--describe` batch at most.
DESCRIBED_TTL_S = 2.0


def not_in_library(image_id: str) -> ApiError:
    """The one answer for an image_id the library refuses, whatever the reason (missing, hidden,
    outside, not an image): a caller cannot tell which files exist."""
    return not_found(f"image_id {image_id!r} is not in the image library")


def moment_at(rel: str, moments: dict[str, dict[str, Any]], t: float) -> str:
    """The id of the moment of `rel` that holds `t` (the nearest one when `t` falls in a gap); 400 past the clip's
    last moment."""
    spans = {pid: (float(m.get("start", 0.0)), float(m.get("end", 0.0))) for pid, m in moments.items()}
    last = max(end for _, end in spans.values())
    if t > last:
        raise bad_request(f"t: {rel!r} has no moment at {t:g} s (its last one ends at {last:g} s)")
    return min(spans, key=lambda pid: -1.0 if spans[pid][0] <= t < spans[pid][1]
               else min(abs(t - spans[pid][0]), abs(t - spans[pid][1])))


def query_text(text: str, max_chars: int) -> str:
    query = text.strip()
    if not query:
        raise bad_request("text_query is empty")
    if len(query) > max_chars:
        raise bad_request(f"text_query is longer than {max_chars} characters")
    return query


def encoded(vector: Any, field: str) -> Any:
    """The runner's vector for one query; a NaN row means the model could not encode this input
    (the runner logged why), which the caller caused: 400, not a runner failure."""
    if not np.all(np.isfinite(np.asarray(vector, dtype=np.float32))):
        raise bad_request(f"{field}: the CLIP model could not encode it")
    return vector


class Searching:
    def __init__(self, clip: Any, store: StoreCalls, library: Library, model_id: str, settings: Settings) -> None:
        self.clip = clip
        self.store = store
        self.library = library
        self.model_id = model_id
        self.settings = settings
        self.files = ThreadPoolExecutor(4, thread_name_prefix="files")
        self.stream_slots = StreamSlots(settings.search_stream_slots)
        self.described_at = -DESCRIBED_TTL_S
        self.described_count = 0
        self.moments = MomentSearch(store)  # a clip listed once, at its best moment

    async def off_loop(self, func: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.files, func, *args)

    async def answer(self, body: dict[str, Any]) -> Response:
        """The search answer: plain JSON, or streamed when its results carry base64 files."""
        if not any(isinstance(item.get("image_base64"), LibraryBytes) for item in body["results"]):
            return JSONResponse(body)
        return StreamingResponse(self.streamed(body), media_type="application/json")

    async def streamed(self, body: dict[str, Any]) -> AsyncIterator[bytes]:
        """The JSON of `body`, written piece by piece, each file's base64 in B64_PIECE-byte pieces."""
        head = json.dumps({k: v for k, v in body.items() if k != "results"}, ensure_ascii=False)
        yield (head[:-1] + ', "results": [').encode()
        for index, item in enumerate(body["results"]):
            yield b", " if index else b""
            file = item.get("image_base64")
            if not isinstance(file, LibraryBytes):
                yield json.dumps(item, ensure_ascii=False).encode()
                continue
            fields = json.dumps({k: v for k, v in item.items() if k != "image_base64"}, ensure_ascii=False)
            turn = self.stream_slots.turn()
            try:
                await turn.take()
                data = await (self.off_loop(self.read_file, file.rel) if file.t is None else
                              self.off_loop(moment_frame, self.library, file.rel, file.t))
                if data is None:
                    yield (fields[:-1] + ', "image_base64": null}').encode()
                    continue
                yield (fields[:-1] + ', "image_base64": "').encode()
                for start in range(0, len(data), B64_PIECE):
                    await turn.take()
                    piece = base64.b64encode(data[start:start + B64_PIECE])
                    turn.lend()
                    yield piece
                    # Let other requests in between pieces: a send that fits the socket buffer does not
                    # yield, so without this one answer's whole file went out in one go of the loop.
                    await asyncio.sleep(0)
            finally:
                turn.release()
            yield b'"}'
        yield b"]}"

    def library_id(self, image_id: str) -> str:
        """An image_id as the indexer records it ("./a//b.jpg" -> "a/b.jpg"); 404 unless a library file."""
        try:
            return self.library.resolve(image_id).rel
        except NotInLibrary as exc:
            raise not_in_library(image_id) from exc

    async def by_text(self, query: str, top_k: int, page: SearchPage, include_image: bool | str,
                      mode: str | None = None) -> tuple[list[Any], str]:
        """The shaped results for a text and the mode that ranked them (with the text read in each photo and the
        lines the query matches, api/read_text.py)."""
        parsed = text_query(query)
        hits, ran = await self.text_hits(parsed, top_k, page, mode)
        return await self.shaped(hits, include_image, parsed), ran

    async def text_hits(self, parsed: TextQuery, top_k: int, page: SearchPage,
                        mode: str | None = None) -> tuple[list[Hit], str]:
        """The store's hits for a text, best first, and the mode that ran: the search of
        /text2image_search (and of /ask). "vector" ranks by CLIP, "text" by the words of the descriptions and of
        the text read in the photos (BM25), "hybrid" fuses both in one store query; None picks hybrid once the
        index holds descriptions or read text. A phrase in double quotes is a filter: the photo's read text must
        hold it (api/read_text.py); the words rank without the quote marks."""
        page = with_phrases(page, parsed)
        await self.check_index()
        ran = await self.pick_mode(mode)
        vector = None if ran == "text" else await self.text_vector(parsed.words)
        found = await self.moments.search(vector, top_k, page, None if ran == "vector" else parsed.words)
        return found, ran

    async def text_vector(self, query: str) -> Any:
        vectors = await from_runner(self.clip.to_async.encode_texts([query]), self.settings.retry_after_s)
        return encoded(vectors[0], "text_query")

    async def pick_mode(self, mode: str | None) -> str:
        if mode is None:
            return "hybrid" if await self.described() else "vector"
        if mode == "text" and not await self.described():
            raise ApiError(409, "no_descriptions", 'no photo in the index has a description or read text yet, so '
                           'mode "text" finds nothing: run `python -m indexer --ocr` (the text in photos) or '
                           '`python -m indexer --describe` (it uses VQA_MODEL), or search with mode "vector"')
        return mode

    async def described(self) -> int:
        """How many photos have descriptions (any model) or were read by the OCR stage, re-counted at most every
        DESCRIBED_TTL_S."""
        if time.monotonic() - self.described_at >= DESCRIBED_TTL_S:
            counts: dict[str, int] = await self.store.run(self.store.store.described_counts)
            read: dict[str, int] = await self.store.run(self.store.store.read_counts)
            self.described_count = sum(counts.values()) + sum(read.values())
            self.described_at = time.monotonic()
        return self.described_count

    async def by_image_id(self, rel: str, top_k: int, page: SearchPage, include_image: bool | str,
                          t: float | None = None) -> list[Any]:
        """The results most like library file `rel` (a video's: its moment at `t`), without itself."""
        vector, itself = await self.library_source(rel, t)
        where = replace(page.where, exclude_ids=(*page.where.exclude_ids, *itself))
        return await self.ranked(vector, top_k, replace(page, where=where), include_image)

    async def library_source(self, rel: str, t: float | None) -> tuple[Any, tuple[str, ...]]:
        """Where image-to-image search from library file `rel` starts: the stored vector and the points left out
        of the results. A photo: its own point. A video: the moment at `t` (seconds; required, as for /vqa), and
        its whole clip left out (its other moments look alike)."""
        check_t(t, rel, is_video_name(rel))
        await self.check_index()
        if t is None:
            return await self.stored_vector(rel), (point_id(rel),)
        ids = [moment_id(rel, index) for index in range(self.settings.video_max_frames)]
        moments = await self.store.run(self.store.store.payloads_of, ids, ["start", "end"])
        if not moments:
            raise not_found(f"image_id {rel!r} has no moments in the image index (run `python -m indexer` "
                            "after adding files)")
        return await self.stored_vector(rel, moment_at(rel, moments, t)), tuple(moments)

    async def by_upload(self, upload: Path, top_k: int, page: SearchPage, include_image: bool | str) -> list[Any]:
        await self.check_index()
        return await self.ranked(await self.upload_vector(upload), top_k, page, include_image)

    async def check_index(self) -> None:
        info = await self.store.run(self.store.store.info)
        if info is not None and info.model_id != self.model_id:
            raise ApiError(409, "model_mismatch", f"the image index was built with {info.model_id!r} but "
                           f"CLIP_MODEL is {self.model_id!r}: re-run `python -m indexer --recreate`")

    async def stored_vector(self, rel: str, pid: str | None = None) -> Any:
        """The stored vector of `rel`'s point (or of its point `pid`: a video's moment)."""
        pid = pid or point_id(rel)
        found = await self.store.run(self.store.store.vectors, [pid])
        if pid not in found:
            raise not_found(f"image_id {rel!r} is not in the image index (run `python -m indexer` after adding files)")
        return found[pid]

    async def upload_vector(self, upload: Path) -> Any:
        try:
            image, _, _ = await self.off_loop(decode_upload, upload)
        except BadImage as exc:
            raise bad_request(f"image: {exc}") from exc
        # The runner applies clip_view too; doing it here keeps what travels to the runner small.
        vectors = await from_runner(self.clip.to_async.encode_images([clip_view(image)]), self.settings.retry_after_s)
        return encoded(vectors[0], "image")

    async def ranked(self, vector: Any, top_k: int, page: SearchPage, include_image: bool | str) -> list[Any]:
        return await self.shaped(await self.hits(vector, top_k, page), include_image)

    async def hits(self, vector: Any, top_k: int, page: SearchPage) -> list[Hit]:
        return await self.moments.search(vector, top_k, page)

    async def shaped(self, hits: list[Hit], include_image: bool | str, query: TextQuery | None = None) -> list[Any]:
        """The results of `hits`; with a text `query`, each read photo's lines that it matches too."""
        if include_image is True:
            self.check_response_size(hits)
        return list(await self.off_loop(self.results, hits, include_image, query))

    def results(self, hits: list[Any], include_image: bool | str, query: TextQuery | None = None) -> list[Any]:
        return [{**result_item(hit, include_image, LibraryBytes), **read_fields(hit.payload, query)} for hit in hits]

    def check_response_size(self, hits: list[Any]) -> None:
        """400 before reading any file when the results' base64 would pass SEARCH_MAX_RESPONSE_MB."""
        limit_mb = self.settings.search_max_response_mb
        need_mb = sum(result_bytes(hit.payload) for hit in hits) * 4 / 3 / 1024 / 1024
        if need_mb > limit_mb:
            raise ApiError(400, "response_too_large", f"these {len(hits)} results as base64 would take "
                           f"{need_mb:.0f} MB, over SEARCH_MAX_RESPONSE_MB ({limit_mb:g} MB): ask for fewer "
                           '(top_k) or use include_image="thumbnail" or false')

    def read_file(self, rel: str) -> bytes | None:
        """The file's own bytes; None if it vanished or the library rule refuses it (an index made
        before the rule, or a file swapped for a link since)."""
        try:
            return self.library.read_bytes(rel)
        except NotInLibrary as exc:
            log.warning("indexed file is not served: %s (re-run `python -m indexer`)", exc)
            return None


@dataclass(frozen=True)
class LibraryBytes:
    """A result's `image_base64` still to be read: `answer` streams it (see the module docstring)."""

    rel: str
    t: float | None = None  # a video moment's time: its frame is sent (api/moment_hits.py moment_frame)


B64_PIECE = 3 * 64 * 1024  # a multiple of 3, so the pieces' base64 joins into the file's base64


def decode_upload(upload: Path) -> Any:
    return load_image(upload.read_bytes(), draft_size=DRAFT_SIZE)
