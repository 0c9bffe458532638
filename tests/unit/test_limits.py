"""The API's protective middleware (api/http/limits.py) on a small ASGI app; on the real service in
tests/integration/test_limits_served.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
from helpers.errors import shape
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from api.http.limits import Limits

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


def test_the_web_page_needs_no_key_but_lookalike_paths_do() -> None:
    limits = app(api_key=KEY)
    for path in ("/ui", "/ui/", "/ui/app.js"):  # let through: the small app here has no such route
        assert asyncio.run(call(limits, "GET", path)).status_code == 404
    for path in ("/uix", "/ui.js", "/images/ui/a.png"):
        shape(asyncio.run(call(limits, "GET", path)), 401, "unauthorized")
