"""The ASGI pieces around the service's endpoints: the Starlette routes mounted next to the BentoML APIs
(each hands the request to a plain module through the running service) and the middleware stack."""

from __future__ import annotations

from typing import Any

import bentoml
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from api import chat_messages, images
from api.chat_completions import LIBRARY_MODEL, complete
from api.errors import handles_errors
from api.http.limits import Limits
from api.http.logs import RequestLog
from api.http.metrics import RequestMetrics
from api.http.receipt_deadline import install as install_receipt_deadline
from api.http.request_guard import RequestGuard
from api.ui import ui_routes
from config import Settings, get_settings


@handles_errors
async def health(request: Request) -> JSONResponse:
    return JSONResponse(await bentoml.get_current_service().health())


@handles_errors
async def chat_completions(request: Request) -> Response:
    """The body parsed once; its model picks the library (api/asking.py) or the VQA model (api/vqa_requests.py)."""
    service = bentoml.get_current_service()
    return await complete(await request.body(), request.url.path, service.vqa_requests, service.asking)


async def list_models(request: Request) -> JSONResponse:
    return JSONResponse(chat_messages.models(get_settings().vqa_model, LIBRARY_MODEL))


async def internal_store(request: Request) -> Response:
    """The indexer's write path (api/internal_store.py; not in /docs.json)."""
    return await bentoml.get_current_service().internal_store.handle(request)  # type: ignore[no-any-return]


def routes() -> Starlette:
    return Starlette(routes=[
        Route("/health", health, methods=["GET"]),
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        Route("/v1/models", list_models, methods=["GET"]),
        Route("/images/{path:path}", images.serve_image, methods=["GET"]),  # thumbnails and originals
        *ui_routes(),  # the web page at /ui/
        Route("/internal/store/{op}", internal_store, methods=["POST"]),  # local indexer only, with a token
    ])


def add_middlewares(service: Any, settings: Settings) -> None:
    """The middleware stack of the API service, outermost first: the security headers (nosniff on every
    response, the web page's CSP), request id and log line, request counters, the request guard (Host
    allowlist, ambiguous framing, redirects without the Host: api/http/request_guard.py), the limits (their
    refusals are logged and counted too), then one error shape, a valid /docs.json and form bodies checked before
    BentoML acts on them. And the receipt deadline on the uvicorn server BentoML starts (uvicorn #157)."""
    from api.http.middleware import ApiContractMiddleware, SecurityHeaders

    install_receipt_deadline(settings.request_header_timeout_s, settings.request_body_timeout_s)
    service.add_asgi_middleware(SecurityHeaders)
    service.add_asgi_middleware(RequestLog, log_format=settings.log_format)
    service.add_asgi_middleware(RequestMetrics)
    service.add_asgi_middleware(RequestGuard, allowed_hosts=settings.allowed_hosts,
                                api_key_set=bool(settings.api_key))
    service.add_asgi_middleware(
        Limits, api_key=settings.api_key.get_secret_value() if settings.api_key else None,
        public_metrics=settings.public_metrics, public_docs=settings.public_docs,
        max_upload_bytes=int(settings.max_upload_mb * 1024 * 1024), max_concurrency=settings.max_concurrency,
        timeout_s=settings.request_timeout_s, retry_after_s=settings.retry_after_s)
    service.add_asgi_middleware(ApiContractMiddleware, service=service)
