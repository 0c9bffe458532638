"""The API's error shape, asserted."""

from __future__ import annotations

import httpx


def shape(response: httpx.Response, status: int, code: str) -> None:
    """`response` is `status` with {"status": "error", "error": {"code": code, "message": ...}}."""
    assert response.status_code == status
    body = response.json()
    assert body["status"] == "error" and body["error"]["code"] == code and body["error"]["message"]
