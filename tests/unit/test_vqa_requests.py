"""api/vqa_requests.py without a server: request building, admission and the chat glue, with a fake
VQA runner and a tmp library."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from starlette.requests import Request

from api.errors import ApiError
from api.vqa_requests import VqaRequests, video_suffix
from config import Settings
from core.library import Library

MP4 = b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 16
WEBM = b"\x1a\x45\xdf\xa3" + b"\x00" * 16


class FakeVqa:
    """The VQA runner's client: answers "red", streams its header line, "re" + "d"; `gate` holds a
    stream open."""

    def __init__(self) -> None:
        self.to_async = self
        self.requests: list[Any] = []
        self.gate = asyncio.Event()

    async def generate(self, requests: list[Any]) -> list[dict[str, Any]]:
        self.requests += requests
        return [{"text": "red", "prompt_tokens": 5, "completion_tokens": 1, "finish_reason": "stop"}
                for _ in requests]

    async def stream(self, request: Any) -> AsyncIterator[str]:
        self.requests.append(request)
        yield '{"error": null}\n'
        yield "re"
        await self.gate.wait()
        yield "d"


def png_bytes() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), (255, 0, 0)).save(out, format="PNG")
    return out.getvalue()


@pytest.fixture
def library(tmp_path: Path) -> Library:
    root = tmp_path / "photos"
    (root / "album").mkdir(parents=True)
    (root / "album" / "red.png").write_bytes(png_bytes())
    (root / ".secret.png").write_bytes(png_bytes())
    (root / "link_hidden.png").symlink_to(root / ".secret.png")
    (root / "notes.txt").write_text("not an image")
    (root / "broken.png").write_bytes(b"not a png")
    (tmp_path / "outside.png").write_bytes(png_bytes())
    (root / "link_out.png").symlink_to(tmp_path / "outside.png")
    return Library(root)


def vqa(library: Library, **settings: Any) -> tuple[VqaRequests, FakeVqa]:
    runner = FakeVqa()
    return VqaRequests(runner, library, Settings(_env_file=None, max_query_chars=20, **settings)), runner  # type: ignore[call-arg]


def refusal(call: Any) -> ApiError:
    with pytest.raises(ApiError) as caught:
        call()
    return caught.value


def upload(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "tmpabcdefghupload"
    path.write_bytes(data)
    return path


def test_build_an_image_a_library_image_and_a_video(library: Library, tmp_path: Path) -> None:
    requests, _ = vqa(library)
    built = requests.build(" what colour? ", upload(tmp_path, png_bytes()), None, None, 7)
    assert built.max_new_tokens == 7
    assert built.messages == [{"role": "user", "content": [{"type": "image", "image": png_bytes()},
                                                           {"type": "text", "text": "what colour?"}]}]
    from_library = requests.build("q", None, None, "./album/red.png", None)
    assert from_library.messages[0]["content"][0] == {"type": "image", "image": png_bytes()}
    video = requests.build("q", None, upload(tmp_path, MP4), None, None)
    assert video.messages[0]["content"][0] == {"type": "video", "video": MP4, "suffix": ".mp4"}
    assert (video_suffix(MP4), video_suffix(WEBM), video_suffix(b"GIF89a")) == (".mp4", ".webm", None)


def test_bad_input_is_400(library: Library, tmp_path: Path) -> None:
    requests, _ = vqa(library)
    image = upload(tmp_path, png_bytes())
    cases = {
        "question is empty": ("  ", image, None, None),
        "longer than 20": ("x" * 21, image, None, None),
        "exactly one of": ("q", None, None, None),
        "exactly one of image": ("q", image, None, "album/red.png"),
        "image:": ("q", upload(tmp_path, b"junk"), None, None),
        "not an mp4 or webm": ("q", None, upload(tmp_path, b"junk video"), None),
    }
    for expected, (question, image_file, video, image_id) in cases.items():
        error = refusal(lambda q=question, i=image_file, v=video, d=image_id: requests.build(q, i, v, d, None))
        assert (error.status, error.code) == (400, "invalid_argument") and expected in error.message, expected
    # a library file that is not a readable image answers as a missing one (issue 16: no probing)
    broken = refusal(lambda: requests.build("q", None, None, "broken.png", None))
    assert (broken.status, broken.message) == (404, "image_id 'broken.png' is not in the image library")


@pytest.mark.parametrize("image_id", ["missing.png", ".secret.png", "link_hidden.png", "link_out.png", "notes.txt",
                                      "../outside.png", "/etc/passwd", "album/red.png\0.txt", "album"])
def test_an_image_id_the_library_refuses_is_404_like_a_missing_one(library: Library, image_id: str) -> None:
    requests, runner = vqa(library)
    error = refusal(lambda: requests.build("q", None, None, image_id, None))
    assert (error.status, error.code, error.message) == (404, "not_found",
                                                         f"image_id {image_id!r} is not in the image library")
    assert runner.requests == []


def test_vqa_disabled_is_503(library: Library, tmp_path: Path) -> None:
    requests, _ = vqa(library, vqa_enabled=False)
    error = refusal(lambda: requests.build("q", upload(tmp_path, png_bytes()), None, None, None))
    assert (error.status, error.code) == (503, "vqa_disabled")


def test_admission_answers_503_vqa_busy_at_capacity(library: Library, tmp_path: Path) -> None:
    requests, runner = vqa(library, vqa_max_queue=1, retry_after_s=3)
    request = requests.build("q", upload(tmp_path, png_bytes()), None, None, None)

    async def scenario() -> None:
        stream = await requests.stream(request)  # takes the one slot now, holds it until the stream ends
        assert await anext(stream) == "re"
        with pytest.raises(ApiError) as caught:
            await requests.generate(request, "/vqa")
        assert (caught.value.status, caught.value.code, caught.value.headers) == (503, "vqa_busy",
                                                                                  {"Retry-After": "3"})
        with pytest.raises(ApiError):
            await requests.stream(request)
        runner.gate.set()
        assert [piece async for piece in stream] == ["d"]
        assert requests.in_flight == 0  # the stream's end gave its slot back
        assert (await requests.generate(request, "/vqa"))["text"] == "red"

    asyncio.run(scenario())


def chat_request(body: bytes) -> Request:
    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions", "headers": [], "query_string": b""}
    return Request(scope, receive)


def chat(requests: VqaRequests, body: Any) -> Any:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return asyncio.run(requests.chat_completion(chat_request(raw)))


def test_chat_completion_and_its_refusals(library: Library) -> None:
    requests, runner = vqa(library)
    answer = json.loads(chat(requests, {"messages": [{"role": "user", "content": "hi"}]}).body)
    assert answer["choices"][0]["message"]["content"] == "red" and answer["usage"]["total_tokens"] == 6
    assert runner.requests[0].messages == [{"role": "user", "content": "hi"}]
    for body, code in [(b"{not json", "invalid_json"), (b"\xff\xfe", "invalid_json"),
                       ({"messages": []}, "invalid_request"),
                       ({"messages": [{"role": "robot", "content": "hi"}]}, "invalid_request")]:
        error = refusal(lambda body=body: chat(requests, body))
        assert (error.status, error.code) == (400, code)
    disabled, _ = vqa(library, vqa_enabled=False)
    error = refusal(lambda: chat(disabled, {"messages": [{"role": "user", "content": "hi"}]}))
    assert (error.status, error.code) == (503, "vqa_disabled")


def test_chat_stream_sends_openai_events(library: Library) -> None:
    requests, runner = vqa(library)
    runner.gate.set()

    async def events() -> list[str]:
        response = await requests.chat_completion(chat_request(json.dumps(
            {"messages": [{"role": "user", "content": "hi"}], "stream": True}).encode()))
        return [event async for event in response.body_iterator]  # type: ignore[attr-defined]

    sent = asyncio.run(events())
    assert sent[-1] == "data: [DONE]\n\n"
    deltas = [json.loads(event.removeprefix("data: "))["choices"][0]["delta"] for event in sent[:-1]]
    assert deltas == [{"role": "assistant", "content": ""}, {"content": "re"}, {"content": "d"}, {}]
    assert requests.in_flight == 0


def test_uploads_are_read_and_decoded_off_the_event_loop(library: Library, tmp_path: Path) -> None:
    """prepare() runs build() (read the upload, decode it to validate) on a worker thread."""
    import threading

    requests, _ = vqa(library)
    seen: list[str] = []
    build = requests.build

    def spy(*args: Any) -> Any:
        seen.append(threading.current_thread().name)
        return build(*args)

    requests.build = spy  # type: ignore[method-assign,assignment]

    async def run() -> tuple[Any, str]:
        built = await requests.prepare("q", upload(tmp_path, png_bytes()), None, None, None)
        return built, threading.current_thread().name

    built, loop_thread = asyncio.run(run())
    assert built.messages[0]["content"][1] == {"type": "text", "text": "q"}
    assert seen and all(name != loop_thread for name in seen)
