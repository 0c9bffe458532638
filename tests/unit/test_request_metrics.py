"""The service's request counters (api/http/metrics.py) read the routes from the app: every endpoint is counted,
/ask and /ask/stream included, by its path template, refusals of the limits included."""

from __future__ import annotations

import asyncio

import httpx
from prometheus_client import REGISTRY
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route

from api.http.limits import Limits
from api.http.metrics import RequestMetrics

KEY = "k3y"
AUTH = {"Authorization": f"Bearer {KEY}"}


async def ok(request: Request) -> Response:
    return JSONResponse({"ok": True})


def service() -> RequestMetrics:
    """Routes as the service has them: BentoML's API routes, and Starlette routes mounted at "/"."""
    mounted = Starlette(routes=[Route("/images/{path:path}", ok), Route("/v1/chat/completions", ok, methods=["POST"])])
    app = Starlette(routes=[Route(path, ok, methods=["POST"]) for path in
                            ("/ask", "/ask/stream", "/text2image_search", "/a-future-endpoint")]
                    + [Route("/livez", ok), Mount("/", app=mounted)])
    limits = Limits(app, api_key=KEY, public_metrics=False, public_docs=False,  # type: ignore[arg-type]
                    max_upload_bytes=1000, max_concurrency=4, timeout_s=5.0, retry_after_s=1)
    return RequestMetrics(limits)  # type: ignore[arg-type]


def requests(name: str, endpoint: str, status: int) -> float:
    return REGISTRY.get_sample_value(f"{name}_total", {"endpoint": endpoint, "status": str(status)}) or 0.0


def counted(calls: list[tuple[str, str, dict[str, str]]]) -> dict[tuple[str, str, int], float]:
    """Run the calls; how much each (counter, endpoint, status) moved."""
    keys = [(name, endpoint, status) for name in ("mms_requests", "mms_search_requests", "mms_vqa_requests")
            for endpoint in ("/ask", "/ask/stream", "/text2image_search", "/a-future-endpoint",
                             "/images/{path:path}", "/v1/chat/completions", "/livez", "/nowhere")
            for status in (200, 401, 404)]
    before = {key: requests(*key) for key in keys}

    async def run() -> None:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=service()), base_url="http://t") as client:
            for method, path, headers in calls:
                await client.request(method, path, headers=headers)

    asyncio.run(run())
    return {key: requests(*key) - before[key] for key in keys if requests(*key) != before[key]}


def test_every_route_is_counted_by_its_template_and_status() -> None:
    moved = counted([
        ("POST", "/ask", AUTH), ("POST", "/ask", AUTH), ("POST", "/ask/stream", AUTH),
        ("POST", "/ask/stream", {}),  # refused by the API key before the app routed it
        ("POST", "/a-future-endpoint", AUTH),
        ("GET", "/images/a/b.jpg", AUTH), ("GET", "/images/c.jpg", AUTH),
        ("POST", "/text2image_search", AUTH), ("POST", "/v1/chat/completions", AUTH),
        ("GET", "/livez", {}), ("GET", "/nowhere", AUTH),  # a probe, and a path no route has: not counted
    ])
    assert moved == {
        ("mms_requests", "/ask", 200): 2,
        ("mms_requests", "/ask/stream", 200): 1,
        ("mms_requests", "/ask/stream", 401): 1,
        ("mms_requests", "/a-future-endpoint", 200): 1,
        ("mms_requests", "/images/{path:path}", 200): 2,
        ("mms_requests", "/text2image_search", 200): 1,
        ("mms_search_requests", "/text2image_search", 200): 1,
        ("mms_requests", "/v1/chat/completions", 200): 1,
        ("mms_vqa_requests", "/v1/chat/completions", 200): 1,
    }


def test_the_log_line_names_the_route_read_from_the_app() -> None:
    import logging

    from api.http.logs import RequestLog, log

    lines: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = lines.append  # type: ignore[method-assign,assignment]
    log.addHandler(handler)
    try:
        async def run() -> None:
            app = RequestLog(service())  # type: ignore[arg-type]
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
                await client.get("/images/a/b.jpg", headers=AUTH)
                await client.post("/ask/stream", headers=AUTH)
                await client.get("/nowhere", headers=AUTH)
                await client.get("/livez")

        asyncio.run(run())
    finally:
        log.removeHandler(handler)
    assert [(r.path, getattr(r, "route", None), r.status) for r in lines] == [  # type: ignore[attr-defined]
        ("/images/a/b.jpg", "/images/{path:path}", 200), ("/ask/stream", "/ask/stream", 200), ("/nowhere", None, 404)]
