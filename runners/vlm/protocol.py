"""The VQA runner's wire types: what the API service sends the runner and gets back (no BentoML, no settings).

The API (api/vqa_requests.py, api/asking.py) builds ChatRequests; the runner (runners/vlm/service.py) answers
ChatResults. Images and videos travel as their encoded bytes, decoded only in the runner.
"""

from __future__ import annotations

import uuid
from typing import Any

from pydantic import BaseModel, Field


class ChatRequest(BaseModel):
    """One conversation to continue. Messages are Qwen-format: {"role", "content": str | [parts]} where a
    part is {"type": "text", "text"}, {"type": "image", "image": <encoded bytes>} or
    {"type": "video", "video": <encoded bytes>, "suffix": ".mp4"}. `deadline` (a time.time() value) is
    when the caller stops waiting: generation for it stops then."""

    messages: list[dict[str, Any]]
    max_new_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    deadline: float | None = None
    request_id: str = Field(default_factory=lambda: uuid.uuid4().hex)  # names a stream to cancel()


class ChatResult(BaseModel):
    """One answer, or (`error` set: {"status", "code", "message"}) why this request alone got none."""

    text: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = ""
    error: dict[str, Any] | None = None
