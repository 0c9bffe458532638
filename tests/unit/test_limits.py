"""The API's protective middleware (api/limits.py) on a small ASGI app, then on the real service."""

from __future__ import annotations

import asyncio
import concurrent.futures
import io
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import openai
import pytest
from PIL import Image
from serving import Server, running, service_env
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from api.limits import Limits

KEY = "s3cret-key"


async def echo(request: Request) -> Response:
    body = await request.body()
    return JSONResponse({"bytes": len(body)})


async def slow(request: Request) -> Response:
    await asyncio.sleep(float(request.query_params.get("s", "1")))
    return JSONResponse({"ok": True})


async def stream(request: Request) -> Response:
    async def pieces() -> AsyncIterator[str]:
        for i in range(3):
            await asyncio.sleep(0.3)
            yield f"{i}"
    return StreamingResponse(pieces())


def app(**options: object) -> Limits:
    inner = Starlette(routes=[Route(p, f, methods=["GET", "POST"]) for p, f in
                              [("/echo", echo), ("/slow", slow), ("/stream", stream), ("/livez", echo),
                               ("/metrics", echo), ("/docs.json", echo)]])
    settings = {"api_key": None, "public_metrics": False, "public_docs": False, "max_upload_bytes": 1000,
                "max_concurrency": 4, "timeout_s": 5.0, "retry_after_s": 3, **options}
    return Limits(inner, **settings)  # type: ignore[arg-type]


async def call(limits: Limits, method: str, path: str, **kw: object) -> httpx.Response:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=limits), base_url="http://t") as client:
        return await client.request(method, path, **kw)  # type: ignore[arg-type]


def shape(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status
    body = response.json()
    assert body["status"] == "error" and body["error"]["code"] == code and body["error"]["message"]


def test_api_key_guards_everything_but_probes() -> None:
    limits = app(api_key=KEY)
    shape(asyncio.run(call(limits, "GET", "/echo")), 401, "unauthorized")
    shape(asyncio.run(call(limits, "GET", "/echo", headers={"Authorization": "Bearer wrong"})), 401, "unauthorized")
    shape(asyncio.run(call(limits, "GET", "/echo", headers={"Authorization": KEY})), 401, "unauthorized")
    assert asyncio.run(call(limits, "GET", "/echo", headers={"Authorization": f"Bearer {KEY}"})).status_code == 200
    assert asyncio.run(call(limits, "GET", "/livez")).status_code == 200
    assert asyncio.run(call(limits, "GET", "/metrics")).status_code == 401
    assert asyncio.run(call(limits, "GET", "/docs.json")).status_code == 401
    opened = app(api_key=KEY, public_metrics=True, public_docs=True)
    assert asyncio.run(call(opened, "GET", "/metrics")).status_code == 200
    assert asyncio.run(call(opened, "GET", "/docs.json")).status_code == 200
    assert asyncio.run(call(app(), "GET", "/echo")).status_code == 200  # no key configured: open


def test_bodies_over_the_limit_get_413() -> None:
    limits = app()
    assert asyncio.run(call(limits, "POST", "/echo", content=b"x" * 1000)).json() == {"bytes": 1000}
    shape(asyncio.run(call(limits, "POST", "/echo", content=b"x" * 1001)), 413, "payload_too_large")

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted while it arrives
        for _ in range(5):
            yield b"x" * 400
    shape(asyncio.run(call(limits, "POST", "/echo", content=chunks())), 413, "payload_too_large")


def test_saturation_gets_429_with_retry_after() -> None:
    limits = app(max_concurrency=2)

    async def burst() -> list[httpx.Response]:
        return list(await asyncio.gather(*[call(limits, "GET", "/slow?s=0.5") for _ in range(6)]))

    responses = asyncio.run(burst())
    assert sorted(r.status_code for r in responses) == [200, 200, 429, 429, 429, 429]
    refused = next(r for r in responses if r.status_code == 429)
    shape(refused, 429, "too_many_requests")
    assert refused.headers["Retry-After"] == "3"
    assert asyncio.run(call(limits, "GET", "/slow?s=0")).status_code == 200  # slots are given back


def test_timeout_is_504_but_a_started_stream_runs_on() -> None:
    limits = app(timeout_s=0.5)
    shape(asyncio.run(call(limits, "GET", "/slow?s=2")), 504, "timeout")
    streamed = asyncio.run(call(limits, "GET", "/stream"))  # 0.9 s in all, first byte after 0.3 s
    assert streamed.status_code == 200 and streamed.text == "012"


# ---------------------------------------------------------------- on the real service


def png(size: int = 64) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), (200, 30, 30)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory, tiny_clip_dir: Path) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("limits")
    (tmp / "lib").mkdir()
    env = {**service_env(tmp, tiny_clip_dir, tmp / "lib"), "API_KEY": KEY, "MAX_UPLOAD_MB": "0.05",
           "VQA_MAX_QUEUE": "1"}
    with running(env, tmp / "server.log") as srv:
        yield srv


def test_service_requires_the_key(guarded: Server) -> None:
    auth = {"Authorization": f"Bearer {KEY}"}
    body = {"text_query": "红色的圆形"}
    shape(httpx.post(f"{guarded.url}/text2image_search", json=body, timeout=30), 401, "unauthorized")
    assert httpx.post(f"{guarded.url}/text2image_search", json=body, headers=auth, timeout=30).status_code == 200
    assert httpx.get(f"{guarded.url}/health", timeout=30).status_code == 401
    assert httpx.get(f"{guarded.url}/health", headers=auth, timeout=30).status_code == 200
    assert httpx.get(f"{guarded.url}/livez", timeout=30).status_code == 200
    assert httpx.get(f"{guarded.url}/readyz", timeout=30).status_code == 200
    assert httpx.get(f"{guarded.url}/metrics", timeout=30).status_code == 401
    assert httpx.get(f"{guarded.url}/docs.json", timeout=30).status_code == 401
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{guarded.url}/v1", api_key="wrong", max_retries=0).models.list()
    assert openai.OpenAI(base_url=f"{guarded.url}/v1", api_key=KEY).models.list().data


def test_service_refuses_big_uploads_with_413(guarded: Server) -> None:
    auth = {"Authorization": f"Bearer {KEY}"}
    big = png(400) + b"\0" * 60_000
    response = httpx.post(f"{guarded.url}/vqa", data={"question": "What color is the shape?"},
                          files={"image": ("big.png", big, "image/png")}, headers=auth, timeout=60)
    shape(response, 413, "payload_too_large")
    small = httpx.post(f"{guarded.url}/vqa", data={"question": "What color is the shape?"},
                       files={"image": ("s.png", png(), "image/png")}, headers=auth, timeout=60)
    assert small.status_code == 200


def test_vqa_queue_bound_gives_503_with_retry_after(guarded: Server) -> None:
    auth = {"Authorization": f"Bearer {KEY}"}

    def ask(_: int) -> httpx.Response:
        return httpx.post(f"{guarded.url}/vqa", data={"question": "Describe the image.", "max_new_tokens": "64"},
                          files={"image": ("s.png", png(), "image/png")}, headers=auth, timeout=120)

    with concurrent.futures.ThreadPoolExecutor(24) as pool:
        responses = list(pool.map(ask, range(48)))
    statuses = {r.status_code for r in responses}
    assert statuses <= {200, 503} and 200 in statuses and 503 in statuses, statuses
    busy = next(r for r in responses if r.status_code == 503)
    shape(busy, 503, "vqa_busy")
    assert busy.headers["Retry-After"] == "2"


def test_the_api_key_never_reaches_the_log(guarded: Server) -> None:
    httpx.get(f"{guarded.url}/health", headers={"Authorization": f"Bearer {KEY}"}, timeout=30)
    httpx.get(f"{guarded.url}/health", headers={"Authorization": f"Bearer {KEY}-wrong"}, timeout=30)
    time.sleep(0.5)
    assert KEY not in guarded.log.read_text()


def test_the_web_page_needs_no_key_but_lookalike_paths_do() -> None:
    limits = app(api_key=KEY)
    for path in ("/ui", "/ui/", "/ui/app.js"):  # let through: the small app here has no such route
        assert asyncio.run(call(limits, "GET", path)).status_code == 404
    for path in ("/uix", "/ui.js", "/images/ui/a.png"):
        shape(asyncio.run(call(limits, "GET", path)), 401, "unauthorized")
