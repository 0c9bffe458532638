"""api/runner_calls.py, api/health.py and the one error renderer (api/errors.py), with fake runners."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import numpy as np
import pytest
from bentoml.exceptions import InvalidArgument, NotFound, ServiceUnavailable
from qdrant_client import QdrantClient
from starlette.requests import Request

from api.errors import ApiError, bad_request, handles_errors
from api.health import health_report
from api.runner_calls import RUNNER_UNAVAILABLE, from_runner, runner_info, runner_ready
from api.store_calls import StoreCalls
from store.interface import Point, point_id
from store.qdrant_server import ServerStore


class FakeRunner:
    """A runner's client whose calls answer `result`, or raise it when it is an exception."""

    def __init__(self, result: Any) -> None:
        self.to_async = self
        self.result = result

    async def answer(self, *args: Any) -> Any:
        if isinstance(self.result, BaseException):
            raise self.result
        return self.result

    async def is_ready(self, timeout: float) -> Any:
        return await self.answer()

    async def info(self) -> Any:
        return await self.answer()


def failure(call: Any) -> ApiError:
    with pytest.raises(ApiError) as caught:
        asyncio.run(from_runner(call, retry_after_s=4))
    return caught.value


@pytest.mark.parametrize(("raised", "status"), [(InvalidArgument("text is too long"), 400),
                                                (NotFound("no such thing"), 404)])
def test_a_4xx_from_the_runner_passes_through(raised: Exception, status: int) -> None:
    error = failure(FakeRunner(raised).answer())
    assert (error.status, error.code, error.headers) == (status, "invalid_argument", {})
    assert str(raised) in error.message


@pytest.mark.parametrize("raised", [ServiceUnavailable("loading"), aiohttp.ServerDisconnectedError(),
                                    ConnectionRefusedError(), TimeoutError()])
def test_a_runner_that_is_gone_is_503_runner_unavailable(raised: Exception) -> None:
    error = failure(FakeRunner(raised).answer())
    assert (error.status, error.code, error.message) == (503, "runner_unavailable", RUNNER_UNAVAILABLE)
    assert error.headers == {"Retry-After": "4"}


def test_a_runner_answer_comes_back() -> None:
    assert asyncio.run(from_runner(FakeRunner([1, 2]).answer(), retry_after_s=4)) == [1, 2]


def test_readiness_and_info_of_runners_up_and_down() -> None:
    assert asyncio.run(runner_ready(FakeRunner(True))) is True
    assert asyncio.run(runner_ready(FakeRunner(False))) is False
    assert asyncio.run(runner_ready(FakeRunner(aiohttp.ClientConnectionError()))) is False
    assert asyncio.run(runner_info(FakeRunner({"device": "cpu"}))) == {"device": "cpu"}
    assert asyncio.run(runner_info(FakeRunner(OSError("socket gone")))) == {}


def test_health_report_sums_gpu_memory_and_says_degraded() -> None:
    store = ServerStore(QdrantClient(location=":memory:"), "images")
    calls = StoreCalls(store, retry_after_s=2)
    clip = FakeRunner({"device": "cuda", "gpu_memory_allocated_gb": 1.0, "gpu_memory_reserved_gb": 2.0})
    vqa = FakeRunner({"device": "cuda", "gpu_memory_allocated_gb": 3.0, "gpu_memory_reserved_gb": 4.0,
                      "quantization": "4bit", "runtime": "torch", "precision": "nf4", "generate_calls": 2,
                      "generated_items": 5, "caches": {"vision": {"entries": 1, "bytes": 10}}})
    report = asyncio.run(health_report(clip, vqa, calls, "clip-a", "qwen"))
    assert report == {"status": "healthy", "store": "ok", "clip_model_loaded": True, "vqa_model_loaded": True,
                      "image_library_size": 0, "device": "cuda", "gpu_memory_allocated_gb": 4.0,
                      "gpu_memory_reserved_gb": 6.0, "clip_model": "clip-a", "index_model": None,
                      "vqa_model": "qwen", "vqa_quantization": "4bit", "vqa_runtime": "torch", "vqa_precision": "nf4",
                      "described_images": 0, "descriptions_by": {}, "read_images": 0, "read_by": {},
                      "vqa_caches": {"vision": {"entries": 1, "bytes": 10}},
                      "vqa_batches": {"generate_calls": 2, "answers": 5}}
    store.ensure_collection("clip-a", 4)
    down = asyncio.run(health_report(clip, FakeRunner(TimeoutError()), calls, "clip-a", "qwen"))
    assert (down["status"], down["vqa_model_loaded"], down["index_model"]) == ("degraded", False, "clip-a")
    assert down["gpu_memory_allocated_gb"] == 1.0 and down["vqa_batches"] == {"generate_calls": None, "answers": None}
    assert down["vqa_caches"] is None
    store.upsert([Point(point_id(name), np.ones(4, dtype=np.float32), {"path": name}) for name in ("a.jpg", "b.jpg")])
    store.set_descriptions({point_id("a.jpg"): {"description": "红色的圆形", "visible_text": "", "tags": [],
                                                "described_by": "qwen#abc"}})
    described = asyncio.run(health_report(clip, vqa, calls, "clip-a", "qwen"))
    assert (described["described_images"], described["descriptions_by"]) == (1, {"qwen#abc": 1})
    store.set_descriptions({point_id("b.jpg"): {"ocr_text": "EXIT", "ocr_by": "ocr#1"}})
    read = asyncio.run(health_report(clip, vqa, calls, "clip-a", "qwen"))
    assert (read["read_images"], read["read_by"], read["described_images"]) == (1, {"ocr#1": 1}, 1)


def test_one_renderer_for_api_methods_and_starlette_routes() -> None:
    class Service:
        @handles_errors
        async def method(self, ok: bool) -> Any:
            if not ok:
                raise ApiError(503, "vqa_busy", "at capacity", {"Retry-After": "2"})
            return {"status": "success"}

    @handles_errors
    async def route(request: Request) -> Any:
        raise bad_request("size: not a number")

    assert asyncio.run(Service().method(True)) == {"status": "success"}
    busy = asyncio.run(Service().method(False))
    assert (busy.status_code, busy.headers["retry-after"]) == (503, "2")
    assert json.loads(busy.body) == {"status": "error", "error": {"code": "vqa_busy", "message": "at capacity"}}
    refused = asyncio.run(route(Request({"type": "http", "method": "GET", "path": "/", "headers": []})))
    assert refused.status_code == 400 and json.loads(refused.body)["error"] == {
        "code": "invalid_argument", "message": "size: not a number"}
