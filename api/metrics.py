"""The service's own Prometheus metrics, served on BentoML's /metrics beside `bentoml_*`.

BentoML gives every process of `bentoml serve` (the API and both runners) the same
PROMETHEUS_MULTIPROC_DIR, and the API's /metrics aggregates that whole folder, so a metric recorded in a
runner process shows up there too. prometheus_client is imported on first use, never at import time, so
that it starts in multiprocess mode in BentoML's workers (BentoML's own advice; `bentoml.metrics` is a
deprecated alias of prometheus_client in 1.4.40).

- `mms_search_requests_total{endpoint, status}`: search requests by route and HTTP status;
- `mms_vqa_requests_total{endpoint, status}`: the same for /vqa, /vqa/stream and /v1/chat/completions;
- `mms_vqa_generated_tokens_total{endpoint}`: tokens of the answers whose count is known (not streamed);
- `mms_runner_batch_size{runner, method}`: items per call of the runners' batching APIs (recorded in
  the runner processes);
- `mms_index_images{collection}`: images in the collection, counted when /metrics is scraped.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from functools import lru_cache
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

SEARCH_ROUTES = frozenset({"/text2image_search", "/image2image_search"})
VQA_ROUTES = frozenset({"/vqa", "/vqa/stream", "/v1/chat/completions"})
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class Metrics:
    def __init__(self) -> None:
        from prometheus_client import Counter, Histogram

        self.searches = Counter("mms_search_requests", "Search requests by endpoint and HTTP status",
                                ["endpoint", "status"])
        self.vqa = Counter("mms_vqa_requests", "Visual question answering requests by endpoint and HTTP status",
                           ["endpoint", "status"])
        self.tokens = Counter("mms_vqa_generated_tokens", "Tokens generated in VQA answers (streamed answers "
                              "are not counted)", ["endpoint"])
        self.batch_size = Histogram("mms_runner_batch_size", "Items per call of a runner's batching API",
                                    ["runner", "method"], buckets=BATCH_BUCKETS)


@lru_cache(maxsize=1)
def metrics() -> Metrics:
    return Metrics()


def observe_batch(runner: str, method: str, size: int) -> None:
    """Record one batch of a runner's adaptive-batching API (called in the runner process)."""
    metrics().batch_size.labels(runner=runner, method=method).observe(size)


def count_tokens(endpoint: str, results: Iterable[Any]) -> None:
    """Add the generated tokens of VQA results (ChatResult objects or their dicts)."""
    total = sum(int(r["completion_tokens"] if isinstance(r, dict) else r.completion_tokens) for r in results)
    metrics().tokens.labels(endpoint=endpoint).inc(total)


def index_size_text(collection: str, count: int | None) -> str:
    """The index-size gauge in Prometheus' text format, to append to a scrape (no sample if unknown)."""
    text = ("# HELP mms_index_images Images in the vector collection, counted at scrape time\n"
            "# TYPE mms_index_images gauge\n")
    if count is not None:
        text += f'mms_index_images{{collection="{escape(collection)}"}} {float(count)}\n'
    return text


def escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class RequestMetrics:
    """ASGI middleware: count search and VQA requests by route and final HTTP status (refusals by the
    API-key, size and concurrency limits included, when it sits outside them)."""

    def __init__(self, app: App) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or (path not in SEARCH_ROUTES and path not in VQA_ROUTES):
            return await self.app(scope, receive, send)
        status = {"code": 500}  # an app that raises before answering

        async def watched(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, watched)
        finally:
            counter = metrics().searches if path in SEARCH_ROUTES else metrics().vqa
            counter.labels(endpoint=path, status=str(status["code"])).inc()
