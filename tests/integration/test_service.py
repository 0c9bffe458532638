"""The real `bentoml serve` over HTTP: the seed's calls, ranking with a trained model, health, clients."""

from __future__ import annotations

import base64
import concurrent.futures
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import bentoml
import httpx
import pytest
from serving import Server, run_indexer, runner_pid, running, service_env
from shapes import caption, make_library


@pytest.fixture(scope="module")
def indexed(tmp_path_factory: pytest.TempPathFactory, tiny_clip_dir: Path) -> tuple[Path, dict[str, Any], dict]:
    tmp = tmp_path_factory.mktemp("service")
    library = tmp / "photos"
    shapes = make_library(library, n_per_class=2, seed=11)
    env = service_env(tmp, tiny_clip_dir, library)
    done = run_indexer(env)
    assert done.returncode == 0, done.stderr
    return tmp, env, shapes


@pytest.fixture(scope="module")
def server(indexed: tuple[Path, dict[str, Any], dict]) -> Iterator[Server]:
    tmp, env, _ = indexed
    with running(env, tmp / "server.log") as srv:
        yield srv


def search(server: Server, **fields: Any) -> httpx.Response:
    return httpx.post(f"{server.url}/text2image_search", data={k: str(v) for k, v in fields.items()}, timeout=60)


def test_seed_form_call_ranks_the_right_shapes(server: Server, indexed: Any) -> None:
    _, _, shapes = indexed
    library = Path(indexed[1]["IMAGE_LIBRARY"])
    hits = 0
    classes = sorted(set(shapes.values()))
    for shape, color in classes:
        response = search(server, text_query=caption(shape, color), top_k=3)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["status"] == "success" and body["query"] == caption(shape, color)
        results = body["results"]
        assert len(results) == 3
        assert [r["score"] for r in results] == sorted((r["score"] for r in results), reverse=True)
        hits += shapes[results[0]["image"]] == (shape, color)
        top = results[0]
        assert base64.b64decode(top["image_base64"]) == (library / top["image"]).read_bytes()
    assert hits >= 0.9 * len(classes)


def test_json_body_top_k_and_include_image(server: Server) -> None:
    response = httpx.post(f"{server.url}/text2image_search",
                          json={"text_query": "蓝色的正方形", "top_k": 5, "include_image": False}, timeout=60)
    assert response.status_code == 200
    results = response.json()["results"]
    assert len(results) == 5 and all("image_base64" not in r for r in results)
    assert all(-1.0 <= r["score"] <= 1.0 for r in results)
    default = httpx.post(f"{server.url}/text2image_search", json={"text_query": "红色"}, timeout=60)
    assert len(default.json()["results"]) == 5


@pytest.mark.parametrize("fields", [{"text_query": "x", "top_k": 0}, {"text_query": "x", "top_k": 101},
                                    {"text_query": "x", "top_k": "many"}, {"text_query": "   "}, {"top_k": 3}])
def test_bad_search_input_is_a_4xx(server: Server, fields: dict[str, Any]) -> None:
    response = search(server, **fields)
    assert 400 <= response.status_code < 500, response.text


def test_health_and_bentoml_endpoints(server: Server, indexed: Any) -> None:
    health = httpx.get(f"{server.url}/health", timeout=30).json()
    assert health["status"] == "healthy" and health["clip_model_loaded"] is True
    assert health["vqa_model_loaded"] is True and health["vqa_quantization"] == "none"
    assert health["image_library_size"] == len(indexed[2])
    assert health["device"] == "cpu" and health["gpu_memory_allocated_gb"] is None
    for path in ("/readyz", "/livez"):
        assert httpx.get(f"{server.url}{path}", timeout=30).status_code == 200
    metrics = httpx.get(f"{server.url}/metrics", timeout=30).text
    assert "bentoml_service_adaptive_batch_size" in metrics or "bentoml_service_request" in metrics


def wait_status(url: str, status: int, seconds: float = 20) -> list[int]:
    seen = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        seen.append(httpx.get(url, timeout=10).status_code)
        if seen[-1] == status:
            break
        time.sleep(0.2)
    return seen


def test_readyz_is_503_while_a_runner_is_not_answering(server: Server) -> None:
    assert set(server.readyz_seen) <= {503, 200}, server.readyz_seen  # while starting: never a 500
    pid = runner_pid(server, "clip_runner")
    os.kill(pid, signal.SIGSTOP)
    try:
        seen = wait_status(f"{server.url}/readyz", 503)
        assert seen[-1] == 503 and set(seen) <= {200, 503}, seen
        health = httpx.get(f"{server.url}/health", timeout=30).json()
        assert health["status"] == "degraded" and health["clip_model_loaded"] is False
    finally:
        os.kill(pid, signal.SIGCONT)
    assert wait_status(f"{server.url}/readyz", 200)[-1] == 200


def test_sync_http_client(server: Server) -> None:
    with bentoml.SyncHTTPClient(server.url) as client:
        body = client.text2image_search(text_query="绿色的三角形", top_k=2, include_image=False)
    assert body["status"] == "success" and len(body["results"]) == 2


def test_the_indexer_runs_while_the_service_holds_the_store(server: Server, indexed: Any) -> None:
    """Issue 13: the indexer no longer has to wait for the service to stop: it writes through it (the
    library is unchanged here, so nothing is written and the searches are the same)."""
    _, env, _ = indexed
    before = httpx.post(f"{server.url}/text2image_search", json={"text_query": "红色的圆形", "top_k": 3,
                                                                 "include_image": False}, timeout=30).json()
    done = run_indexer(env)
    assert done.returncode == 0, done.stderr
    assert "added 0" in done.stdout and "removed 0" in done.stdout
    after = httpx.post(f"{server.url}/text2image_search", json={"text_query": "红色的圆形", "top_k": 3,
                                                                "include_image": False}, timeout=30).json()
    assert after == before


def test_sixteen_concurrent_clients_for_thirty_seconds_lose_nothing(server: Server) -> None:
    """BentoML 1.4.40's depends() client used to drop 2-13 % of calls here (upstream #5540)."""
    deadline = time.monotonic() + float(os.environ.get("CONCURRENCY_TEST_SECONDS", "30"))
    queries = [caption(s, c) for s, c in [("circle", "red"), ("square", "blue"), ("triangle", "green")]]

    def worker(n: int) -> tuple[int, list[str]]:
        ok, errors = 0, []
        with httpx.Client(timeout=60) as http:
            while time.monotonic() < deadline:
                try:
                    r = http.post(f"{server.url}/text2image_search",
                                  json={"text_query": queries[n % 3], "top_k": 3, "include_image": False})
                    if r.status_code == 200 and len(r.json()["results"]) == 3:
                        ok += 1
                    else:
                        errors.append(f"{r.status_code} {r.text[:200]}")
                except httpx.HTTPError as exc:
                    errors.append(repr(exc))
        return ok, errors

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        results = list(pool.map(worker, range(16)))
    total = sum(ok for ok, _ in results)
    errors = [e for _, errs in results for e in errs]
    print(f"concurrency 16: {total} ok, {len(errors)} failed")
    assert not errors, errors[:5]
    assert total > 200  # well past the 100-request session recycling point


def test_search_only_server_without_a_vqa_model(indexed: Any, tmp_path: Path) -> None:
    _, env, shapes = indexed
    env = {**env, "VQA_ENABLED": "false", "VQA_MODEL": str(tmp_path / "no-such-model"),
           "QDRANT_PATH": str(tmp_path / "qdrant"), "BENTOML_HOME": str(tmp_path / "bentoml")}
    srv = Server(env, tmp_path / "server.log")
    try:
        srv.wait_ready()
        health = httpx.get(f"{srv.url}/health", timeout=30).json()
        assert health["clip_model_loaded"] is True and health["vqa_model_loaded"] is False
        vqa = httpx.post(f"{srv.url}/vqa", data={"question": "what?", "image_id": next(iter(shapes))}, timeout=30)
        assert vqa.status_code == 503 and "VQA_ENABLED" in vqa.text
        chat = httpx.post(f"{srv.url}/v1/chat/completions",
                          json={"messages": [{"role": "user", "content": "hi"}]}, timeout=30)
        assert chat.status_code == 503 and "VQA_ENABLED" in chat.text
        # started before anything was indexed: empty results, then the indexer may run meanwhile
        empty = search(srv, text_query="红色的圆形", top_k=1)
        assert empty.status_code == 200 and empty.json()["results"] == []
        done = run_indexer(env)
        assert done.returncode == 0, done.stderr
        found = search(srv, text_query="红色的圆形", top_k=1).json()["results"]
        assert shapes[found[0]["image"]] == ("circle", "red")
        assert httpx.get(f"{srv.url}/health", timeout=30).json()["image_library_size"] == len(shapes)
    finally:
        srv.stop()


def test_queries_that_look_like_numbers_are_text(server: Server) -> None:
    for text in ("2024", "3.5", "true"):
        response = search(server, text_query=text, top_k=1)
        assert response.status_code == 200, (text, response.text)
        assert response.json()["query"] == text
