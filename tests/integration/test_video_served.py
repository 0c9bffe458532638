"""Videos through the real service, after `python -m indexer` indexed their moments: search results naming
the moment, a clip listed once with its other moments, the `media` filter, paging, image-to-image search, a
moment's frame as a picture, the clip itself with Range, and bad input answered 4xx. One server for the module."""

from __future__ import annotations

import base64
import io
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from helpers.video import shape_frames, write_clip
from PIL import Image
from serving import Server, png, run_indexer, running, service_env
from shapes import COLORS, caption, draw_shape

FPS = 10
CLIPS: dict[str, tuple[str, list[tuple[str, str, float]]]] = {
    "trips/ferry.mp4": ("libx264", [("circle", "red", 3), ("square", "blue", 3), ("triangle", "green", 3)]),
    "party.webm": ("libvpx-vp9", [("square", "yellow", 3), ("circle", "purple", 3)]),
    # red circle twice: two moments of one clip
    "twice.mkv": ("mpeg4", [("circle", "red", 2), ("triangle", "orange", 2), ("circle", "red", 2)]),
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, tiny_clip_dir: Path) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("videos")
    root = tmp / "library"
    for rel, (codec, segments) in CLIPS.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        write_clip(root / rel, shape_frames(segments, FPS), fps=FPS, codec=codec)
    for i, (shape, color) in enumerate([("square", "red"), ("circle", "green"), ("triangle", "blue")]):
        draw_shape(shape, color, seed=i).save(root / f"photo{i}.jpg")
    (root / "page.mp4").write_text("<html><script>alert(1)</script></html>")
    env = service_env(tmp, tiny_clip_dir, root)
    env["THUMBNAIL_CACHE"] = str(tmp / "thumbs")
    done = run_indexer(env)
    assert done.returncode == 0, done.stderr
    assert "page.mp4" in done.stdout + done.stderr  # listed with its reason
    with running(env, tmp / "server.log") as srv:
        srv.root = root  # type: ignore[attr-defined]
        yield srv


def post(server: Server, path: str, **kwargs: Any) -> httpx.Response:
    return httpx.post(f"{server.url}{path}", timeout=60, **kwargs)


def get(server: Server, path: str, **kwargs: Any) -> httpx.Response:
    return httpx.get(f"{server.url}{path}", timeout=60, **kwargs)


def search(server: Server, shape: str, color: str, **fields: Any) -> list[dict[str, Any]]:
    answer = post(server, "/text2image_search", json={"text_query": caption(shape, color), **fields})
    assert answer.status_code == 200, answer.text
    return list(answer.json()["results"])


def test_a_result_names_its_moment_and_a_clip_is_listed_once(server: Server) -> None:
    top = search(server, "square", "blue", top_k=3)[0]
    assert (top["image"], top["media"]) == ("trips/ferry.mp4", "video")
    assert 3 <= top["t"] < 6 and top["start"] == 3 and top["end"] == 6
    results = search(server, "circle", "red", top_k=8, include_image=False)
    names = [r["image"] for r in results]
    assert len(names) == len(set(names))  # each clip once
    twice = next(r for r in results if r["image"] == "twice.mkv")
    red = {(0.0, 2.0), (4.0, 6.0)}
    assert (twice["start"], twice["end"]) in red  # the best moment first ...
    others = [(m["start"], m["end"]) for m in twice["moments"]]
    assert others[0] in red - {(twice["start"], twice["end"])}  # ... its other red moment beside it
    assert all(m["score"] <= twice["score"] for m in twice["moments"])
    photo = next(r for r in results if r["media"] == "image")
    assert set(photo) == {"image", "score", "media"}  # a photo's result: the fields it always had, and media


def test_media_filter_and_paging(server: Server) -> None:
    videos = search(server, "circle", "red", top_k=10, media="video")
    assert {r["image"] for r in videos} == set(CLIPS)
    images = search(server, "circle", "red", top_k=10, media="image")
    assert {r["image"] for r in images} == {"photo0.jpg", "photo1.jpg", "photo2.jpg"}
    whole = search(server, "circle", "red", top_k=6)
    pages = [r for offset in range(0, 6, 2) for r in search(server, "circle", "red", top_k=2, offset=offset)]
    assert [r["image"] for r in pages] == [r["image"] for r in whole]
    bad = post(server, "/text2image_search", json={"text_query": "x", "media": "audio"})
    assert bad.status_code == 400 and bad.json()["status"] == "error"


def test_image_to_image_finds_moments(server: Server) -> None:
    upload = png(draw_shape("triangle", "green", seed=1))
    answer = post(server, "/image2image_search", data={"top_k": "2"}, files={"image": ("q.png", upload, "image/png")})
    assert answer.status_code == 200, answer.text
    top = answer.json()["results"][0]
    assert (top["image"], top["media"]) == ("trips/ferry.mp4", "video") and 6 <= top["t"] < 9


def test_image_to_image_from_a_moment_of_a_clip(server: Server) -> None:
    """From ferry.mp4's red circle (t=1): the clip with red circles is most alike; the clip asked from is left out
    whole; an upload of that moment's frame finds the same; `t` is required for a clip, and only for a clip."""
    answer = post(server, "/image2image_search", json={"image_id": "trips/ferry.mp4", "t": 1.0, "top_k": 6})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["query"], body["mode"]) == ("trips/ferry.mp4", "vector")
    results = body["results"]
    assert "trips/ferry.mp4" not in [r["image"] for r in results]
    assert (results[0]["image"], results[0]["media"]) == ("twice.mkv", "video")
    assert (results[0]["start"], results[0]["end"]) in {(0.0, 2.0), (4.0, 6.0)}
    frame = get(server, "/images/trips/ferry.mp4", params={"t": "1", "size": "0"}).content
    uploaded = post(server, "/image2image_search", data={"top_k": "6"},
                    files={"image": ("frame.jpg", frame, "image/jpeg")}).json()["results"]
    assert uploaded[0]["image"] == "twice.mkv"
    for fields, says in (({"image_id": "trips/ferry.mp4"}, "send t"),
                         ({"image_id": "trips/ferry.mp4", "t": 500}, "no moment at 500 s"),
                         ({"image_id": "photo0.jpg", "t": 1}, "only with the image_id of a video")):
        refused = post(server, "/image2image_search", json=fields)
        assert refused.status_code == 400 and says in refused.json()["error"]["message"], refused.text


def red_share(image: Image.Image) -> float:
    red = COLORS["red"]
    pixels = np.asarray(image.convert("RGB"), dtype=np.int32).reshape(-1, 3)
    return float(np.mean(np.all(np.abs(pixels - np.array(red)) < 60, axis=1)))


def test_a_moment_frame_is_a_cached_picture(server: Server) -> None:
    top = search(server, "circle", "red", top_k=1, media="video", include_image="thumbnail")[0]
    assert top["thumbnail_url"].startswith(f"/images/{top['image']}?t=")
    assert top["video_url"] == f"/images/{top['image']}"
    frame = get(server, top["thumbnail_url"])
    assert frame.status_code == 200 and frame.headers["content-type"] == "image/jpeg"
    assert red_share(Image.open(io.BytesIO(frame.content))) > 0.05  # the red circle's frame
    later = get(server, "/images/trips/ferry.mp4", params={"t": "4.5", "size": "48"})
    image = Image.open(io.BytesIO(later.content))
    assert max(image.size) == 48 and red_share(image) < 0.01  # the blue square's frame
    inline = search(server, "circle", "red", top_k=1, media="video")[0]  # include_image true: the frame, base64
    picture = Image.open(io.BytesIO(base64.b64decode(inline["image_base64"])))
    assert picture.format == "JPEG" and red_share(picture) > 0.05
    again = get(server, "/images/trips/ferry.mp4", params={"t": "4.5", "size": "48"},
                headers={"If-None-Match": later.headers["etag"]})
    assert again.status_code == 304


def test_the_clip_itself_with_ranges(server: Server) -> None:
    data = (server.root / "party.webm").read_bytes()  # type: ignore[attr-defined]
    whole = get(server, "/images/party.webm")
    assert whole.status_code == 200 and whole.content == data and whole.headers["content-type"] == "video/webm"
    part = get(server, "/images/party.webm", headers={"Range": "bytes=100-199"})
    assert part.status_code == 206 and part.content == data[100:200]
    assert part.headers["content-range"] == f"bytes 100-199/{len(data)}"
    assert get(server, "/images/party.webm", headers={"Range": f"bytes={len(data)}-"}).status_code == 416
    head = httpx.head(f"{server.url}/images/party.webm", timeout=60)
    assert head.status_code == 200 and head.content == b"" and head.headers["content-length"] == str(len(data))


def test_bad_video_requests_are_4xx(server: Server) -> None:
    for t in ("-1", "abc", "nan"):
        answer = get(server, "/images/trips/ferry.mp4", params={"t": t})
        assert answer.status_code == 400 and answer.json()["error"]["code"] == "invalid_argument", t
    assert get(server, "/images/page.mp4").status_code == 404  # HTML under a video name is not served
    assert get(server, "/images/page.mp4", params={"t": "1"}).status_code == 404
    assert get(server, "/images/missing.mp4", params={"t": "1"}).status_code == 404


COLOR_Q = "What color is the shape?"


def test_vqa_about_a_moment_sees_the_frames_around_it(server: Server) -> None:
    for t, color in (("1", "red"), ("4.5", "blue"), ("7.5", "green")):
        answer = post(server, "/vqa", data={"question": COLOR_Q, "image_id": "trips/ferry.mp4", "t": t})
        assert answer.status_code == 200, answer.text
        assert answer.json()["answer"] == color, t
    refusals = [({"image_id": "trips/ferry.mp4"}, 400), ({"image_id": "photo0.jpg", "t": "1"}, 400),
                ({"image_id": "trips/ferry.mp4", "t": "-1"}, 400), ({"image_id": "trips/ferry.mp4", "t": "500"}, 400),
                ({"image_id": "missing.mp4", "t": "1"}, 404), ({"image_id": "page.mp4", "t": "1"}, 400)]
    for fields, status in refusals:
        answer = post(server, "/vqa", data={"question": COLOR_Q, **fields})
        assert answer.status_code == status and answer.json()["status"] == "error", (fields, answer.text)


def test_ask_cites_the_clip_and_the_time(server: Server) -> None:
    answer = post(server, "/ask", json={"question": COLOR_Q, "query": caption("triangle", "green"), "top_k": 1,
                                        "media": "video"})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    source = body["sources"][0]
    assert (source["image"], source["media"]) == ("trips/ferry.mp4", "video") and 6 <= source["t"] < 9
    assert source["thumbnail_url"].startswith("/images/trips/ferry.mp4?t=") and body["answer"] == "green"


def eventually(check: Callable[[], bool], seconds: float = 30) -> bool:
    """Whether `check` holds within `seconds` (the page's CSP refuses Playwright's wait_for_function)."""
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def test_the_page_shows_the_moment_and_plays_the_clip_from_it(server: Server) -> None:
    from helpers.browser import launched, tab
    from playwright.sync_api import expect

    with launched() as browser, tab(browser) as page:
        page.goto(f"{server.url}/ui/")
        page.fill("#query", caption("circle", "purple"))
        page.press("#query", "Enter")
        first = page.locator("#grid .card").first
        expect(first).to_have_attribute("data-image", "party.webm")
        moment = first.locator(".moment")
        expect(moment).to_have_attribute("title", "video moment 0:03–0:06")  # the purple circle's moment
        expect(moment).to_have_text(re.compile(r"▶ 0:0[345]"))  # its best frame's time
        assert eventually(lambda: page.eval_on_selector("#grid .card img", "img => img.naturalWidth") > 0)
        first.click()
        expect(page.locator("#viewer-video")).to_be_visible()
        assert eventually(lambda: page.eval_on_selector("#viewer-video", "video => video.currentTime") >= 3)
        expect(page.locator("#viewer-img")).to_be_hidden()
        expect(page.locator("#viewer-meta")).to_contain_text(re.compile(r"video moment at 0:0[345]"))
        page.click("#similar")  # photos and clips like this moment; the clip itself left out
        expect(page.locator("#summary")).to_contain_text(re.compile(r"similar to party\.webm at 0:0[345]"))
        expect(page.locator("#grid .card").first).to_be_visible()
        expect(page.locator('#grid .card[data-image="party.webm"]')).to_have_count(0)
