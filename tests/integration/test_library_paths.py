"""Every entry point applies the one library rule (core/library.py), against the real `bentoml serve`:
the indexer, GET /images/..., `image_id` on /vqa, /vqa/stream and /image2image_search, and base64
results. Whatever the rule refuses answers exactly as a missing file does. One server for the module."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import quote, urlsplit

import httpx
import pytest
from serving import Server, run_indexer, running, service_env
from shapes import draw_shape

CHINESE = "相册 2024/海边 😀 a b.png"
OK = ["ok.jpg", CHINESE]
REFUSED = ["missing.jpg", ".secret.png", ".cache/a.jpg", "link_hidden.jpg", "link_hidden_folder.jpg",
           "link_out.jpg", "notes.txt", "folder.jpg", "swapped.jpg", "../outside.jpg", "/etc/passwd", "ok.jpg\0.txt"]
QUESTION = "What color is the shape?"


class Served(NamedTuple):
    server: Server
    root: Path


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, tiny_clip_dir: Path) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("library-paths")
    root = tmp / "photos"
    for i, rel in enumerate([*OK, "swapped.jpg", ".secret.png", ".cache/a.jpg"]):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        draw_shape("circle", "red", size=64, seed=i).save(root / rel)
    draw_shape("square", "green", size=64).save(tmp / "outside.jpg")
    (root / "link_hidden.jpg").symlink_to(root / ".secret.png")
    (root / "link_hidden_folder.jpg").symlink_to(root / ".cache" / "a.jpg")
    (root / "link_out.jpg").symlink_to(tmp / "outside.jpg")
    (root / "notes.txt").write_text("not an image")
    (root / "folder.jpg").mkdir()
    env = service_env(tmp, tiny_clip_dir, root)
    done = run_indexer(env)
    assert done.returncode == 0, done.stderr
    (root / "swapped.jpg").unlink()  # indexed as a file, now a link to a hidden one
    (root / "swapped.jpg").symlink_to(root / ".secret.png")
    with running(env, tmp / "server.log") as server:
        yield Served(server, root)


def raw_get(server: Server, path: str) -> tuple[int, Any]:
    """A GET whose path goes out byte for byte (httpx would resolve `..`)."""
    conn = http.client.HTTPConnection(urlsplit(server.url).netloc, timeout=60)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        body = response.read()
        return response.status, json.loads(body) if response.status != 200 else body
    finally:
        conn.close()


def missing(message: str) -> dict[str, Any]:
    return {"status": "error", "error": {"code": "not_found", "message": message}}


def test_the_indexer_and_base64_results_take_only_library_files(served: Served) -> None:
    response = httpx.post(f"{served.server.url}/text2image_search", json={"text_query": "a red circle", "top_k": 100},
                          timeout=60)
    assert response.status_code == 200, response.text
    results = {r["image"]: r["image_base64"] for r in response.json()["results"]}
    assert set(results) == {*OK, "swapped.jpg"}  # swapped.jpg was a plain file when indexed
    assert all(results[rel] for rel in OK) and results["swapped.jpg"] is None


def test_images_serves_library_files_and_refuses_the_rest_as_missing(served: Served) -> None:
    for rel in OK:
        status, body = raw_get(served.server, f"/images/{quote(rel)}?size=0")
        assert (status, body) == (200, (served.root / rel).read_bytes()), rel
    for rel in REFUSED:
        status, body = raw_get(served.server, f"/images/{quote(rel, safe='/.')}")
        assert (status, body) == (404, missing(f"{rel!r} is not an image in the library")), rel


@pytest.mark.parametrize("endpoint", ["/vqa", "/vqa/stream", "/image2image_search"])
def test_image_id_refuses_what_the_library_refuses_as_missing(served: Served, endpoint: str) -> None:
    url = f"{served.server.url}{endpoint}"

    def ask(image_id: str) -> httpx.Response:
        if endpoint == "/image2image_search":
            return httpx.post(url, json={"image_id": image_id, "include_image": False}, timeout=120)
        return httpx.post(url, data={"question": QUESTION, "image_id": image_id}, timeout=120)

    for rel in OK:
        answered = ask(rel)
        assert answered.status_code == 200, (rel, answered.text)
    for rel in REFUSED:
        refused = ask(rel)
        assert (refused.status_code, refused.json()) == (404, missing(f"image_id {rel!r} is not in the image library"))
