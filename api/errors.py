"""One error type and one renderer for every refusal: HTTP status +
{"status": "error", "error": {"code", "message"}}.

Endpoints (BentoML API methods and Starlette routes alike) only raise ApiError; `handles_errors`
turns it into the response. The middlewares render their own refusals with the same `response()`.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from starlette.responses import JSONResponse

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])

# The one code of each HTTP status, where a refusal's code is not more specific (an ApiError names its own;
# these name the statuses that BentoML, Starlette and uvicorn answer by themselves). 408 is
# "request_timeout" (what the receipt deadline has always sent), 504 "timeout" (the limits' deadline).
CODES = {400: "invalid_argument", 401: "unauthorized", 403: "permission_denied", 404: "not_found",
         405: "method_not_allowed", 408: "request_timeout", 409: "conflict", 413: "payload_too_large",
         415: "unsupported_media_type", 422: "invalid_argument", 429: "too_many_requests",
         503: "unavailable", 504: "timeout"}


class ApiError(Exception):
    """Raised by request handling; becomes an error response with this status, code and message."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}

    def response(self) -> JSONResponse:
        """The one place an error becomes a response."""
        body = {"status": "error", "error": {"code": self.code, "message": self.message}}
        return JSONResponse(body, status_code=self.status, headers=self.headers)


def bad_request(message: str, code: str = "invalid_argument") -> ApiError:
    return ApiError(400, code, message)


def not_found(message: str) -> ApiError:
    return ApiError(404, "not_found", message)


def unavailable(code: str, message: str, retry_after_s: int) -> ApiError:
    """A 503 worth retrying: the client is told when."""
    return ApiError(503, code, message, {"Retry-After": str(retry_after_s)})


def handles_errors(func: F) -> F:
    """Turn an ApiError raised by an async endpoint (a BentoML API method or a Starlette route) into its
    error response (BentoML would wrap a raised 4xx in a list and hide a 5xx's message)."""

    @functools.wraps(func)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return await func(*args, **kwargs)
        except ApiError as exc:
            return exc.response()

    return wrapper  # type: ignore[return-value]
