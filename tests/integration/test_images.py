"""Thumbnails (GET /images/...), include_image="thumbnail", POST /image2image_search, and the search
filters, paging and dedup, over HTTP against the real `bentoml serve` with the tiny trained CLIP."""

from __future__ import annotations

import base64
import http.client
import io
import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from PIL import Image
from serving import Server, png, run_indexer, running, service_env
from shapes import CLASSES, draw_shape, make_library

from api.search_fields import image_urls

OLD = 1_000_000_000  # 2001-09-09: the mtime of the "old" files
SEED = 6_200


class Library:
    def __init__(self, root: Path, shapes: dict[str, tuple[str, str]], cache: Path, outside: Path) -> None:
        self.root = root
        self.shapes = shapes
        self.cache = cache
        self.outside = outside


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> Library:
    tmp = tmp_path_factory.mktemp("images")
    root = tmp / "photos"
    shapes = make_library(root, n_per_class=2, seed=SEED)
    draw_shape("circle", "blue", size=96, seed=1).resize((1200, 800)).save(root / "big.jpg", quality=90)
    shapes["big.jpg"] = ("circle", "blue")
    (root / "dups").mkdir()
    original = next(rel for rel, cls in sorted(shapes.items()) if cls == ("circle", "red"))
    shutil.copy(root / original, root / "dups" / Path(original).name)  # identical content elsewhere
    shapes[f"dups/{Path(original).name}"] = ("circle", "red")
    for rel in [rel for rel in sorted(shapes) if "/" not in rel and rel != "big.jpg"][:6]:
        os.utime(root / rel, (OLD, OLD))
    (root / "broken.jpg").write_bytes(b"not a jpeg at all")
    (root / "notes.txt").write_text("not an image")
    outside = tmp / "outside.jpg"
    draw_shape("square", "green").save(outside)
    (root / "link.jpg").symlink_to(outside)
    (root / ".hidden.jpg").write_bytes(outside.read_bytes())
    return Library(root, shapes, tmp / "thumbs", outside)


@pytest.fixture(scope="module")
def server(library: Library, tiny_clip_dir: Path) -> Iterator[Server]:
    tmp = library.root.parent
    env = service_env(tmp, tiny_clip_dir, library.root)
    env["THUMBNAIL_CACHE"] = str(library.cache)
    done = run_indexer(env)
    assert done.returncode == 0, done.stderr
    with running(env, tmp / "server.log") as srv:
        yield srv


def get(server: Server, path: str, **kwargs: Any) -> httpx.Response:
    return httpx.get(f"{server.url}{path}", timeout=60, **kwargs)


def raw_get(server: Server, path: str) -> tuple[int, dict[str, Any]]:
    """A GET whose path goes out byte for byte (httpx would resolve `..`)."""
    conn = http.client.HTTPConnection(urlsplit(server.url).netloc, timeout=60)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def post(server: Server, path: str, **kwargs: Any) -> httpx.Response:
    return httpx.post(f"{server.url}{path}", timeout=60, **kwargs)


def error_code(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["status"] == "error" and set(body["error"]) == {"code", "message"}
    return str(body["error"]["code"])


# ---------------------------------------------------------------- thumbnails


def test_thumbnail_sizes_formats_and_the_original(server: Server, library: Library) -> None:
    default = get(server, "/images/big.jpg")
    assert default.status_code == 200 and default.headers["content-type"] == "image/jpeg"
    image = Image.open(io.BytesIO(default.content))
    assert image.format == "JPEG" and image.size == (256, 171)
    small = Image.open(io.BytesIO(get(server, "/images/big.jpg", params={"size": 40}).content))
    assert max(small.size) == 40
    webp = get(server, "/images/big.jpg", params={"size": 100, "format": "webp"})
    assert webp.headers["content-type"] == "image/webp"
    assert Image.open(io.BytesIO(webp.content)).format == "WEBP"
    original = get(server, "/images/big.jpg", params={"size": 0})
    assert original.headers["content-type"] == "image/jpeg"
    assert original.content == (library.root / "big.jpg").read_bytes()
    a_png = next(rel for rel in library.shapes if rel.endswith(".png"))
    served = get(server, f"/images/{a_png}", params={"size": 0})
    assert served.headers["content-type"] == "image/png" and served.content == (library.root / a_png).read_bytes()
    tiny = Image.open(io.BytesIO(get(server, f"/images/{a_png}", params={"size": 2048}).content))
    assert tiny.size == Image.open(library.root / a_png).size  # never enlarged


def test_thumbnails_are_cached_on_disk_atomically(server: Server, library: Library) -> None:
    rel = sorted(library.shapes)[10]
    first = get(server, f"/images/{rel}", params={"size": 33})
    cached = [p for p in library.cache.rglob("*") if p.is_file()]
    assert any(p.read_bytes() == first.content for p in cached)
    assert not [p for p in cached if p.name.startswith(".tmp-")]
    again = get(server, f"/images/{rel}", params={"size": 33})
    assert again.content == first.content and again.headers["etag"] == first.headers["etag"]


def test_etag_last_modified_and_304(server: Server, library: Library) -> None:
    rel = "later/edited.png"  # served though not indexed yet: changed below without touching the index
    (library.root / "later").mkdir(exist_ok=True)
    shutil.copy(library.root / sorted(library.shapes)[12], library.root / rel)
    first = get(server, f"/images/{rel}")
    etag, modified = first.headers["etag"], first.headers["last-modified"]
    assert first.headers["cache-control"].startswith("private")
    not_modified = get(server, f"/images/{rel}", headers={"If-None-Match": etag})
    assert not_modified.status_code == 304 and not_modified.content == b""
    assert not_modified.headers["etag"] == etag
    assert get(server, f"/images/{rel}", headers={"If-None-Match": f'"other", W/{etag}'}).status_code == 304
    assert get(server, f"/images/{rel}", headers={"If-Modified-Since": modified}).status_code == 304
    assert get(server, f"/images/{rel}", headers={"If-None-Match": '"other"'}).status_code == 200
    old = "Sat, 01 Jan 2000 00:00:00 GMT"
    assert get(server, f"/images/{rel}", headers={"If-Modified-Since": old}).status_code == 200
    assert get(server, f"/images/{rel}", params={"size": 64}).headers["etag"] != etag
    assert get(server, f"/images/{rel}", params={"size": 0}).headers["etag"] != etag
    # The file changes: a new thumbnail under a new ETag.
    path = library.root / rel
    draw_shape("triangle", "yellow", size=80).save(path, format="PNG")
    os.utime(path, (time.time() + 3, time.time() + 3))
    changed = get(server, f"/images/{rel}", headers={"If-None-Match": etag})
    assert changed.status_code == 200 and changed.headers["etag"] != etag and changed.content != first.content


@pytest.mark.parametrize("path", [
    "/images/../outside.jpg",
    "/images/%2e%2e/outside.jpg",
    "/images/red/%2E%2E/%2E%2E/outside.jpg",
    "/images/..%2Foutside.jpg",
    "/images/%2F..%2Foutside.jpg",
    "/images//etc/passwd",
    "/images/%2Fetc%2Fpasswd",
    "/images/link.jpg",
    "/images/.hidden.jpg",
    "/images/broken.jpg",
    "/images/notes.txt",
    "/images/missing.jpg",
    "/images/red",
    "/images/",
    "/images/big.jpg%00.txt",
    "/images/big%5C..%5Cbig.jpg",
])
def test_paths_outside_or_not_images_are_404(server: Server, library: Library, path: str) -> None:
    status, body = raw_get(server, path)
    assert status == 404, (path, body)
    assert body["status"] == "error" and body["error"]["code"] == "not_found"


def test_bad_size_or_format_is_400(server: Server) -> None:
    for params in ({"size": -1}, {"size": 2049}, {"size": "big"}, {"size": "1.5"}, {"format": "gif"}):
        assert error_code(get(server, "/images/big.jpg", params=params), 400) == "invalid_argument"


# ---------------------------------------------------------------- text search with thumbnails


def test_include_image_thumbnail_true_and_false(server: Server, library: Library) -> None:
    thumb = post(server, "/text2image_search", data={"text_query": "红色的圆形", "top_k": "3",
                                                      "include_image": "thumbnail"})
    assert thumb.status_code == 200, thumb.text
    results = thumb.json()["results"]
    assert len(results) == 3 and all(library.shapes[r["image"]] == ("circle", "red") for r in results)
    for result in results:
        assert "image_base64" not in result
        assert result["thumbnail_url"].endswith("?size=256") and result["image_url"].endswith("?size=0")
        fetched = get(server, result["image_url"])
        assert fetched.status_code == 200 and fetched.content == (library.root / result["image"]).read_bytes()
        assert get(server, result["thumbnail_url"]).headers["content-type"] == "image/jpeg"
    as_json = post(server, "/text2image_search", json={"text_query": "a red circle", "include_image": "thumbnail"})
    assert all("thumbnail_url" in r for r in as_json.json()["results"])
    full = post(server, "/text2image_search", json={"text_query": "红色的圆形", "top_k": 2}).json()["results"]
    assert base64.b64decode(full[0]["image_base64"]) == (library.root / full[0]["image"]).read_bytes()
    assert set(full[0]) == {"image", "score", "image_base64", "media"}  # media: "image" (videos: "video")
    bare = post(server, "/text2image_search", data={"text_query": "红色的圆形", "include_image": "false"})
    assert all(set(r) == {"image", "score", "media"} and r["media"] == "image" for r in bare.json()["results"])
    assert error_code(post(server, "/text2image_search", json={"text_query": "x", "include_image": "maybe"}),
                      400) == "invalid_argument"


def test_thumbnail_urls_quote_odd_names(server: Server, library: Library) -> None:
    folder = library.root / "相册 2024"
    folder.mkdir(exist_ok=True)
    draw_shape("square", "purple").save(folder / "a #1?.png")
    urls = image_urls("相册 2024/a #1?.png")
    assert urls == {"thumbnail_url": "/images/%E7%9B%B8%E5%86%8C%202024/a%20%231%3F.png?size=256",
                    "image_url": "/images/%E7%9B%B8%E5%86%8C%202024/a%20%231%3F.png?size=0"}
    assert get(server, urls["thumbnail_url"]).status_code == 200
    assert get(server, urls["image_url"]).content == (folder / "a #1?.png").read_bytes()


# ---------------------------------------------------------------- image-to-image search


def classes_of(library: Library, results: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [library.shapes[r["image"]] for r in results]


def test_an_uploaded_red_circle_finds_the_red_circles_first(server: Server, library: Library) -> None:
    upload = png(draw_shape("circle", "red", seed=SEED + 1))
    response = post(server, "/image2image_search", files={"image": ("my red.png", upload, "image/png")},
                    data={"top_k": "3", "include_image": "false"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "success" and body["query"] == "my red.png"
    assert classes_of(library, body["results"]) == [("circle", "red")] * 3  # two originals and the copy
    scores = [r["score"] for r in body["results"]]
    assert scores == sorted(scores, reverse=True)


def test_uploads_rank_every_class(server: Server, library: Library) -> None:
    hits = 0
    for shape, color in CLASSES:
        upload = png(draw_shape(shape, color, seed=SEED + 2))
        results = post(server, "/image2image_search", files={"image": ("q.png", upload, "image/png")},
                       data={"top_k": "1", "include_image": "false"}).json()["results"]
        hits += classes_of(library, results) == [(shape, color)]
    assert hits >= 0.9 * len(CLASSES)


def test_a_library_file_uploaded_finds_itself(server: Server, library: Library) -> None:
    rel = next(rel for rel in sorted(library.shapes) if rel.endswith(".jpg") and not rel.startswith("dups"))
    results = post(server, "/image2image_search", files={"image": ("x.jpg", (library.root / rel).read_bytes())},
                   data={"top_k": "1", "include_image": "true"}).json()["results"]
    assert results[0]["image"] == rel and results[0]["score"] == pytest.approx(1.0, abs=1e-3)
    assert base64.b64decode(results[0]["image_base64"]) == (library.root / rel).read_bytes()


def test_image_id_uses_the_stored_vector_and_leaves_the_image_out(server: Server, library: Library) -> None:
    rel = next(rel for rel, cls in sorted(library.shapes.items()) if cls == ("circle", "red"))
    response = post(server, "/image2image_search", json={"image_id": rel, "top_k": 2, "include_image": "thumbnail"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["query"] == rel
    assert rel not in [r["image"] for r in body["results"]]
    assert classes_of(library, body["results"]) == [("circle", "red")] * 2
    assert body["results"][0]["score"] == pytest.approx(1.0, abs=1e-4)  # the identical copy in dups/
    assert all("thumbnail_url" in r for r in body["results"])
    as_form = post(server, "/image2image_search", data={"image_id": f"./{rel}", "top_k": "2"})
    assert [r["image"] for r in as_form.json()["results"]] == [r["image"] for r in body["results"]]


def test_image2image_bad_input(server: Server) -> None:
    junk = post(server, "/image2image_search", files={"image": ("a.png", b"this is not an image", "image/png")})
    assert error_code(junk, 400) == "invalid_argument" and "image:" in junk.json()["error"]["message"]
    assert error_code(post(server, "/image2image_search", json={"top_k": 3}), 400) == "invalid_argument"
    both = post(server, "/image2image_search", data={"image_id": "big.jpg"},
                files={"image": ("a.png", png(draw_shape("circle", "red")), "image/png")})
    assert "exactly one" in both.json()["error"]["message"] and both.status_code == 400
    assert error_code(post(server, "/image2image_search", json={"image_id": "nope.png"}), 404) == "not_found"
    assert error_code(post(server, "/image2image_search", json={"image_id": "broken.jpg"}), 404) == "not_found"
    # outside the library answers as missing does (core/library.py), so no one can probe which files exist
    assert error_code(post(server, "/image2image_search", json={"image_id": "../outside.jpg"}), 404) == "not_found"
    assert error_code(post(server, "/image2image_search", json={"image_id": "/etc/passwd"}), 404) == "not_found"


# ---------------------------------------------------------------- filters, paging, dedup


def search(server: Server, path: str = "/text2image_search", **fields: Any) -> list[dict[str, Any]]:
    body = {"text_query": "红色的圆形", "top_k": 100, "include_image": False, **fields}
    if path == "/image2image_search":
        body.pop("text_query")
    response = post(server, path, json=body)
    assert response.status_code == 200, response.text
    return list(response.json()["results"])


def test_folder_filter(server: Server, library: Library) -> None:
    red = search(server, folder="red")
    assert red and {r["image"] for r in red} == {rel for rel in library.shapes if rel.startswith("red/")}
    assert {r["image"] for r in search(server, folder="/red/")} == {r["image"] for r in red}
    assert search(server, folder="re") == []
    assert len(search(server, folder="")) == len(library.shapes)
    rel = next(rel for rel in library.shapes if rel.startswith("blue/"))
    similar = search(server, "/image2image_search", image_id=rel, folder="blue")
    assert {r["image"] for r in similar} == {r for r in library.shapes if r.startswith("blue/")} - {rel}


def test_date_size_filters(server: Server, library: Library) -> None:
    old = {rel for rel in library.shapes if (library.root / rel).stat().st_mtime == OLD}
    assert len(old) == 6
    assert {r["image"] for r in search(server, modified_before="2001-09-09")} == old
    assert {r["image"] for r in search(server, modified_before="2001-09-08")} == set()
    assert {r["image"] for r in search(server, modified_before=OLD)} == old
    assert {r["image"] for r in search(server, modified_after="2001-09-09T01:46:41Z")} == set(library.shapes) - old
    assert {r["image"] for r in search(server, modified_after=str(OLD + 1))} == set(library.shapes) - old
    assert {r["image"] for r in search(server, modified_before="2001-09-09T09:46:40+08:00")} == old
    wide = {rel for rel in library.shapes if Image.open(library.root / rel).width >= 96}
    assert {r["image"] for r in search(server, min_width=96, min_height=96)} == wide
    big = {rel for rel in library.shapes if (library.root / rel).stat().st_size >= 5_000}
    assert {r["image"] for r in search(server, min_bytes=5_000)} == big
    form = post(server, "/text2image_search", data={"text_query": "红色", "modified_after": "2001-09-10",
                                                    "min_width": "1000", "include_image": "false"})
    assert [r["image"] for r in form.json()["results"]] == ["big.jpg"]


def test_offset_paging_and_dedup(server: Server, library: Library) -> None:
    ranked = [(r["image"], r["score"]) for r in search(server)]
    full = [image for image, _ in ranked]
    pages = [[(r["image"], r["score"]) for r in search(server, top_k=5, offset=start)]
             for start in range(0, len(full) + 5, 5)]
    paged = sum(pages, [])
    # Pages join to the full ranking: the same scores in the same order and the same images; identical
    # copies (equal scores) may swap places between two queries.
    assert [score for _, score in paged] == [score for _, score in ranked]
    assert sorted(paged) == sorted(ranked)
    copy = next(rel for rel in library.shapes if rel.startswith("dups/"))
    original = next(rel for rel in library.shapes if rel != copy and Path(rel).name == Path(copy).name)
    assert {copy, original} <= set(full[:3])
    deduped = [r["image"] for r in search(server, dedup=True)]
    assert len(deduped) == len(full) - 1 and len({copy, original} & set(deduped)) == 1
    worse = max(copy, original)  # of identical copies (equal scores) dedup keeps the first path
    assert deduped == [rel for rel in full if rel != worse]
    dedup_pages = [[r["image"] for r in search(server, top_k=4, offset=start, dedup=True)] for start in range(0, 48, 4)]
    assert sum(dedup_pages, []) == deduped


@pytest.mark.parametrize(("fields", "says"), [
    ({"modified_after": "yesterday"}, "modified_after: 'yesterday' is not an ISO 8601 date"),
    ({"modified_before": "2024-13-01"}, "modified_before:"),
    ({"modified_after": "2024-06-01", "modified_before": "2024-05-01"}, "later than"),
    ({"offset": -1}, "offset: Input should be greater than or equal to 0"),
    ({"offset": 950, "top_k": 100}, "offset + top_k is 1050, more than 1000"),
    ({"min_width": -5}, "min_width:"),
    ({"folder": "../etc"}, "folder:"),
    ({"dedup": "sometimes"}, "dedup:"),
])
def test_bad_filters_are_400_with_a_clear_message(server: Server, fields: dict[str, Any], says: str) -> None:
    for path, body in (("/text2image_search", {"text_query": "x", **fields}),
                       ("/image2image_search", {"image_id": "big.jpg", **fields})):
        response = post(server, path, json=body)
        assert error_code(response, 400) == "invalid_argument", path
        assert says in response.json()["error"]["message"], response.text
