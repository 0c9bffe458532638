"""api/chat_messages.py without a server: a /v1/chat/completions body turned into the VQA runner's chat fields,
and the message a user sees (400 invalid_request) for each way a body can be wrong."""

from __future__ import annotations

import base64
import io
from typing import Any

import pytest
from PIL import Image

from api.chat_messages import parse_chat
from api.errors import ApiError

MAX_IMAGES = 2  # VQA_MAX_IMAGES, small here
CAP = 512  # VQA_MAX_NEW_TOKENS_CAP
MAX_TEXT = 16_000  # VQA_MAX_TEXT_CHARS


def png_bytes(size: int = 8) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), (200, 30, 30)).save(buf, format="PNG")
    return buf.getvalue()


PNG = png_bytes()
DATA_URL = "data:image/png;base64," + base64.b64encode(PNG).decode()


def image_part(url: Any = DATA_URL, nested: bool = True) -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": url} if nested else url}


def user(*content: Any) -> dict[str, Any]:
    """A user message: one string is its text; anything else is its list of parts."""
    if len(content) == 1 and isinstance(content[0], str):
        return {"role": "user", "content": content[0]}
    return {"role": "user", "content": list(content)}


def chat(*messages: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"model": "any", "messages": list(messages) or [user("hi")], **fields}


def parse(body: Any) -> dict[str, Any]:
    return parse_chat(body, MAX_IMAGES, CAP, MAX_TEXT)


def refusal(body: Any) -> str:
    """The message of the 400 that `body` gets."""
    with pytest.raises(ApiError) as raised:
        parse(body)
    assert (raised.value.status, raised.value.code) == (400, "invalid_request")
    return raised.value.message


# ---------------------------------------------------------------- what is accepted

def test_a_plain_question_gets_the_defaults() -> None:
    assert parse(chat()) == {"messages": [{"role": "user", "content": "hi"}], "max_new_tokens": None,
                             "temperature": 0.0, "top_p": None, "stream": False}


def test_roles_text_parts_and_images_are_converted() -> None:
    body = chat({"role": "system", "content": "be brief"},
                user({"type": "text", "text": "what colour?"}, image_part()),
                {"role": "assistant", "content": [{"type": "text", "text": "red"}]},
                user(image_part(nested=False), {"type": "text", "text": "and this one?"}))
    assert parse(body)["messages"] == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "what colour?"}, {"type": "image", "image": PNG}]},
        {"role": "assistant", "content": [{"type": "text", "text": "red"}]},
        {"role": "user", "content": [{"type": "image", "image": PNG}, {"type": "text", "text": "and this one?"}]},
    ]


@pytest.mark.parametrize(("fields", "expected"), [
    ({"max_tokens": 1}, {"max_new_tokens": 1}),
    ({"max_tokens": CAP}, {"max_new_tokens": CAP}),
    ({"max_completion_tokens": 7, "max_tokens": 9}, {"max_new_tokens": 7}),  # the newer name wins
    ({"max_tokens": None}, {"max_new_tokens": None}),
    ({"temperature": 0}, {"temperature": 0.0}),
    ({"temperature": 2}, {"temperature": 2.0}),
    ({"temperature": 0.7, "top_p": 0.9}, {"temperature": 0.7, "top_p": 0.9}),
    ({"top_p": 1}, {"top_p": 1.0}),
    ({"top_p": None, "temperature": None}, {"top_p": None, "temperature": 0.0}),
    ({"stream": True}, {"stream": True}),
    ({"stream": None}, {"stream": False}),
    ({"n": 3, "user": "someone", "seed": 1}, {}),  # fields the server does not use are ignored
])
def test_sampling_fields(fields: dict[str, Any], expected: dict[str, Any]) -> None:
    parsed = parse(chat(**fields))
    assert {key: parsed[key] for key in expected} == expected
    assert isinstance(parsed["temperature"], float)


def test_as_many_images_as_allowed_over_several_messages() -> None:
    body = chat(user(image_part(), {"type": "text", "text": "a"}), {"role": "assistant", "content": "ok"},
                user(image_part(), {"type": "text", "text": "b"}))
    assert len(parse(body)["messages"]) == 3


# ---------------------------------------------------------------- what is refused, and the message

HTTPS_IMAGE = "messages[0]: image_url must be a data: URL with base64 image bytes " \
              "(the server fetches nothing from the network)"
PARTS = "messages[0].content: parts must be {type: text, text} or {type: image_url}"
CONTENT = "messages[0].content must be a string or a non-empty list of parts"

BAD_BODIES: dict[str, tuple[Any, str]] = {
    "not an object": ([{"role": "user", "content": "hi"}], "the body must be a JSON object"),
    "a string": ("hi", "the body must be a JSON object"),
    "null": (None, "the body must be a JSON object"),
    "no messages": ({"model": "any"}, "messages must be a non-empty list"),
    "empty messages": ({"messages": []}, "messages must be a non-empty list"),
    "messages not a list": ({"messages": "hi"}, "messages must be a non-empty list"),
    "message not an object": ({"messages": ["hi"]}, "messages[0] must be an object"),
    "unknown role": (chat({"role": "robot", "content": "hi"}),
                     "messages[0].role must be one of system, user, assistant"),
    "tool role": (chat({"role": "tool", "content": "hi"}), "messages[0].role must be one of system, user, assistant"),
    "no role": (chat({"content": "hi"}), "messages[0].role must be one of system, user, assistant"),
    "role of the second": (chat(user("hi"), {"role": "bot", "content": "x"}),
                           "messages[1].role must be one of system, user, assistant"),
    "empty parts": (chat(user()), CONTENT),
    "number content": (chat({"role": "user", "content": 5}), CONTENT),
    "no content": (chat({"role": "user"}), CONTENT),
    "unknown part": (chat(user({"type": "audio", "audio": "x"})), PARTS),
    "text part without text": (chat(user({"type": "text"})), PARTS),
    "part not an object": (chat(user("hi", "there")), PARTS),
    "https image": (chat(user(image_part("https://example.com/a.png"))), HTTPS_IMAGE),
    "image without url": (chat(user({"type": "image_url"})), HTTPS_IMAGE),
    "data URL not base64": (chat(user(image_part("data:image/png,abc"))),
                            "messages[0]: image data URLs must be base64-encoded"),
    "bad base64": (chat(user(image_part("data:image/png;base64,@@@"))),
                   "messages[0]: image data URL is not valid base64"),
    "not an image": (chat(user(image_part("data:image/png;base64,AAAA"))),
                     "messages[0]: not a readable image: unknown image format"),
    "empty image": (chat(user(image_part("data:image/png;base64,"))), "messages[0]: empty file"),
    "image from the assistant": (chat(user("hi"), {"role": "assistant", "content": [image_part()]}),
                                 "messages[1]: only user messages may hold images"),
    "image from the system": (chat({"role": "system", "content": [image_part()]}, user("hi")),
                              "messages[0]: only user messages may hold images"),
    "too many images": (chat(user(image_part(), image_part(), image_part())),
                        "too many images: 3 (at most 2 per request)"),
    "too many over messages": (chat(user(image_part(), image_part()), {"role": "assistant", "content": "ok"},
                                    user(image_part())), "too many images: 3 (at most 2 per request)"),
    "assistant last": (chat(user("hi"), {"role": "assistant", "content": "red"}),
                       "the last message must not be the assistant's"),
    "max_tokens 0": (chat(max_tokens=0), f"max_tokens must be an integer from 1 to {CAP}"),
    "max_tokens over the cap": (chat(max_tokens=CAP + 1), f"max_tokens must be an integer from 1 to {CAP}"),
    "max_completion_tokens over the cap": (chat(max_completion_tokens=10_000),
                                           f"max_tokens must be an integer from 1 to {CAP}"),
    "max_tokens float": (chat(max_tokens=8.0), f"max_tokens must be an integer from 1 to {CAP}"),
    "max_tokens bool": (chat(max_tokens=True), f"max_tokens must be an integer from 1 to {CAP}"),
    "max_tokens text": (chat(max_tokens="8"), f"max_tokens must be an integer from 1 to {CAP}"),
    "temperature below 0": (chat(temperature=-0.1), "temperature must be a number from 0.0 to 2.0"),
    "temperature above 2": (chat(temperature=2.01), "temperature must be a number from 0.0 to 2.0"),
    "temperature text": (chat(temperature="0.5"), "temperature must be a number from 0.0 to 2.0"),
    "temperature bool": (chat(temperature=False), "temperature must be a number from 0.0 to 2.0"),
    "top_p above 1": (chat(top_p=1.5), "top_p must be a number from 0.0 to 1.0"),
    "top_p below 0": (chat(top_p=-0.5), "top_p must be a number from 0.0 to 1.0"),
    "top_p 0": (chat(top_p=0), "top_p must be above 0"),
    "stream text": (chat(stream="false"), "stream must be true or false"),
    "stream number": (chat(stream=1), "stream must be true or false"),
}


@pytest.mark.parametrize("case", list(BAD_BODIES))
def test_bad_bodies_are_refused_with_a_message(case: str) -> None:
    body, says = BAD_BODIES[case]
    assert refusal(body) == says


def test_a_bad_message_is_named_before_the_count_of_images() -> None:
    """Each message is checked in order, so the first bad one is what the user is told about."""
    body = chat(user(image_part(), image_part(), image_part()), {"role": "robot", "content": "x"})
    assert refusal(body) == "messages[1].role must be one of system, user, assistant"
