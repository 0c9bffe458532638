"""Hostile HTTP input, the plain parts (issue 16, points 5 and 6): the content type of /images read
from the content, the JSON nesting bound, the form checks for deep values and unusable upload names,
and the security headers. The served cases are in tests/integration/test_faults_http_served.py."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import pytest
from PIL import Image
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from api.errors import ApiError
from api.http.json_body import MAX_JSON_DEPTH, TOO_DEEP, parse_json, too_deep
from api.http.middleware import FormInspector, SecurityHeaders, validation_error
from api.http.paths import UI_POLICY
from api.images import content_type, file_type
from core.bentoml_compat import MAX_UPLOAD_NAME_BYTES, upload_name_problem
from core.images import BadImage
from core.library import Library

NOT_IMAGES = {
    "html": b"<!doctype html><html><script>alert(document.cookie)</script></html>",
    "svg": b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>',
    "text": b"just some notes\n",
    "empty": b"",
    "png-magic-then-html": b"\x89PNG\r\n\x1a\n<html><script>alert(1)</script></html>",
}


def encoded(fmt: str, **options: object) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 6), (200, 30, 30)).save(out, format=fmt, **options)
    return out.getvalue()


# -- /images: the type comes from the content --------------------------------------------------------

@pytest.mark.parametrize(("fmt", "media_type"), [
    ("JPEG", "image/jpeg"), ("PNG", "image/png"), ("WEBP", "image/webp"), ("GIF", "image/gif"), ("BMP", "image/bmp"),
])
def test_allowed_formats_get_the_type_of_their_content(fmt: str, media_type: str) -> None:
    assert content_type(encoded(fmt)) == media_type


def test_a_camera_mpo_is_served_as_jpeg() -> None:
    frame = Image.new("RGB", (8, 6))
    out = io.BytesIO()
    frame.save(out, format="MPO", save_all=True, append_images=[frame])
    assert content_type(out.getvalue()) == "image/jpeg"


@pytest.mark.parametrize("name", sorted(NOT_IMAGES))
def test_what_is_not_an_image_has_no_type(name: str) -> None:
    assert content_type(NOT_IMAGES[name]) is None


def test_an_image_format_that_is_not_allowed_has_no_type() -> None:
    tiff = encoded("TIFF")
    assert Image.open(io.BytesIO(tiff)).format == "TIFF"  # PIL reads it; we still do not serve it
    assert content_type(tiff) is None


def test_file_type_reads_a_file_and_refuses_non_images(tmp_path: Path) -> None:
    jpeg_named_png, html_named_png = tmp_path / "a.png", tmp_path / "b.png"
    jpeg_named_png.write_bytes(encoded("JPEG"))
    html_named_png.write_bytes(NOT_IMAGES["html"])
    library = Library(tmp_path)
    with library.open("a.png") as opened:
        assert file_type(opened) == "image/jpeg"
    with library.open("b.png") as opened, pytest.raises(BadImage):
        file_type(opened)


# -- JSON nesting ------------------------------------------------------------------------------------

def deep(levels: int, open_: str = "[", close: str = "]") -> bytes:
    return (open_ * levels + close * levels).encode()


def test_a_body_100000_arrays_deep_is_a_400_in_well_under_a_second() -> None:
    start = time.monotonic()
    with pytest.raises(ApiError) as caught:
        parse_json(deep(100_000))
    assert time.monotonic() - start < 1
    error = caught.value
    assert (error.status, error.code, error.message) == (400, "invalid_json", f"the body is not valid JSON: {TOO_DEEP}")


def test_nesting_up_to_the_bound_parses() -> None:
    assert parse_json(deep(MAX_JSON_DEPTH)) == json.loads(deep(MAX_JSON_DEPTH))
    assert too_deep(deep(MAX_JSON_DEPTH + 1)) and too_deep(deep(MAX_JSON_DEPTH + 1, "{\"a\":", "}"))


def test_brackets_inside_strings_do_not_count() -> None:
    text = json.dumps({"messages": [{"content": "[" * 5000 + '\\"' + "{" * 5000}]}).encode()
    assert not too_deep(text)
    assert parse_json(text)["messages"][0]["content"].startswith("[[[")


def test_an_unclosed_string_or_stray_escapes_stay_linear() -> None:
    start = time.monotonic()
    assert not too_deep(b'["' + b'\\"' * 300_000)
    assert not too_deep(b'"' * 300_000 + b"[" * 150)
    assert time.monotonic() - start < 1


def test_invalid_json_keeps_its_message() -> None:
    for body in (b"{not json", b"\xff\xfe"):
        with pytest.raises(ApiError) as caught:
            parse_json(body)
        assert (caught.value.code, caught.value.message) == ("invalid_json", "the body is not valid JSON")


def test_pydantic_recursion_limit_reads_as_nested_too_deeply() -> None:
    details = [{"type": "json_invalid", "loc": ["body"],
                "msg": "Invalid JSON: recursion limit exceeded at line 1 column 215"}]
    assert validation_error(details) == ("invalid_json", f"the body is not valid JSON: {TOO_DEEP}")
    other = [{"type": "json_invalid", "msg": "Invalid JSON: EOF while parsing a value at line 1 column 0"}]
    assert validation_error(other) == ("invalid_json", "the body is not valid JSON: EOF while parsing a value "
                                                       "at line 1 column 0")


# -- forms: deep values, unusable upload names -------------------------------------------------------

def inspect_form(*parts: bytes) -> tuple[str, str] | None:
    body = b"".join(b"--b\r\n" + part + b"\r\n" for part in parts) + b"--b--\r\n"
    inspector = FormInspector("multipart/form-data", {b"boundary": b"b"}, {"image"})
    inspector.feed(body, last=True)
    return inspector.problem


def upload(filename: bytes) -> bytes:
    return b'Content-Disposition: form-data; name="image"; filename="' + filename + b'"\r\n\r\n\x89PNG'


def test_a_deep_form_value_is_refused_and_text_with_brackets_is_not() -> None:
    assert inspect_form(b'Content-Disposition: form-data; name="text_query"\r\n\r\n' + deep(100_000)) == (
        "invalid_json", f"text_query: {TOO_DEEP}")
    question = b"what is this " + b"[" * 5000
    assert inspect_form(b'Content-Disposition: form-data; name="question"\r\n\r\n' + question) is None
    urlencoded = FormInspector("application/x-www-form-urlencoded", {}, set())
    urlencoded.feed(b"text_query=" + b"%5B" * 300 + b"%5D" * 300, last=True)
    assert urlencoded.problem == ("invalid_json", f"text_query: {TOO_DEEP}")


def test_an_upload_name_too_long_for_a_temporary_file_is_refused() -> None:
    assert inspect_form(upload(b"a" * (MAX_UPLOAD_NAME_BYTES - 4) + b".png")) is None
    problem = inspect_form(upload(b"a" * 296 + b".png"))
    assert problem == ("invalid_argument", f"image: the file name is 300 bytes long, over the "
                                           f"{MAX_UPLOAD_NAME_BYTES} bytes a saved upload can have")


def test_upload_name_problem_measures_what_bentoml_saves() -> None:
    assert MAX_UPLOAD_NAME_BYTES == 255 - len("tmp") - 8
    assert upload_name_problem(b"folder/" * 100 + b"cat.png") is None  # only the last part is kept
    assert upload_name_problem("图".encode() * 80 + b".png") is None  # 244 bytes of UTF-8
    assert upload_name_problem("图".encode() * 80 + b".jpeg") is not None  # 245
    assert upload_name_problem(b"\xe9" * 130) is not None  # Latin-1 fallback: 260 bytes once saved as UTF-8


# -- security headers ----------------------------------------------------------------------------------

async def page(request: Request) -> PlainTextResponse:
    return PlainTextResponse("<html>", media_type="text/html", headers={"x-content-type-options": "sniff-me"})


async def broken(request: Request) -> JSONResponse:
    raise RuntimeError("a bug")


@pytest.fixture(scope="module")
def headers_client() -> TestClient:
    app = Starlette(routes=[Route("/ui/", page), Route("/api", broken)])
    app.add_middleware(SecurityHeaders)
    return TestClient(app, raise_server_exceptions=False)


@pytest.mark.parametrize("path", ["/ui/", "/api", "/nowhere", "/ui/missing.js"])
def test_every_response_gets_nosniff_once(headers_client: TestClient, path: str) -> None:
    answer = headers_client.get(path)
    assert answer.headers.get_list("x-content-type-options") == ["nosniff"], (path, answer.status_code)


def test_only_the_web_page_gets_the_csp(headers_client: TestClient) -> None:
    assert headers_client.get("/ui/").headers["content-security-policy"] == UI_POLICY
    assert "content-security-policy" not in headers_client.get("/api").headers
    assert "'unsafe-inline'" not in UI_POLICY and "script-src 'self'" in UI_POLICY


def test_an_unhandled_error_is_answered_inside_with_the_headers(headers_client: TestClient) -> None:
    answer = headers_client.get("/api")
    assert answer.status_code == 500 and answer.json()["error"]["code"] == "internal_error"
    assert answer.headers["x-content-type-options"] == "nosniff"
