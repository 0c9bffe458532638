"""One error shape for every failure: HTTP status + {"status": "error", "error": {"code", "message"}}."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from starlette.responses import JSONResponse

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


class ApiError(Exception):
    """Raised by request handling; becomes an error response with this status, code and message."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


def bad_request(message: str, code: str = "invalid_argument") -> ApiError:
    return ApiError(400, code, message)


def not_found(message: str) -> ApiError:
    return ApiError(404, "not_found", message)


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    body = {"status": "error", "error": {"code": code, "message": message}}
    return JSONResponse(body, status_code=status, headers=headers)


def returns_errors(func: F) -> F:
    """Turn an ApiError raised by an async API method into its error response (BentoML would wrap a
    raised 4xx in a list and hide a 5xx's message)."""

    @functools.wraps(func)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return await func(*args, **kwargs)
        except ApiError as exc:
            return error_response(exc.status, exc.code, exc.message, exc.headers)

    return wrapper  # type: ignore[return-value]
