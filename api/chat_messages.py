"""OpenAI-compatible vision chat: check a /v1/chat/completions body and turn it into the ChatRequest fields
(api/chat_completions.py turns answers into OpenAI's response and stream-chunk shapes)."""

from __future__ import annotations

import base64
import binascii
from typing import Any

from api.errors import ApiError, bad_request
from core.images import BadImage, load_image

ROLES = ("system", "user", "assistant")


def invalid(message: str) -> ApiError:
    """The body is not a valid chat request; the message says why."""
    return bad_request(message, code="invalid_request")


def parse_chat(body: Any, max_images: int, max_tokens_cap: int, max_text_chars: int) -> dict[str, Any]:
    """Validate an OpenAI chat body. Returns the ChatRequest fields and `stream`. The text of all
    messages together is at most `max_text_chars` (VQA_MAX_TEXT_CHARS)."""
    if not isinstance(body, dict):
        raise invalid("the body must be a JSON object")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise invalid("messages must be a non-empty list")
    check_text_size(messages, max_text_chars)
    converted = [convert_message(m, i) for i, m in enumerate(messages)]
    images = sum(1 for m in converted for p in parts(m) if p.get("type") == "image")
    if images > max_images:
        raise invalid(f"too many images: {images} (at most {max_images} per request)")
    if converted[-1]["role"] == "assistant":
        raise invalid("the last message must not be the assistant's")
    return {"messages": converted, "max_new_tokens": max_tokens(body, max_tokens_cap),
            "temperature": number(body, "temperature", 0.0, 0.0, 2.0), "top_p": optional_top_p(body),
            "stream": flag(body, "stream")}


def check_text_size(messages: list[Any], max_chars: int) -> None:
    """400 when the messages' text (string contents and text parts) is over `max_chars` in all, checked
    before any image is decoded: the runner's work grows with the prompt and cannot stop inside it."""
    total = 0
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            total += len(content)
        elif isinstance(content, list):
            total += sum(len(p["text"]) for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    if total > max_chars:
        raise invalid(f"the messages hold {total} characters of text, over the limit of {max_chars} "
                      "(VQA_MAX_TEXT_CHARS)")


def parts(message: dict[str, Any]) -> list[dict[str, Any]]:
    content = message["content"]
    return content if isinstance(content, list) else []


def convert_message(message: Any, index: int) -> dict[str, Any]:
    if not isinstance(message, dict):
        raise invalid(f"messages[{index}] must be an object")
    role = message.get("role")
    if role not in ROLES:
        raise invalid(f"messages[{index}].role must be one of {', '.join(ROLES)}")
    content = message.get("content")
    if isinstance(content, str):
        return {"role": role, "content": content}
    if not isinstance(content, list) or not content:
        raise invalid(f"messages[{index}].content must be a string or a non-empty list of parts")
    return {"role": role, "content": [convert_part(p, index, role) for p in content]}


def convert_part(part: Any, index: int, role: str) -> dict[str, Any]:
    kind = part.get("type") if isinstance(part, dict) else None
    if kind == "text" and isinstance(part.get("text"), str):
        return {"type": "text", "text": part["text"]}
    if kind == "image_url":
        if role != "user":
            raise invalid(f"messages[{index}]: only user messages may hold images")
        url = part.get("image_url")
        url = url.get("url") if isinstance(url, dict) else url
        return {"type": "image", "image": data_url_image(url, index)}
    raise invalid(f"messages[{index}].content: parts must be {{type: text, text}} or {{type: image_url}}")


def data_url_image(url: Any, index: int) -> bytes:
    if not isinstance(url, str) or not url.startswith("data:"):
        raise invalid(f"messages[{index}]: image_url must be a data: URL with base64 image bytes "
                         "(the server fetches nothing from the network)")
    header, _, payload = url.partition(",")
    if ";base64" not in header:
        raise invalid(f"messages[{index}]: image data URLs must be base64-encoded")
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise invalid(f"messages[{index}]: image data URL is not valid base64") from exc
    try:
        load_image(data)
    except BadImage as exc:
        raise invalid(f"messages[{index}]: {exc}") from exc
    return data


def flag(body: dict[str, Any], key: str) -> bool:
    value = body.get(key, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise invalid(f"{key} must be true or false")
    return value


def max_tokens(body: dict[str, Any], cap: int) -> int | None:
    value = body.get("max_completion_tokens", body.get("max_tokens"))
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= cap:
        raise invalid(f"max_tokens must be an integer from 1 to {cap}")
    return value


def number(body: dict[str, Any], key: str, default: float, low: float, high: float) -> float:
    value = body.get(key)
    if value is None:
        return default
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not low <= value <= high:
        raise invalid(f"{key} must be a number from {low} to {high}")
    return float(value)


def optional_top_p(body: dict[str, Any]) -> float | None:
    if body.get("top_p") is None:
        return None
    value = number(body, "top_p", 1.0, 0.0, 1.0)
    if value == 0:
        raise invalid("top_p must be above 0")
    return value


def models(*ids: str) -> dict[str, Any]:
    return {"object": "list", "data": [{"id": model, "object": "model", "created": 0, "owned_by": "local"}
                                       for model in ids]}
