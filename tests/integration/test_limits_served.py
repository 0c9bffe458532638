"""The API's protective middleware (api/http/limits.py) on the real `bentoml serve`: the API key, the upload
limit and the VQA queue bound; on a small ASGI app in tests/unit/test_limits.py."""

from __future__ import annotations

import concurrent.futures
import io
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from helpers.errors import shape
from PIL import Image
from serving import Server, running, service_env

KEY = "s3cret-key"


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
