"""The HTTP service: `bentoml serve` starts this API service and its model runners.

Thin on purpose: models live in runners/ (plain classes wrapped by batching runner services),
vectors in store/ (filled by `python -m indexer`, never at start-up). No torch import here.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Annotated, Any

import aiohttp
import bentoml
from bentoml.exceptions import BentoMLException
from pydantic import BeforeValidator, Field
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from api import images, openai, search
from api.errors import ApiError, bad_request, error_response, not_found, returns_errors
from api.limits import Limits
from api.logs import RequestLog
from api.metrics import RequestMetrics, index_size_text
from api.receipt_deadline import install as install_receipt_deadline
from api.ui import ui_routes
from config import get_settings
from core.bentoml_compat import NO_FILE, upload_name
from core.images import DRAFT_SIZE, BadImage, load_image
from core.telemetry import count_tokens
from runners.clip import model_id_of
from runners.clip_service import ClipRunner
from runners.vlm_service import ChatRequest, VQARunner
from store import open_store
from store.base import StoreError, point_id

log = logging.getLogger("service")
SETTINGS = get_settings()


VQA_DISABLED = "visual question answering is disabled on this server (VQA_ENABLED=false)"


Text = Annotated[str, BeforeValidator(search.as_text)]  # a typed `2024` stays text (see as_text)


async def health(request: Request) -> JSONResponse:
    server = bentoml.get_current_service()
    return JSONResponse(await server.health_report())


async def chat_completions(request: Request) -> Response:
    server = bentoml.get_current_service()
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError):
        return error_response(400, "invalid_json", "the body is not valid JSON")
    try:
        fields = openai.parse_chat(body, SETTINGS.vqa_max_images, SETTINGS.vqa_max_new_tokens_cap)
    except openai.BadRequest as exc:
        return error_response(400, "invalid_request", str(exc))
    if not SETTINGS.vqa_enabled:
        return error_response(503, "vqa_disabled", VQA_DISABLED)
    stream = fields.pop("stream")
    chat = ChatRequest(**fields)
    try:
        if stream:
            return StreamingResponse(server.in_slot(server.chat_events(chat)), media_type="text/event-stream")
        with server.vqa_slot():
            results = await from_runner(server.vqa.to_async.generate([chat]))
        count_tokens(request.url.path, results)
    except ApiError as exc:
        return error_response(exc.status, exc.code, exc.message, exc.headers)
    return JSONResponse(openai.completion(server.vqa_model_id, result_dict(results[0])))


async def list_models(request: Request) -> JSONResponse:
    return JSONResponse(openai.models(bentoml.get_current_service().vqa_model_id))


def result_dict(result: Any) -> dict[str, Any]:
    return result if isinstance(result, dict) else result.model_dump()


routes = Starlette(routes=[
    Route("/health", health, methods=["GET"]),
    Route("/v1/chat/completions", chat_completions, methods=["POST"]),
    Route("/v1/models", list_models, methods=["GET"]),
    Route("/images/{path:path}", images.serve_image, methods=["GET"]),  # thumbnails and originals (api/images.py)
    *ui_routes(),  # the web page at /ui/
])


@bentoml.asgi_app(routes, path="/")
@bentoml.service(
    name="multimodal_server",
    workers=1,  # the one process that holds the embedded store (see README, "Processes")
    traffic={"timeout": SETTINGS.service_timeout_s},
)
class MultimodalServer:
    clip = bentoml.depends(ClipRunner)
    vqa = bentoml.depends(VQARunner)

    def __init__(self) -> None:
        self.settings = SETTINGS
        self.library = SETTINGS.image_library.resolve()
        self.model_id = model_id_of(SETTINGS.clip_model)
        self.vqa_model_id = SETTINGS.vqa_model
        self.vqa_in_flight = 0
        self.store_thread = ThreadPoolExecutor(1, thread_name_prefix="store")
        self.store = open_store(SETTINGS)
        info = self.store.info()
        with contextlib.suppress(StoreError):
            self.store.count()  # the embedded store: take its folder now, so an indexer is told at once
        if info is None:
            log.warning("collection %r is empty: run `python -m indexer` to index %s",
                        SETTINGS.qdrant_collection, self.library)
        elif info.model_id != self.model_id:
            log.error("collection was built with %r but CLIP_MODEL is %r: searches answer 409",
                      info.model_id, self.model_id)

    async def __is_ready__(self) -> bool:
        """/readyz: 503 until both runners have loaded their models (BentoML's own runner probe
        answers 500 while a runner's socket is not up yet)."""
        return all(await asyncio.gather(runner_ready(self.clip), runner_ready(self.vqa)))

    async def in_store(self, func: Any, *args: Any) -> Any:
        """Run a store call on the store's own thread; a store that cannot answer is a 503."""
        try:
            return await asyncio.get_running_loop().run_in_executor(self.store_thread, func, *args)
        except StoreError as exc:
            log.warning("store error: %s", exc)
            retry = {"Retry-After": str(self.settings.retry_after_s)}
            raise ApiError(503, "store_unavailable", str(exc), retry) from exc

    @bentoml.api(route="/text2image_search")
    @returns_errors
    async def text2image_search(
        self,
        text_query: Annotated[Text, Field(description="what to look for, in Chinese or English")],
        top_k: Annotated[int, Field(ge=1, le=SETTINGS.search_max_top_k)] = 5,
        include_image: search.IncludeImage = True,
        folder: search.Folder = None,
        modified_after: search.ModifiedAfter = None,
        modified_before: search.ModifiedBefore = None,
        min_width: search.MinWidth = None,
        min_height: search.MinHeight = None,
        min_bytes: search.MinBytes = None,
        offset: search.Offset = 0,
        dedup: search.Dedup = False,
    ) -> dict[str, Any]:
        """Find the library images that best match a text, best first (cosine similarity)."""
        query = text_query.strip()
        if not query:
            raise bad_request("text_query is empty")
        if len(query) > self.settings.max_query_chars:
            raise bad_request(f"text_query is longer than {self.settings.max_query_chars} characters")
        page = search.search_page(top_k, offset, dedup, self.settings.search_max_window, folder=folder,
                                  modified_after=modified_after, modified_before=modified_before,
                                  min_width=min_width, min_height=min_height, min_bytes=min_bytes)
        await self.check_index()
        vectors = await from_runner(self.clip.to_async.encode_texts([query]))
        results = await self.ranked(vectors[0], top_k, page, include_image)
        return {"status": "success", "query": text_query, "results": results}

    # The filter fields repeat those of /text2image_search on purpose: BentoML builds each endpoint's
    # form/JSON schema from its own signature (one pydantic model argument would change the request shape).
    @bentoml.api(route="/image2image_search")
    @returns_errors
    async def image2image_search(
        self,
        image: Annotated[Path, Field(description="an image file to find similar ones to")] = NO_FILE,
        image_id: Annotated[Text | None, Field(description="a library-relative path, instead of an upload")] = None,
        top_k: Annotated[int, Field(ge=1, le=SETTINGS.search_max_top_k)] = 5,
        include_image: search.IncludeImage = True,
        folder: search.Folder = None,
        modified_after: search.ModifiedAfter = None,
        modified_before: search.ModifiedBefore = None,
        min_width: search.MinWidth = None,
        min_height: search.MinHeight = None,
        min_bytes: search.MinBytes = None,
        offset: search.Offset = 0,
        dedup: search.Dedup = False,
    ) -> dict[str, Any]:
        """Find the library images most like an uploaded image or a library image (`image_id`, whose
        stored vector is used and which is left out of the results), best first."""
        if (image is None) == (not image_id):
            raise bad_request("send exactly one of image or image_id")
        rel = search.library_path(image_id) if image_id else None
        page = search.search_page(top_k, offset, dedup, self.settings.search_max_window, folder=folder,
                                  modified_after=modified_after, modified_before=modified_before,
                                  min_width=min_width, min_height=min_height, min_bytes=min_bytes,
                                  exclude=(point_id(rel),) if rel else ())
        await self.check_index()
        if rel is not None:
            vector, query = await self.stored_vector(rel), rel
        else:
            vector, query = await self.upload_vector(Path(str(image))), upload_name(Path(str(image)))
        results = await self.ranked(vector, top_k, page, include_image)
        return {"status": "success", "query": query, "results": results}

    async def check_index(self) -> None:
        info = await self.in_store(self.store.info)
        if info is not None and info.model_id != self.model_id:
            raise ApiError(409, "model_mismatch", f"the image index was built with {info.model_id!r} but "
                           f"CLIP_MODEL is {self.model_id!r}: re-run `python -m indexer --recreate`")

    async def stored_vector(self, rel: str) -> Any:
        found = await self.in_store(self.store.vectors, [point_id(rel)])
        if point_id(rel) not in found:
            raise not_found(f"image_id {rel!r} is not in the image index (run `python -m indexer` after adding files)")
        return found[point_id(rel)]

    async def upload_vector(self, upload: Path) -> Any:
        try:
            image, _, _ = load_image(upload.read_bytes(), draft_size=DRAFT_SIZE)
        except BadImage as exc:
            raise bad_request(f"image: {exc}") from exc
        vectors = await from_runner(self.clip.to_async.encode_images([image]))
        return vectors[0]

    async def ranked(self, vector: Any, top_k: int, page: search.SearchPage, include_image: bool | str) -> list[Any]:
        hits = await self.in_store(self.store.search, vector, top_k, page.where, page.offset, page.dedup)
        return [search.result_item(hit, include_image, self.read_base64) for hit in hits]

    @bentoml.api(route="/vqa")
    @returns_errors
    async def vqa_answer(
        self,
        question: Annotated[Text, Field(description="the question about the image or video")],
        image: Annotated[Path, Field(description="an image file (jpg, png, webp, gif, bmp...)")] = NO_FILE,
        video: Annotated[Path, Field(description="a short mp4 or webm clip, instead of an image")] = NO_FILE,
        image_id: Annotated[Text | None, Field(description="a library-relative path, instead of an upload")] = None,
        max_new_tokens: Annotated[int | None, Field(ge=1, le=SETTINGS.vqa_max_new_tokens_cap)] = None,
    ) -> dict[str, Any]:
        """Answer a question about an uploaded image, a library image (`image_id`) or a short video."""
        request = self.vqa_request(question, image, video, image_id, max_new_tokens)
        with self.vqa_slot():
            results = await from_runner(self.vqa.to_async.generate([request]))
        count_tokens("/vqa", results)
        return {"status": "success", "question": question, "answer": result_dict(results[0])["text"]}

    @bentoml.api(route="/vqa/stream")
    @returns_errors
    async def vqa_stream(
        self,
        question: Text,
        image: Path = NO_FILE,
        video: Path = NO_FILE,
        image_id: Text | None = None,
        max_new_tokens: Annotated[int | None, Field(ge=1, le=SETTINGS.vqa_max_new_tokens_cap)] = None,
    ) -> str:
        """As /vqa, but the answer comes as plain text chunks while it is generated."""
        request = self.vqa_request(question, image, video, image_id, max_new_tokens)
        pieces = self.in_slot(self.vqa.to_async.stream(request))
        return StreamingResponse(pieces, media_type="text/plain; charset=utf-8")  # type: ignore[return-value]

    @contextlib.contextmanager
    def vqa_slot(self) -> Iterator[None]:
        """Bound the VQA requests in flight: past VQA_MAX_QUEUE, answer 503 with Retry-After at once."""
        if self.vqa_in_flight >= self.settings.vqa_max_queue:
            raise ApiError(503, "vqa_busy", "visual question answering is at capacity: retry shortly",
                           {"Retry-After": str(self.settings.retry_after_s)})
        self.vqa_in_flight += 1
        try:
            yield
        finally:
            self.vqa_in_flight -= 1

    def in_slot(self, pieces: AsyncIterator[str]) -> AsyncIterator[str]:
        """Take a VQA slot now (503 if none) and hold it until the stream ends or the client leaves."""
        slot = self.vqa_slot()
        slot.__enter__()

        async def held() -> AsyncIterator[str]:
            try:
                async for piece in pieces:
                    yield piece
            finally:
                slot.__exit__(None, None, None)

        return held()

    def vqa_request(self, question: str, image: Path | None, video: Path | None, image_id: str | None,
                    max_new_tokens: int | None) -> ChatRequest:
        if not self.settings.vqa_enabled:
            raise ApiError(503, "vqa_disabled", VQA_DISABLED)
        question = question.strip()
        if not question:
            raise bad_request("question is empty")
        if len(question) > self.settings.max_query_chars:
            raise bad_request(f"question is longer than {self.settings.max_query_chars} characters")
        given = [name for name, value in (("image", image), ("video", video), ("image_id", image_id)) if value]
        if len(given) != 1:
            raise bad_request("send exactly one of image, video or image_id")
        if video is not None:
            media = self.video_part(video)
        else:
            data = self.library_file(image_id) if image_id else Path(str(image)).read_bytes()
            try:
                load_image(data)
            except BadImage as exc:
                raise bad_request(f"image: {exc}") from exc
            media = {"type": "image", "image": data}
        content = [media, {"type": "text", "text": question}]
        return ChatRequest(messages=[{"role": "user", "content": content}], max_new_tokens=max_new_tokens)

    def video_part(self, video: Path) -> dict[str, Any]:
        data = Path(str(video)).read_bytes()
        suffix = video_suffix(data)
        if suffix is None:
            raise bad_request("video: not an mp4 or webm file")
        return {"type": "video", "video": data, "suffix": suffix}

    def library_file(self, rel_path: str) -> bytes:
        candidate = Path(rel_path)
        if candidate.is_absolute() or ".." in candidate.parts:
            raise bad_request("image_id must be a path inside the image library")
        try:
            real = (self.library / candidate).resolve(strict=True)
        except OSError as exc:
            raise not_found(f"image_id {rel_path!r} is not in the image library") from exc
        if not real.is_relative_to(self.library) or not real.is_file():
            raise not_found(f"image_id {rel_path!r} is not in the image library")
        return real.read_bytes()

    async def chat_events(self, chat: ChatRequest) -> Any:
        chat_id = f"chatcmpl-{uuid.uuid4().hex}"
        yield openai.chunk(chat_id, self.vqa_model_id, {"role": "assistant", "content": ""})
        async for piece in self.vqa.to_async.stream(chat):
            if piece:
                yield openai.chunk(chat_id, self.vqa_model_id, {"content": piece})
        yield openai.chunk(chat_id, self.vqa_model_id, {}, finish="stop")
        yield "data: [DONE]\n\n"

    def read_base64(self, rel_path: str) -> str | None:
        """The file's own bytes, base64-encoded; None if it vanished or would leave the library."""
        try:
            real = (self.library / rel_path).resolve(strict=True)
            if not real.is_relative_to(self.library):
                return None
            return base64.b64encode(real.read_bytes()).decode("ascii")
        except OSError:
            log.warning("indexed file %s is gone: re-run `python -m indexer`", rel_path)
            return None

    async def health_report(self) -> dict[str, Any]:
        clip, vqa = await asyncio.gather(runner_info(self.clip), runner_info(self.vqa))
        info = await self.in_store(self.store.info)
        memory = [m for m in (clip, vqa) if m.get("gpu_memory_allocated_gb") is not None]
        return {
            "status": "healthy" if clip and vqa else "degraded",
            "clip_model_loaded": bool(clip),
            "vqa_model_loaded": bool(vqa),
            "image_library_size": await self.in_store(self.store.count),
            "device": vqa.get("device") or clip.get("device"),
            "gpu_memory_allocated_gb": sum(m["gpu_memory_allocated_gb"] for m in memory) if memory else None,
            "gpu_memory_reserved_gb": sum(m["gpu_memory_reserved_gb"] for m in memory) if memory else None,
            "clip_model": self.model_id,
            "index_model": info.model_id if info else None,
            "vqa_model": self.vqa_model_id,
            "vqa_quantization": vqa.get("quantization"),
            "vqa_batches": {"generate_calls": vqa.get("generate_calls"), "answers": vqa.get("generated_items")},
        }

    async def __metrics__(self, content: str) -> str:
        """BentoML's /metrics hook: append the index size, counted now."""
        try:
            count = await self.in_store(self.store.count)
        except ApiError:
            count = None
        return content + index_size_text(self.settings.qdrant_collection, count)

    @bentoml.on_shutdown
    def close_store(self) -> None:
        self.store.close()


# uvicorn has no deadline for receiving a request (uvicorn #157): add one to the server BentoML starts.
install_receipt_deadline(SETTINGS.request_header_timeout_s, SETTINGS.request_body_timeout_s)

# Outermost first: request id and log line, request counters, then the limits (their refusals are logged
# and counted too).
MultimodalServer.add_asgi_middleware(RequestLog, log_format=SETTINGS.log_format)  # type: ignore[attr-defined]
MultimodalServer.add_asgi_middleware(RequestMetrics)  # type: ignore[attr-defined]
MultimodalServer.add_asgi_middleware(  # type: ignore[attr-defined]
    Limits, api_key=SETTINGS.api_key.get_secret_value() if SETTINGS.api_key else None,
    public_metrics=SETTINGS.public_metrics, public_docs=SETTINGS.public_docs,
    max_upload_bytes=int(SETTINGS.max_upload_mb * 1024 * 1024), max_concurrency=SETTINGS.max_concurrency,
    timeout_s=SETTINGS.request_timeout_s, retry_after_s=SETTINGS.retry_after_s)


async def from_runner(call: Awaitable[Any]) -> Any:
    """Await a runner call; a runner that died or restarts mid-request becomes a 503 to retry."""
    try:
        return await call
    except BentoMLException as exc:
        status = int(exc.error_code)
        if 400 <= status < 500:
            raise ApiError(status, "invalid_argument", str(exc)) from exc
        raise runner_unavailable(exc) from exc
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        raise runner_unavailable(exc) from exc


def runner_unavailable(exc: BaseException) -> ApiError:
    log.warning("runner call failed: %r", exc)
    return ApiError(503, "runner_unavailable", "a model runner is restarting or unavailable: retry shortly",
                    {"Retry-After": str(SETTINGS.retry_after_s)})


async def runner_ready(runner: Any) -> bool:
    try:
        return bool(await runner.to_async.is_ready(2))
    except Exception:  # noqa: BLE001 - not up yet
        return False


async def runner_info(runner: Any) -> dict[str, Any]:
    """A runner's info(), or {} while it is loading or gone."""
    try:
        return dict(await asyncio.wait_for(runner.to_async.info(), timeout=5))
    except Exception as exc:  # noqa: BLE001 - any failure means "not loaded"
        log.debug("runner not answering: %s", exc)
        return {}


def video_suffix(data: bytes) -> str | None:
    """.mp4 or .webm by the file's magic bytes."""
    if data[4:8] == b"ftyp":
        return ".mp4"
    if data[:4] == b"\x1a\x45\xdf\xa3":
        return ".webm"
    return None


from api.middleware import ApiContractMiddleware  # noqa: E402 - one error shape, a valid /docs.json

MultimodalServer.add_asgi_middleware(ApiContractMiddleware, service=MultimodalServer)  # type: ignore[attr-defined]

__all__ = ["ClipRunner", "MultimodalServer", "VQARunner"]
