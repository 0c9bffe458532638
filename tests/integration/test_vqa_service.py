"""VQA over HTTP against the real `bentoml serve`: the seed's form call, library images, video,
streaming, batching, and the OpenAI-compatible chat API through the official `openai` client."""

from __future__ import annotations

import base64
import concurrent.futures
import io
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from fixtures.make_tiny_qwen import draw_clip
from helpers.video import write_clip
from PIL import Image
from serving import Server, png, running, service_env
from shapes import COLOR_ZH, draw_shape

SEED = 7_000  # fresh images, never seen in training
COLOR_Q = "What color is the shape?"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, tiny_clip_dir: Path) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("vqa")
    library = tmp / "photos"
    (library / "album").mkdir(parents=True)
    draw_shape("square", "green", size=96, seed=SEED).save(library / "album" / "green.jpg", quality=95)
    (tmp / "secret.png").write_bytes(png(draw_shape("circle", "red", seed=SEED)))
    (library / "escape.png").symlink_to(tmp / "secret.png")
    with running(service_env(tmp, tiny_clip_dir, library), tmp / "server.log") as srv:
        yield srv


def ask(server: Server, question: str = COLOR_Q, image: bytes | None = None, **fields: Any) -> httpx.Response:
    files = {"image": ("photo.png", image, "image/png")} if image is not None else None
    data = {"question": question, **{k: str(v) for k, v in fields.items()}}
    return httpx.post(f"{server.url}/vqa", data=data, files=files, timeout=120)


def test_seed_form_call_answers_the_colour(server: Server) -> None:
    right = 0
    cases = [("circle", "red"), ("square", "blue"), ("triangle", "yellow"), ("circle", "purple")]
    for i, (shape, color) in enumerate(cases):
        response = ask(server, image=png(draw_shape(shape, color, size=80, seed=SEED + i)))
        assert response.status_code == 200, response.text
        body = response.json()
        assert set(body) == {"status", "question", "answer"}
        assert body["status"] == "success" and body["question"] == COLOR_Q
        right += body["answer"] == color
    assert right == len(cases)
    chinese = ask(server, "图形是什么颜色？", image=png(draw_shape("square", "orange", seed=SEED + 9)))
    assert chinese.json()["answer"] == COLOR_ZH["orange"]


def test_image_id_asks_about_a_library_image(server: Server) -> None:
    assert ask(server, image_id="album/green.jpg").json()["answer"] == "green"
    assert ask(server, image_id="album/missing.jpg").status_code == 404
    assert ask(server, image_id="../secret.png").status_code == 404  # refused as a missing file is
    assert ask(server, image_id="/etc/passwd").status_code == 404
    assert ask(server, image_id="escape.png").status_code == 404  # a symlink leaving the library


def test_bad_vqa_input_is_a_4xx(server: Server) -> None:
    image = png(draw_shape("circle", "red", seed=SEED))
    not_image = ask(server, image=b"this is not an image")
    assert not_image.status_code == 400
    assert not_image.json() == {"status": "error", "error": {
        "code": "invalid_argument", "message": "image: not a readable image: unknown image format"}}
    assert ask(server, image=b"").status_code == 400
    assert ask(server, image=image[: len(image) // 2]).status_code == 400
    assert ask(server, question="   ", image=image).status_code == 400
    assert ask(server).status_code == 400  # neither image nor image_id
    assert ask(server, image=image, image_id="album/green.jpg").status_code == 400
    assert ask(server, image=image, max_new_tokens=0).status_code == 400


def bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A PNG whose header claims width x height pixels (with a valid CRC) and almost no data."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) \
        + chunk(b"IEND", b"")


def encoded(image: Image.Image, fmt: str, **options: Any) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **options)
    return buf.getvalue()


def image_kinds() -> dict[str, bytes]:
    base = draw_shape("circle", "blue", size=64, seed=SEED + 11)
    frames = [base, draw_shape("square", "red", size=64, seed=SEED + 12)]
    rotated = Image.new("RGB", (80, 40), (30, 70, 215))
    exif = rotated.getexif()
    exif[0x0112] = 6
    return {
        "cmyk.jpg": encoded(base.convert("CMYK"), "JPEG"),
        "palette.png": encoded(base.convert("P"), "PNG"),
        "alpha.png": encoded(base.convert("RGBA"), "PNG"),
        "grey-alpha.png": encoded(base.convert("LA"), "PNG"),
        "16bit.png": encoded(base.convert("L").convert("I;16"), "PNG"),
        "bilevel.png": encoded(base.convert("1"), "PNG"),
        "animated.gif": encoded(frames[0], "GIF", save_all=True, append_images=frames[1:]),
        "image.webp": encoded(base, "WEBP"),
        "image.bmp": encoded(base, "BMP"),
        "exif-rotated.jpg": encoded(rotated, "JPEG", exif=exif),
    }


@pytest.mark.parametrize("name", list(image_kinds()))
def test_every_image_kind_is_answered(server: Server, name: str) -> None:
    response = httpx.post(f"{server.url}/vqa", data={"question": COLOR_Q}, timeout=120,
                          files={"image": (name, image_kinds()[name], "application/octet-stream")})
    assert response.status_code == 200, response.text
    assert response.json()["answer"]


def test_decompression_bomb_is_refused(server: Server) -> None:
    response = ask(server, image=bomb_png())
    assert response.status_code == 400
    assert "too large" in response.json()["error"]["message"]


def test_too_long_question_is_400(server: Server) -> None:
    assert ask(server, "x" * 513, image=png(draw_shape("circle", "red", seed=SEED))).status_code == 400


def test_max_new_tokens_bounds_the_answer(server: Server) -> None:
    image = png(draw_shape("circle", "red", seed=SEED + 3))
    full = ask(server, "Describe the image.", image=image).json()["answer"]
    short = ask(server, "Describe the image.", image=image, max_new_tokens=2).json()["answer"]
    assert len(full) > len(short) > 0 and full.startswith(short)


def test_video_upload(server: Server, tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "clip.mp4", draw_clip("circle", "blue", 20, 96, SEED), fps=10, codec="libx264")
    response = httpx.post(f"{server.url}/vqa", data={"question": "What color is the shape in the video?"},
                          files={"video": ("clip.mp4", clip.read_bytes(), "video/mp4")}, timeout=120)
    assert response.status_code == 200, response.text
    assert response.json()["answer"] == "blue"
    not_video = httpx.post(f"{server.url}/vqa", data={"question": "What color?"},
                           files={"video": ("clip.mp4", b"plain text", "video/mp4")}, timeout=120)
    assert not_video.status_code == 400


def test_stream_equals_the_plain_answer(server: Server) -> None:
    image = png(draw_shape("triangle", "green", seed=SEED + 4))
    plain = ask(server, "Describe the image.", image=image).json()["answer"]
    chunks = []
    with httpx.stream("POST", f"{server.url}/vqa/stream", data={"question": "Describe the image."},
                      files={"image": ("p.png", image, "image/png")}, timeout=120) as response:
        assert response.status_code == 200
        # Sent as it is generated (chunked, no length known up front). How many pieces the client sees
        # depends on timing (the tiny model is fast); test_vlm checks the model yields several pieces.
        assert response.headers.get("transfer-encoding") == "chunked"
        assert "content-length" not in response.headers
        chunks = [c for c in response.iter_text() if c]
    assert "".join(chunks) == plain
    bad = httpx.post(f"{server.url}/vqa/stream", data={"question": "x"},
                     files={"image": ("p.png", b"nope", "image/png")}, timeout=60)
    assert bad.status_code == 400


def test_concurrent_questions_are_batched_and_equal_serial_answers(server: Server) -> None:
    images = [png(draw_shape(s, c, size=64 + 8 * i, seed=SEED + 20 + i)) for i, (s, c) in enumerate(
        [("circle", "red"), ("square", "green"), ("triangle", "blue"), ("circle", "yellow"),
         ("square", "purple"), ("triangle", "orange"), ("circle", "green"), ("square", "red")])]
    questions = [COLOR_Q, "图形是什么颜色？", "Describe the image.", COLOR_Q] * 2
    serial = [ask(server, q, image=img).json()["answer"] for q, img in zip(questions, images, strict=True)]
    before = httpx.get(f"{server.url}/health", timeout=30).json()["vqa_batches"]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda qi: ask(server, qi[0], image=qi[1]).json()["answer"],
                                zip(questions, images, strict=True)))
    after = httpx.get(f"{server.url}/health", timeout=30).json()["vqa_batches"]
    assert answers == serial
    assert after["answers"] - before["answers"] == 8
    assert after["generate_calls"] - before["generate_calls"] < 8  # several questions shared a generate()


def test_uploads_leave_no_files_behind(server: Server) -> None:
    for i in range(3):
        assert ask(server, image=png(draw_shape("circle", "red", seed=SEED + i))).status_code == 200
    assert ask(server, image=b"junk").status_code == 400
    tmp = Path(server.env["TMPDIR"])
    request_dirs = list(tmp.glob("bentoml-request-*"))
    assert request_dirs, "uploads did not go through BentoML's request folders"
    deadline = time.monotonic() + 10  # removed once each response has been sent
    while [p for d in request_dirs for p in d.rglob("*")] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert [p for d in request_dirs for p in d.rglob("*")] == []


def test_health_reports_the_vqa_model(server: Server) -> None:
    health = httpx.get(f"{server.url}/health", timeout=30).json()
    assert health["vqa_model_loaded"] is True and health["clip_model_loaded"] is True
    assert health["vqa_quantization"] == "none" and health["device"] == "cpu"
    assert health["gpu_memory_allocated_gb"] is None
    assert set(health["vqa_caches"]) == {"vision", "prefix"}
    assert health["vqa_caches"]["vision"]["limit_bytes"] == 256 * 1024 * 1024  # VQA_VISION_CACHE_MB's default


def cache_counts(server: Server) -> dict[tuple[str, str], float]:
    """mms_vqa_cache_total by (cache, outcome), as /metrics shows it (recorded in the VQA runner's process)."""
    text = httpx.get(f"{server.url}/metrics", timeout=30).text
    found = re.findall(r'^mms_vqa_cache_total\{cache="(\w+)",outcome="(\w+)"\} ([0-9.e+]+)$', text, re.MULTILINE)
    return {(cache, outcome): float(value) for cache, outcome, value in found}


def test_follow_up_questions_hit_the_caches_in_health_and_metrics(server: Server) -> None:
    red, blue = (png(draw_shape("circle", color, size=96, seed=SEED + 40 + i)) for i, color in
                 enumerate(("red", "blue")))
    before = httpx.get(f"{server.url}/health", timeout=30).json()["vqa_caches"]
    counts = cache_counts(server)
    # The same photo asked again, and a same-size photo of another colour between: each gets its own answer.
    answers = [ask(server, COLOR_Q, image=image).json()["answer"] for image in (red, blue, red, blue)]
    assert answers == ["red", "blue", "red", "blue"]
    after = httpx.get(f"{server.url}/health", timeout=30).json()["vqa_caches"]
    assert after["prefix"]["hits"] - before["prefix"]["hits"] == 2, (before, after)
    assert after["vision"]["misses"] - before["vision"]["misses"] == 2, (before, after)  # each photo encoded once
    for name in ("vision", "prefix"):
        assert 0 < after[name]["bytes"] <= after[name]["limit_bytes"]
    now = cache_counts(server)
    assert now[("prefix", "hit")] - counts.get(("prefix", "hit"), 0.0) == 2
    assert now[("vision", "miss")] - counts.get(("vision", "miss"), 0.0) == 2


def data_url(image: Image.Image) -> str:
    return "data:image/png;base64," + base64.b64encode(png(image)).decode()


def test_openai_client_plain_stream_and_models(server: Server) -> None:
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused")
    models = client.models.list()
    model = models.data[0].id
    content = [{"type": "image_url", "image_url": {"url": data_url(draw_shape("circle", "blue", seed=SEED + 5))}},
               {"type": "text", "text": COLOR_Q}]
    messages: Any = [{"role": "user", "content": content}]
    reply = client.chat.completions.create(model=model, messages=messages, max_tokens=16, temperature=0)
    assert reply.choices[0].message.content == "blue" and reply.choices[0].finish_reason == "stop"
    assert reply.usage is not None and reply.usage.prompt_tokens > 4 and reply.usage.completion_tokens >= 1
    stream: Any = client.chat.completions.create(model=model, messages=messages, stream=True)
    pieces = [c.choices[0].delta.content or "" for c in stream if c.choices]
    assert "".join(pieces) == "blue"


def test_openai_multi_turn_and_several_images(server: Server) -> None:
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused")
    first = [{"type": "image_url", "image_url": {"url": data_url(draw_shape("square", "red", seed=SEED + 6))}},
             {"type": "text", "text": COLOR_Q}]
    history: Any = [{"role": "user", "content": first}, {"role": "assistant", "content": "red"},
               {"role": "user", "content": "图形是什么颜色？"}]
    reply = client.chat.completions.create(model="any", messages=history)
    assert reply.choices[0].message.content
    two: Any = [{"type": "image_url", "image_url": {"url": data_url(draw_shape("circle", c, seed=SEED + 7))}}
           for c in ("green", "green")] + [{"type": "text", "text": COLOR_Q}]
    several: Any = [{"role": "user", "content": two}]
    assert client.chat.completions.create(model="any", messages=several).choices


@pytest.mark.parametrize("messages", [
    [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
                                  {"type": "text", "text": "hi"}]}],
    [{"role": "robot", "content": "hi"}],
    {"stream": "false"},
    [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}],
    [{"role": "user", "content": [{"type": "image_url",
                                   "image_url": {"url": data_url(Image.new("RGB", (8, 8)))}}] * 9}],
])
def test_openai_bad_requests_are_400(server: Server, messages: Any) -> None:
    if isinstance(messages, dict):  # a bad top-level field on a good message
        body = {"model": "any", "messages": [{"role": "user", "content": "hi"}], **messages}
        response = httpx.post(f"{server.url}/v1/chat/completions", json=body, timeout=30)
        assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_request"
        return
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="any", messages=messages)
