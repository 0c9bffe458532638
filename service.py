"""The HTTP service: `bentoml serve` starts this API service and its model runners.

Thin on purpose: models live in runners/ (plain classes wrapped by batching runner services),
vectors in store/ (filled by `python -m indexer`, never at start-up). No torch import here.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from concurrent.futures import ThreadPoolExecutor
from http import HTTPStatus
from typing import Annotated, Any

import bentoml
from bentoml.exceptions import BentoMLException, InvalidArgument
from pydantic import Field
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from config import get_settings
from runners.clip import ClipRunner, model_id_of
from store import open_store
from store.base import Hit

log = logging.getLogger("service")
SETTINGS = get_settings()


class Conflict(BentoMLException):
    error_code = HTTPStatus.CONFLICT


async def health(request: Request) -> JSONResponse:
    server = bentoml.get_current_service()
    return JSONResponse(await server.health_report())


routes = Starlette(routes=[Route("/health", health, methods=["GET"])])


@bentoml.asgi_app(routes, path="/")
@bentoml.service(
    name="multimodal_server",
    workers=1,  # the one process that holds the embedded store (see README, "Processes")
    traffic={"timeout": SETTINGS.service_timeout_s},
)
class MultimodalServer:
    clip = bentoml.depends(ClipRunner)

    def __init__(self) -> None:
        self.settings = SETTINGS
        self.library = SETTINGS.image_library.resolve()
        self.model_id = model_id_of(SETTINGS.clip_model)
        self.store_thread = ThreadPoolExecutor(1, thread_name_prefix="store")
        self.store = open_store(SETTINGS)
        info = self.store.info()
        if info is None:
            log.warning("collection %r is empty: run `python -m indexer` to index %s",
                        SETTINGS.qdrant_collection, self.library)
        elif info.model_id != self.model_id:
            log.error("collection was built with %r but CLIP_MODEL is %r: searches answer 409",
                      info.model_id, self.model_id)

    async def in_store(self, func: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.store_thread, func, *args)

    @bentoml.api(route="/text2image_search")
    async def text2image_search(
        self,
        text_query: Annotated[str, Field(description="what to look for, in Chinese or English")],
        top_k: Annotated[int, Field(ge=1, le=SETTINGS.search_max_top_k)] = 5,
        include_image: Annotated[bool, Field(description="return each file base64-encoded")] = True,
    ) -> dict[str, Any]:
        """Find the library images that best match a text, best first (cosine similarity)."""
        query = text_query.strip()
        if not query:
            raise InvalidArgument("text_query is empty")
        if len(query) > self.settings.max_query_chars:
            raise InvalidArgument(f"text_query is longer than {self.settings.max_query_chars} characters")
        info = await self.in_store(self.store.info)
        if info is not None and info.model_id != self.model_id:
            raise Conflict(f"the image index was built with {info.model_id!r} but CLIP_MODEL is "
                           f"{self.model_id!r}: re-run `python -m indexer --recreate`")
        vectors = await self.clip.to_async.encode_texts([query])
        hits = await self.in_store(self.store.search, vectors[0], top_k)
        results = [self.result(hit, include_image) for hit in hits]
        return {"status": "success", "query": text_query, "results": results}

    def result(self, hit: Hit, include_image: bool) -> dict[str, Any]:
        path = str(hit.payload.get("path", ""))
        item: dict[str, Any] = {"image": path, "score": round(float(hit.score), 6)}
        if include_image:
            item["image_base64"] = self.read_base64(path)
        return item

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
        clip: dict[str, Any] = {}
        try:
            clip = await asyncio.wait_for(self.clip.to_async.info(), timeout=5)
        except Exception as exc:  # noqa: BLE001 - a runner still loading or gone is "not loaded"
            log.debug("clip runner not answering: %s", exc)
        info = await self.in_store(self.store.info)
        return {
            "status": "healthy" if clip else "degraded",
            "clip_model_loaded": bool(clip),
            "vqa_model_loaded": False,
            "image_library_size": await self.in_store(self.store.count),
            "device": clip.get("device"),
            "gpu_memory_allocated_gb": clip.get("gpu_memory_allocated_gb"),
            "gpu_memory_reserved_gb": clip.get("gpu_memory_reserved_gb"),
            "clip_model": self.model_id,
            "index_model": info.model_id if info else None,
        }

    @bentoml.on_shutdown
    def close_store(self) -> None:
        self.store.close()


__all__ = ["ClipRunner", "MultimodalServer"]
