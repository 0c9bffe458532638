"""Hostile HTTP input against the real `bentoml serve` (issue 16, points 4-6); one server for the module.

Only content of an allowed image type is served by /images, with the type of its content; every
response carries `X-Content-Type-Options: nosniff` and /ui/ a strict Content-Security-Policy; a NUL in
image_id, a body nested 100,000 deep and an over-long upload file name answer 4xx in the error shape,
never 500; whatever the library refuses answers byte for byte as a missing file does (up to the echoed
name). The plain parts are in tests/unit/test_faults_http.py.
"""

from __future__ import annotations

import http.client
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import httpx
import pytest
from PIL import Image
from serving import Server, running, service_env
from shapes import draw_shape

from api.http.json_body import TOO_DEEP
from api.http.paths import UI_POLICY

NOT_IMAGES = {  # all named as images; none is served
    "page.png": b"<!doctype html><html><body><script>alert(document.cookie)</script></body></html>",
    "draw.png": b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"><circle r="9"/></svg>',
    "note.png": b"plain text, not an image\n",
    "tiff.png": b"",  # a real TIFF, written by the fixture: PIL decodes it, the type is not allowed
}
MISSING = "gone.png"  # as long as the names above, so that the bodies compare byte for byte
DEEP = ("[" * 100_000 + "]" * 100_000).encode()
QUESTION = "What color is the shape?"


class Served(NamedTuple):
    server: Server
    root: Path


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, tiny_clip_dir: Path) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("faults-http")
    root = tmp / "photos"
    root.mkdir()
    shape = draw_shape("circle", "red", size=64)
    shape.save(root / "ok.jpg")
    shape.save(root / "jpeg.png", format="JPEG")  # a JPEG under a .png name
    shape.save(root / ".secret.png")
    (root / "link_hidden.png").symlink_to(root / ".secret.png")
    (root / "notes.txt").write_text("not an image")
    for name, content in NOT_IMAGES.items():
        (root / name).write_bytes(content)
    shape.save(root / "tiff.png", format="TIFF")
    with running(service_env(tmp, tiny_clip_dir, root), tmp / "server.log") as server:
        yield Served(server, root)


def get(server: Server, path: str, **headers: str) -> httpx.Response:
    return httpx.get(f"{server.url}{path}", headers=headers, timeout=60)


def post(server: Server, path: str, **kwargs: Any) -> httpx.Response:
    return httpx.post(f"{server.url}{path}", timeout=120, **kwargs)


def error_of(response: httpx.Response) -> tuple[int, str, str]:
    body = response.json()
    assert body["status"] == "error", body
    return response.status_code, body["error"]["code"], body["error"]["message"]


# -- point 5: only real images, with the type of their content ------------------------------------------

def test_a_jpeg_named_png_is_served_as_jpeg(served: Served) -> None:
    original = get(served.server, "/images/jpeg.png?size=0")
    assert original.status_code == 200 and original.content == (served.root / "jpeg.png").read_bytes()
    assert original.headers["content-type"] == "image/jpeg"
    assert get(served.server, "/images/ok.jpg?size=0").headers["content-type"] == "image/jpeg"
    thumbnail = get(served.server, "/images/jpeg.png?size=32&format=webp")
    assert thumbnail.status_code == 200 and thumbnail.headers["content-type"] == "image/webp"


@pytest.mark.parametrize("name", sorted(NOT_IMAGES))
@pytest.mark.parametrize("query", ["?size=0", "?size=64", ""])
def test_what_is_not_an_allowed_image_answers_as_a_missing_file(served: Served, name: str, query: str) -> None:
    gone = get(served.server, f"/images/{MISSING}{query}")
    refused = get(served.server, f"/images/{name}{query}")
    assert gone.status_code == refused.status_code == 404
    assert refused.content == gone.content.replace(MISSING.encode(), name.encode())
    assert refused.headers["content-type"] == gone.headers["content-type"] == "application/json"
    # not even a conditional request tells that the file exists
    later = get(served.server, f"/images/{name}{query}", **{"If-Modified-Since": "Fri, 01 Jan 2100 00:00:00 GMT"})
    assert later.status_code == 404


# -- point 5: the headers --------------------------------------------------------------------------------

def test_every_kind_of_response_carries_nosniff(served: Served) -> None:
    server = served.server
    answers = {
        "200 JSON": get(server, "/health"),
        "200 list": get(server, "/v1/models"),
        "400 validation": post(server, "/text2image_search", json={"top_k": 5}),
        "400 ours": post(server, "/vqa", data={"question": " ", "image_id": "ok.jpg"}),
        "415": post(server, "/text2image_search", content=b"x", headers={"content-type": "text/csv"}),
        "405": get(server, "/text2image_search"),
        "404 route": get(server, "/no/such/route"),
        "404 image": get(server, f"/images/{MISSING}"),
        "image": get(server, "/images/ok.jpg?size=0"),
        "thumbnail": get(server, "/images/ok.jpg"),
        "304": get(server, "/images/ok.jpg", **{"If-None-Match": "*"}),
        "ui": get(server, "/ui/"),
        "ui file": get(server, "/ui/app.js"),
        "ui 404": get(server, "/ui/missing.js"),
        "ui redirect": httpx.get(f"{server.url}/ui", follow_redirects=False, timeout=30),
        "docs.json": get(server, "/docs.json"),
        "swagger": get(server, "/"),
        "metrics": get(server, "/metrics"),
        "livez": get(server, "/livez"),
        "readyz": get(server, "/readyz"),
        "stream": post(server, "/vqa/stream", data={"question": QUESTION, "image_id": "ok.jpg",
                                                     "max_new_tokens": "2"}),
    }
    assert answers["304"].status_code == 304 and answers["ui redirect"].status_code == 307
    lacking = {kind: r.status_code for kind, r in answers.items()
               if r.headers.get_list("x-content-type-options") != ["nosniff"]}
    assert not lacking


def test_the_web_page_has_a_strict_csp(served: Served) -> None:
    for path in ("/ui/", "/ui/app.js", "/ui/style.css"):
        assert get(served.server, path).headers["content-security-policy"] == UI_POLICY, path
    assert "content-security-policy" not in get(served.server, "/health").headers


# -- point 6: 4xx in the error shape, never 500 -------------------------------------------------------------

@pytest.mark.parametrize("endpoint", ["/vqa", "/vqa/stream", "/image2image_search"])
def test_a_nul_in_image_id_is_a_404_in_the_error_shape(served: Served, endpoint: str) -> None:
    image_id = "ok\0.jpg"
    if endpoint == "/image2image_search":
        answers = [post(served.server, endpoint, json={"image_id": image_id}),
                   post(served.server, endpoint, data={"image_id": image_id})]
    else:
        answers = [post(served.server, endpoint, data={"question": QUESTION, "image_id": image_id})]
    for answer in answers:
        assert error_of(answer) == (404, "not_found", f"image_id {image_id!r} is not in the image library")
    assert get(served.server, "/images/ok%00.jpg").status_code == 404


def test_a_body_100000_arrays_deep_is_a_400(served: Served) -> None:
    deep_json = {"content": DEEP, "headers": {"content-type": "application/json"}}
    for path in ("/v1/chat/completions", "/text2image_search", "/image2image_search", "/vqa"):
        assert error_of(post(served.server, path, **deep_json)) == (
            400, "invalid_json", f"the body is not valid JSON: {TOO_DEEP}"), path
    chat = b'{"messages": [{"role": "user", "content": ' + DEEP + b"}]}"
    assert error_of(post(served.server, "/v1/chat/completions", content=chat))[:2] == (400, "invalid_json")


def test_a_form_value_100000_arrays_deep_is_a_400(served: Served) -> None:
    answer = post(served.server, "/vqa", data={"question": DEEP.decode(), "image_id": "ok.jpg"})
    assert error_of(answer) == (400, "invalid_json", f"question: {TOO_DEEP}")
    answer = post(served.server, "/image2image_search", data={"image_id": DEEP.decode()})
    assert error_of(answer) == (400, "invalid_json", f"image_id: {TOO_DEEP}")


def test_an_upload_file_name_of_300_bytes_is_a_400(served: Served) -> None:
    image = io.BytesIO()
    Image.new("RGB", (16, 16), "red").save(image, format="PNG")
    name = "a" * 296 + ".png"
    for path, fields in (("/image2image_search", {}), ("/vqa", {"question": QUESTION})):
        answer = post(served.server, path, data=fields, files={"image": (name, image.getvalue(), "image/png")})
        status, code, message = error_of(answer)
        assert (status, code) == (400, "invalid_argument") and "file name is 300 bytes long" in message, path


# -- point 4: whatever the library refuses answers as a missing file ------------------------------------

def raw_post_form(server: Server, path: str, fields: dict[str, str]) -> tuple[int, bytes]:
    """The exact bytes of the answer (httpx would decode them)."""
    request = httpx.Request("POST", "/", data=fields)
    conn = http.client.HTTPConnection(urlsplit(server.url).netloc, timeout=120)
    try:
        conn.request("POST", path, body=request.read(), headers={"content-type": request.headers["content-type"]})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


@pytest.mark.parametrize("endpoint", ["/vqa", "/vqa/stream"])
def test_hidden_linked_non_image_and_missing_ids_answer_the_same_bytes(served: Served, endpoint: str) -> None:
    refused = {".secret.png": "hidden", "link_hidden.png": "link to hidden", "notes.txt": "not an image name",
               "page.png": "not image content", "missing.png": "missing"}
    answers = {rel: raw_post_form(served.server, endpoint, {"question": QUESTION, "image_id": rel}) for rel in refused}
    status, missing = answers.pop("missing.png")
    assert status == 404 and b'"not_found"' in missing
    for rel, (status, body) in answers.items():
        assert (status, body) == (404, missing.replace(b"missing.png", rel.encode())), refused[rel]
