"""Operations against the real `bentoml serve` (with API_KEY set): the custom Prometheus metrics on
/metrics move by the right amounts, and every request gets an X-Request-ID and one JSON log line."""

from __future__ import annotations

import base64
import concurrent.futures
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from serving import Server, png, run_indexer, running, service_env
from shapes import draw_shape, make_library

KEY = "metrics-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
COLOR_Q = "What color is the shape?"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, tiny_clip_dir: Path) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("metrics")
    library = tmp / "photos"
    images = make_library(library, n_per_class=1, seed=21)
    env = service_env(tmp, tiny_clip_dir, library)
    done = run_indexer(env)
    assert done.returncode == 0, done.stderr
    env["API_KEY"] = KEY
    with running(env, tmp / "server.log") as srv:
        srv.images = len(images)  # type: ignore[attr-defined]
        yield srv


def scrape(server: Server) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    response = httpx.get(f"{server.url}/metrics", headers=AUTH, timeout=30)
    assert response.status_code == 200
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def search(server: Server, query: str, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(f"{server.url}/text2image_search", json={"text_query": query, "include_image": False},
                      headers=AUTH if headers is None else headers, timeout=60)


def ask(server: Server, color: str, seed: int) -> httpx.Response:
    files = {"image": ("shape.png", png(draw_shape("circle", color, seed=seed)), "image/png")}
    return httpx.post(f"{server.url}/vqa", data={"question": COLOR_Q}, files=files, headers=AUTH, timeout=120)


def chat(server: Server, color: str, seed: int) -> httpx.Response:
    url = "data:image/png;base64," + base64.b64encode(png(draw_shape("square", color, seed=seed))).decode()
    body = {"model": "any", "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": COLOR_Q}]}]}
    return httpx.post(f"{server.url}/v1/chat/completions", json=body, headers=AUTH, timeout=120)


def test_metrics_need_the_key_unless_public(server: Server) -> None:
    assert httpx.get(f"{server.url}/metrics", timeout=30).status_code == 401


def test_search_counters_and_clip_batch_sizes(server: Server) -> None:
    before = scrape(server)
    for query in ("红色圆形", "a blue square", "绿色的三角形"):
        assert search(server, query).status_code == 200
    assert search(server, "   ").status_code == 400
    assert search(server, "红色", headers={}).status_code == 401  # counted: the counter sits outside the key check
    after = scrape(server)
    moved = {status: value(after, "mms_search_requests_total", endpoint="/text2image_search", status=status)
             - value(before, "mms_search_requests_total", endpoint="/text2image_search", status=status)
             for status in ("200", "400", "401")}
    assert moved == {"200": 3, "400": 1, "401": 1}
    clip = {"runner": "clip", "method": "encode_texts"}  # recorded in the CLIP runner's process
    assert value(after, "mms_runner_batch_size_sum", **clip) - value(before, "mms_runner_batch_size_sum", **clip) == 3
    batches = value(after, "mms_runner_batch_size_count", **clip) - value(before, "mms_runner_batch_size_count", **clip)
    assert 1 <= batches <= 3
    assert value(after, "mms_index_images", collection="images") == server.images  # type: ignore[attr-defined]
    assert any(name.startswith("bentoml_service_request") for name, _ in after)  # BentoML's own are still there


def test_vqa_counters_tokens_and_batch_sizes(server: Server) -> None:
    before = scrape(server)
    answers = [chat(server, color, 8_000 + i) for i, color in enumerate(("red", "blue"))]
    assert all(a.status_code == 200 for a in answers)
    tokens = sum(a.json()["usage"]["completion_tokens"] for a in answers)
    assert tokens > 0
    middle = scrape(server)
    counted = [value(samples, "mms_vqa_generated_tokens_total", endpoint="/v1/chat/completions")
               for samples in (before, middle)]
    assert counted[1] - counted[0] == tokens
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        replies = list(pool.map(lambda i: ask(server, "green", 8_100 + i), range(3)))
    assert [r.json()["answer"] for r in replies] == ["green"] * 3
    streamed = httpx.post(f"{server.url}/vqa/stream", data={"question": COLOR_Q}, headers=AUTH, timeout=120,
                          files={"image": ("s.png", png(draw_shape("circle", "red", seed=8_200)), "image/png")})
    assert streamed.status_code == 200 and streamed.text == "red"
    after = scrape(server)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("mms_vqa_requests_total", endpoint="/v1/chat/completions", status="200") == 2
    assert moved("mms_vqa_requests_total", endpoint="/vqa", status="200") == 3
    assert moved("mms_vqa_requests_total", endpoint="/vqa/stream", status="200") == 1
    assert moved("mms_vqa_generated_tokens_total", endpoint="/vqa") >= 3  # one token at least per answer
    vqa = {"runner": "vqa", "method": "generate"}  # recorded in the VQA runner's process; streams don't batch
    assert moved("mms_runner_batch_size_sum", **vqa) == 5
    assert 1 <= moved("mms_runner_batch_size_count", **vqa) <= 5


def log_lines(server: Server, request_id: str) -> list[dict[str, Any]]:
    """The JSON request-log lines of the server's output for this id (waits a little for them)."""
    deadline = time.monotonic() + 10
    while True:
        found = [json.loads(line) for line in server.log.read_text().splitlines()
                 if line.startswith("{") and f'"request_id": "{request_id}"' in line]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def test_request_id_round_trips_and_is_logged(server: Server) -> None:
    response = search(server, "紫色的圆形", headers={**AUTH, "X-Request-ID": "client-id-42"})
    assert response.status_code == 200
    assert response.headers["X-Request-ID"] == "client-id-42"
    [line] = log_lines(server, "client-id-42")
    assert line["method"] == "POST" and line["path"] == "/text2image_search" and line["status"] == 200
    assert line["duration_ms"] > 0 and line["level"] == "INFO"


@pytest.mark.parametrize("sent", [None, "", "has spaces", "x" * 200, "semi;colon"])
def test_missing_or_odd_request_ids_are_replaced(server: Server, sent: str | None) -> None:
    headers = {**AUTH, **({"X-Request-ID": sent} if sent is not None else {})}
    response = httpx.get(f"{server.url}/health", headers=headers, timeout=30)
    assert response.status_code == 200
    generated = response.headers["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{32}", generated)
    assert log_lines(server, generated)[0]["path"] == "/health"


def test_refusals_and_errors_carry_the_id(server: Server) -> None:
    refused = search(server, "红色", headers={"X-Request-ID": "no-key-1"})
    assert refused.status_code == 401 and refused.headers["X-Request-ID"] == "no-key-1"
    missing = httpx.get(f"{server.url}/nowhere", headers={**AUTH, "X-Request-ID": "lost-2"}, timeout=30)
    assert missing.status_code == 404 and missing.headers["X-Request-ID"] == "lost-2"
    assert missing.json()["error"]["code"] == "not_found"
    assert log_lines(server, "no-key-1")[0]["status"] == 401
    assert log_lines(server, "lost-2")[0]["status"] == 404
