"""The service's own Prometheus metrics, served on BentoML's /metrics beside `bentoml_*`.

Defined here, not in api/, because they are recorded in every layer: the runners record batch sizes in
their own processes, the API records requests and tokens. BentoML gives every process of `bentoml serve`
(the API and both runners) the same PROMETHEUS_MULTIPROC_DIR, and the API's /metrics aggregates that
whole folder, so a metric recorded in a runner process shows up there too. prometheus_client is imported
on first use, never at import time, so that it starts in multiprocess mode in BentoML's workers
(BentoML's own advice; see core/bentoml_compat.py, PROMETHEUS_ALIAS).

- `mms_requests_total{endpoint, status}`: requests by route (its path template, read from the app: every
  endpoint) and HTTP status;
- `mms_search_requests_total{endpoint, status}`: the same for the search routes only;
- `mms_vqa_requests_total{endpoint, status}`: the same for /vqa, /vqa/stream and /v1/chat/completions;
- `mms_vqa_generated_tokens_total{endpoint}`: tokens of the answers whose count is known (not streamed);
- `mms_runner_batch_size{runner, method}`: items per call of the runners' batching APIs (recorded in
  the runner processes);
- `mms_vqa_cache_total{cache, outcome}`: lookups of the VQA runner's follow-up caches (`vision`: vision-tower
  outputs, `prefix`: attention caches of prompt prefixes) by outcome (`hit`, `miss`), and entries dropped to stay
  within their setting (`eviction`) (recorded in the runner process);
- `mms_index_images{collection}`: images in the collection, counted when /metrics is scraped
  (written by api/http/metrics.py, as text appended to the scrape).
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache
from typing import Any

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class Metrics:
    def __init__(self) -> None:
        from prometheus_client import Counter, Histogram

        self.requests = Counter("mms_requests", "Requests by endpoint (route path template) and HTTP status",
                                ["endpoint", "status"])
        self.searches = Counter("mms_search_requests", "Search requests by endpoint and HTTP status",
                                ["endpoint", "status"])
        self.vqa = Counter("mms_vqa_requests", "Visual question answering requests by endpoint and HTTP status",
                           ["endpoint", "status"])
        self.tokens = Counter("mms_vqa_generated_tokens", "Tokens generated in VQA answers (streamed answers "
                              "are not counted)", ["endpoint"])
        self.batch_size = Histogram("mms_runner_batch_size", "Items per call of a runner's batching API",
                                    ["runner", "method"], buckets=BATCH_BUCKETS)
        self.vqa_cache = Counter("mms_vqa_cache", "Lookups (hit, miss) and evictions of the VQA runner's caches "
                                 "(vision: vision-tower outputs, prefix: prompt-prefix attention caches)",
                                 ["cache", "outcome"])


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


def count_cache(cache: str, outcome: str) -> None:
    """One hit, miss or eviction of a VQA cache (runners/vlm/reuse.py, in the runner process)."""
    metrics().vqa_cache.labels(cache=cache, outcome=outcome).inc()
