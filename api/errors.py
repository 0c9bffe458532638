"""One error type and one renderer for every refusal: HTTP status +
{"status": "error", "error": {"code", "message"}}.

Endpoints (BentoML API methods and Starlette routes alike) only raise ApiError; `handles_errors`
turns it into the response. The middlewares render their own refusals with the same `response()`.

ERROR_CODES is the registry of every code the service answers, with its status and when: docs/api.md's table
is generated from it (scripts/errors_doc.py) and tests/unit/test_error_codes.py finds every code the source
passes to ApiError and its helpers in it.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
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


@dataclass(frozen=True)
class ErrorCode:
    """One code the service answers: its HTTP status ("4xx" where the status is the framework's own) and when,
    for docs/api.md."""

    status: str
    code: str
    when: str


INTERNAL = "`/internal/store` (the indexer's write path while the service holds the embedded store): "
ERROR_CODES: tuple[ErrorCode, ...] = (
    ErrorCode("400", "invalid_argument", "a missing or invalid field, a blank query or question, an unreadable "
              "upload, a text value sent in a file field (`image`, `video`: the server fetches no URLs), a form "
              "field that is not UTF-8, an upload file name over 244 bytes"),
    ErrorCode("400", "invalid_json", "a JSON body that does not parse (invalid UTF-8 included), or a JSON body or "
              "form value that nests arrays/objects over 200 deep"),
    ErrorCode("400", "invalid_multipart", "a multipart body without a boundary or that does not parse, a text "
              "field over 1 MB, over 1000 fields or files"),
    ErrorCode("400", "invalid_request", "`/v1/chat/completions`: not a valid chat request"),
    ErrorCode("400", "invalid_framing", "a request with both `Content-Length` and `Transfer-Encoding` (the "
              "connection is closed)"),
    ErrorCode("400", "host_not_allowed", "a `Host` header not in `ALLOWED_HOSTS` ([security.md](security.md))"),
    ErrorCode("400", "response_too_large", "a search whose results as base64 (`include_image: true`) would pass "
              "`SEARCH_MAX_RESPONSE_MB`"),
    ErrorCode("4xx", "bad_request", "another 4xx that BentoML or Starlette answers by itself (the status is "
              "theirs)"),
    ErrorCode("401", "unauthorized", "`API_KEY` is set and the request lacks `Authorization: Bearer <key>`"),
    ErrorCode("403", "permission_denied", INTERNAL + "the indexer's token is missing or wrong"),
    ErrorCode("404", "not_found", "an unknown route; an `image_id` or `/images/` path that is not a library file "
              "(missing, outside, hidden or not an image: one answer for all); an `image_id` not in the index"),
    ErrorCode("404", "collection_missing", INTERNAL + "the collection does not exist"),
    ErrorCode("405", "method_not_allowed", "a wrong method (the `Allow` header lists the right ones)"),
    ErrorCode("408", "request_timeout", "the request's headers did not arrive within `REQUEST_HEADER_TIMEOUT_S`, "
              "or its body within `REQUEST_BODY_TIMEOUT_S` (the connection is closed)"),
    ErrorCode("409", "model_mismatch", "the index was built with another CLIP model"),
    ErrorCode("409", "no_descriptions", 'a search in `mode` `"text"` while no photo has a description or read text '
              "yet (`python -m indexer --ocr` or `--describe`)"),
    ErrorCode("409", "conflict", "a 409 that BentoML or Starlette answers by itself"),
    ErrorCode("413", "payload_too_large", "a body over `MAX_UPLOAD_MB`"),
    ErrorCode("415", "unsupported_media_type", "an API call whose Content-Type is not `application/json`, "
              "`multipart/form-data` or `application/x-www-form-urlencoded`"),
    ErrorCode("416", "range_not_satisfiable", "a `Range` on `/images/` outside the file"),
    ErrorCode("422", "invalid_argument", "a body BentoML refuses as unprocessable by itself (field errors are 400)"),
    ErrorCode("423", "store_locked", INTERNAL + "the embedded store is locked by another process"),
    ErrorCode("429", "too_many_requests", "`MAX_CONCURRENCY` requests already in flight (`Retry-After`)"),
    ErrorCode("500", "internal_error", "an unexpected error (the server log has the details); for VQA, the model "
              "failing on this one request"),
    ErrorCode("500", "store_error", INTERNAL + "any other store error (its message says which)"),
    ErrorCode("503", "vqa_disabled", "a VQA endpoint while `VQA_ENABLED=false`"),
    ErrorCode("503", "vqa_busy", "`VQA_MAX_QUEUE` VQA requests already in flight (`Retry-After`)"),
    ErrorCode("503", "runner_unavailable", "a model runner died or restarts mid-request (`Retry-After`)"),
    ErrorCode("503", "store_unavailable", "the vector store cannot answer, e.g. the indexer holds the embedded "
              "store (`Retry-After`)"),
    ErrorCode("503", "store_damaged", "the vector store's files are damaged: searches are refused until "
              "`python -m indexer --verify` and a repair ([backup-and-migration.md](backup-and-migration.md)); "
              "also " + INTERNAL.rstrip(": ")),
    ErrorCode("503", "unavailable", "a 503 that BentoML answers by itself (`Retry-After` where it sends one)"),
    ErrorCode("504", "timeout", "no response started within `REQUEST_TIMEOUT_S`; a VQA answer not complete before "
              "the request's deadline"),
    ErrorCode("507", "insufficient_storage", "the vector store's disk is full while a call had to write: nothing "
              "was written"),
    ErrorCode("507", "store_full", INTERNAL + "the store's disk is full"),
)


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
