"""The HTTP service: `bentoml serve` starts this API service and its model runners.

Endpoints only: parse, validate, call plain modules (api/searching.py, api/vqa_requests.py, api/asking.py,
api/health.py, api/images.py), which raise ApiError for every refusal; `handles_errors` renders it.
Models live in runners/, vectors in store/ (filled by `python -m indexer`, never at start-up), the
rule for which files are the library's in core/library.py. No torch import here.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Annotated, Any

import bentoml
from pydantic import BeforeValidator, Field
from starlette.responses import StreamingResponse

from api import routes, search_fields
from api.asking import DEFAULT_TOP_K, Asking
from api.errors import ApiError, bad_request, handles_errors
from api.health import health_report
from api.http.limits import api_key_problem
from api.http.metrics import index_size_text
from api.internal_store import InternalStore, listening_url
from api.runner_calls import runner_ready
from api.searching import Searching, query_text
from api.store_calls import StoreCalls
from api.vqa_moments import check_t
from api.vqa_requests import VqaRequests
from config import load_settings_or_exit
from core.bentoml_compat import NO_FILE, upload_name
from core.library import Library
from runners.clip import model_id_of
from runners.clip.service import ClipRunner
from runners.vlm.service import VQARunner
from store import open_store
from store.interface import StoreDamagedError, StoreError
from store.via_service import service_file_path

log = logging.getLogger("service")
SETTINGS = load_settings_or_exit()  # a bad setting: one line naming it, exit 2


def refuse_without_space(folder: Path) -> None:
    """Stop the service, with the reason in the log, when the embedded store's disk is (almost) full: opening
    the store then could kill the worker with SIGBUS, silently and over and over (store/qdrant_edge.py)."""
    from store.qdrant_edge import free_space_problem

    problem = free_space_problem(folder)
    if problem:
        log.critical("the service cannot start: %s", problem)
        raise SystemExit(f"error: {problem}")


# Checked at start, in `bentoml serve` itself (which then exits with the message) and again in each worker.
if problem := api_key_problem(SETTINGS.api_key.get_secret_value() if SETTINGS.api_key else None):
    raise SystemExit(f"error: {problem} (the service does not start: every request would answer 401)")
if not SETTINGS.qdrant_url:
    refuse_without_space(SETTINGS.qdrant_path)
# At start-up, build the HNSW index of the embedded store when more points than this are outside it
# (written by indexer runs through the service, whose end only flushes: api/internal_store.py).
# Fewer are searched exactly in a few ms (store/qdrant_edge.py, unindexed_points).
BUILD_INDEX_AT_START_POINTS = 20_000


Text = Annotated[str, BeforeValidator(search_fields.as_text)]  # a typed `2024` stays text (see as_text)
MomentTime = Annotated[float | None, Field(ge=0, allow_inf_nan=False, description=(
    "with the image_id of a library video: the moment asked about, in seconds (a search result's `t`)"))]
ASK_TOP_K = min(DEFAULT_TOP_K, SETTINGS.ask_max_images)


@bentoml.asgi_app(routes.routes(), path="/")
@bentoml.service(
    name="multimodal_server",
    workers=1,  # the one process that holds the embedded store (see docs/deployment.md, "Processes")
    traffic={"timeout": SETTINGS.service_timeout_s},
)
class MultimodalServer:
    clip = bentoml.depends(ClipRunner)
    vqa = bentoml.depends(VQARunner)

    def __init__(self) -> None:
        self.settings = SETTINGS
        self.library = Library(SETTINGS.image_library)
        self.model_id = model_id_of(SETTINGS.clip_model)
        if not SETTINGS.qdrant_url:
            refuse_without_space(SETTINGS.qdrant_path)  # a worker restarted after the disk filled up
        self.store = open_store(SETTINGS)
        self.store_calls = StoreCalls(self.store, SETTINGS.retry_after_s)
        self.searching = Searching(self.clip, self.store_calls, self.library, self.model_id, SETTINGS)
        self.vqa_requests = VqaRequests(self.vqa, self.library, SETTINGS)
        self.asking = Asking(self.searching, self.vqa_requests, self.library, SETTINGS)
        info = self.store.info()
        self.check_store()  # the embedded store: take its folder now, so an indexer is told at once
        if info is None:
            log.warning("collection %r is empty: run `python -m indexer` to index %s",
                        SETTINGS.qdrant_collection, self.library.root)
        elif info.model_id != self.model_id:
            log.error("collection was built with %r but CLIP_MODEL is %r: searches answer 409",
                      info.model_id, self.model_id)
        self.internal_store = InternalStore(self.store, self.store_calls)
        if not SETTINGS.qdrant_url:  # the embedded store: an indexer writes through this process
            self.build_pending_index()
            self.internal_store.advertise(service_file_path(SETTINGS.qdrant_path, SETTINGS.qdrant_collection),
                                          listening_url(SETTINGS.service_url), SETTINGS.qdrant_collection)

    def check_store(self) -> None:
        """Open the store and probe it (store/qdrant_base.py, check): a damaged one is logged with the way
        back and marks the service degraded (/health) and not ready (/readyz); searches answer 503."""
        try:
            self.store.count()
            check = getattr(self.store, "check", None)
            if check is not None:
                check()
        except StoreDamagedError as exc:
            self.store_calls.mark_damaged(exc)
        except StoreError as exc:
            log.warning("the vector store cannot answer yet: %s", exc)

    def build_pending_index(self) -> None:
        """Build the HNSW index of points that indexer runs wrote through the service, when there are
        many: now, before serving, since the build holds the GIL (store/qdrant_edge.py, finish)."""
        try:
            pending = self.store.unindexed_points()
            if pending > BUILD_INDEX_AT_START_POINTS:
                log.warning("building the search index of %d new points before serving", pending)
                self.store.finish()
        except StoreError as exc:
            log.warning("cannot build the search index now (%s); searches scan the new points exactly", exc)

    async def __is_ready__(self) -> bool:
        """/readyz: 503 until both runners have loaded their models (BentoML's own runner probe
        answers 500 while a runner's socket is not up yet)."""
        if self.store_calls.damaged:
            return False
        return all(await asyncio.gather(runner_ready(self.clip), runner_ready(self.vqa)))

    @bentoml.api(route="/text2image_search")
    @handles_errors
    @search_fields.with_search_fields
    async def text2image_search(
        self,
        text_query: Annotated[Text, Field(description="what to look for, in Chinese or English")],
        top_k: Annotated[int, Field(ge=1, le=SETTINGS.search_max_top_k)] = 5,
        include_image: search_fields.IncludeImage = True,
        mode: search_fields.SearchMode = None,
        **fields: Any,
    ) -> dict[str, Any]:
        """Find the library images that best match a text, best first: by CLIP similarity, by the words of
        their VLM-written descriptions, or both fused (`mode`)."""
        query = query_text(text_query, self.settings.max_query_chars)
        page = search_fields.search_page(top_k, max_window=self.settings.search_max_window, **fields)
        results, ran = await self.searching.by_text(query, top_k, page, include_image, mode)
        return await self.searching.answer(  # type: ignore[return-value]
            {"status": "success", "query": text_query, "mode": ran, "results": results})

    @bentoml.api(route="/image2image_search")
    @handles_errors
    @search_fields.with_search_fields
    async def image2image_search(
        self,
        image: Annotated[Path, Field(description="an image file to find similar ones to")] = NO_FILE,
        image_id: Annotated[Text | None, Field(description="a library-relative path, instead of an upload")] = None,
        top_k: Annotated[int, Field(ge=1, le=SETTINGS.search_max_top_k)] = 5,
        include_image: search_fields.IncludeImage = True,
        t: MomentTime = None,
        **fields: Any,
    ) -> dict[str, Any]:
        """Find the library images most like an uploaded image or a library image (`image_id`, whose
        stored vector is used and which is left out of the results), best first; with the `image_id` of a library
        video, most like its moment at `t` (the clip itself left out)."""
        if (image is None) == (not image_id):
            raise bad_request("send exactly one of image or image_id")
        if not image_id:
            check_t(t, None, is_video=False)  # an upload is no video: no `t`
        rel = self.searching.library_id(image_id) if image_id else None
        page = search_fields.search_page(top_k, max_window=self.settings.search_max_window, **fields)
        if rel is not None:
            results, query = await self.searching.by_image_id(rel, top_k, page, include_image, t), rel
        else:
            upload = Path(str(image))
            results, query = await self.searching.by_upload(upload, top_k, page, include_image), upload_name(upload)
        # an image is ranked by its CLIP vector alone; `mode` says so, as /text2image_search's answer does
        return await self.searching.answer(  # type: ignore[return-value]
            {"status": "success", "query": query, "mode": "vector", "results": results})

    @bentoml.api(route="/vqa")
    @handles_errors
    async def vqa_answer(
        self,
        question: Annotated[Text, Field(description="the question about the image or video")],
        image: Annotated[Path, Field(description="an image file (jpg, png, webp, gif, bmp...)")] = NO_FILE,
        video: Annotated[Path, Field(description="a short mp4 or webm clip, instead of an image")] = NO_FILE,
        image_id: Annotated[Text | None, Field(description="a library-relative path, instead of an upload")] = None,
        max_new_tokens: Annotated[int | None, Field(ge=1, le=SETTINGS.vqa_max_new_tokens_cap)] = None,
        t: MomentTime = None,
    ) -> dict[str, Any]:
        """Answer a question about an uploaded image, a library image (`image_id`) or a short video; with the
        `image_id` of a library video, about its moment at `t` (the model sees the frames around it)."""
        request = await self.vqa_requests.prepare(question, image, video, image_id, max_new_tokens, t)
        result = await self.vqa_requests.generate(request, "/vqa")
        return {"status": "success", "question": question, "answer": result["text"]}

    @bentoml.api(route="/vqa/stream")
    @handles_errors
    async def vqa_stream(
        self,
        question: Text,
        image: Path = NO_FILE,
        video: Path = NO_FILE,
        image_id: Text | None = None,
        max_new_tokens: Annotated[int | None, Field(ge=1, le=SETTINGS.vqa_max_new_tokens_cap)] = None,
        t: MomentTime = None,
    ) -> str:
        """As /vqa, but the answer comes as plain text chunks while it is generated."""
        request = await self.vqa_requests.prepare(question, image, video, image_id, max_new_tokens, t)
        pieces = await self.vqa_requests.stream(request)  # a refused request raises here, before the 200
        return StreamingResponse(pieces, media_type="text/plain; charset=utf-8")  # type: ignore[return-value]

    @bentoml.api(route="/ask")
    @handles_errors
    @search_fields.with_search_fields
    async def ask(
        self,
        question: Annotated[Text, Field(description="the question, answered from the photos the search finds")],
        query: Annotated[search_fields.OptionalText,
                         Field(description="the text to search with (default: the question)")] = None,
        top_k: Annotated[int, Field(ge=1, le=SETTINGS.ask_max_images, description="photos given to the model")]
        = ASK_TOP_K,
        mode: search_fields.SearchMode = None,
        **fields: Any,
    ) -> dict[str, Any]:
        """Answer a question from the library: the photos that match it (the search of /text2image_search)
        go to the VQA model numbered; `cited` holds the 1-based numbers of the sources the answer names."""
        asked, searched = self.asking.question(question, query)
        page = search_fields.search_page(top_k, max_window=self.settings.search_max_window, **fields)
        return await self.asking.ask(asked, searched, top_k, page, mode)

    @bentoml.api(route="/ask/stream")
    @handles_errors
    @search_fields.with_search_fields
    async def ask_stream(
        self,
        question: Text,
        query: search_fields.OptionalText = None,
        top_k: Annotated[int, Field(ge=1, le=SETTINGS.ask_max_images)] = ASK_TOP_K,
        mode: search_fields.SearchMode = None,
        **fields: Any,
    ) -> str:
        """As /ask, as server-sent events: `sources` first, then `delta` ({"text"}) pieces of the answer,
        then `done` ({"answer", "cited"}); `error` ({"code", "message"}) if the model fails after the start."""
        asked, searched = self.asking.question(question, query)
        page = search_fields.search_page(top_k, max_window=self.settings.search_max_window, **fields)
        return await self.asking.ask_stream(asked, searched, top_k, page, mode)  # type: ignore[return-value]

    async def health(self) -> dict[str, Any]:
        return await health_report(self.clip, self.vqa, self.store_calls, self.model_id, self.settings.vqa_model)

    async def __metrics__(self, content: str) -> str:
        """BentoML's /metrics hook: append the index size, counted now."""
        try:
            count = await self.store_calls.run(self.store.count)
        except ApiError:
            count = None
        return content + index_size_text(self.settings.qdrant_collection, count)

    @bentoml.on_shutdown
    def close_store(self) -> None:
        self.internal_store.withdraw()
        self.store.close()


routes.add_middlewares(MultimodalServer, SETTINGS)  # the security headers, logs, metrics, limits, error shape

__all__ = ["ClipRunner", "MultimodalServer", "VQARunner"]
