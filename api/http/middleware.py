"""One error shape for every failure, a valid OpenAPI document and the security headers, for the API service.

`SecurityHeaders` is the outermost of the middlewares registered in service.py: it adds
`X-Content-Type-Options: nosniff` to every response (and the web page's Content-Security-Policy to
everything under /ui), whichever layer inside it answered.

`ApiContractMiddleware` is registered on the service (end of service.py) and sits inside BentoML's
own middlewares. For every HTTP request except /readyz, /livez, /healthz and /metrics it:

- answers GET /docs.json with `api.http.openapi_doc.fix_spec` of BentoML's spec;
- refuses, on the service's API routes, a Content-Type BentoML would misread (it parses anything
  unknown as JSON) with 415, and watches form bodies while BentoML reads them: a text value in a
  file field (which BentoML 1.4.40 would *download as a URL*, server-side), a text field that is
  not UTF-8, a text value nested deeper than MAX_JSON_DEPTH (BentoML json.loads every form value
  and would raise RecursionError), an upload whose file name BentoML cannot use for its temporary file,
  or a multipart body Starlette cannot parse (BentoML answers those 500), stops the request with a 400;
- rewrites error responses (status >= 400) that are not already
  `{"status": "error", "error": {"code", "message"}}`: only BentoML's and Starlette's own (its
  pydantic validation errors, its `[{"error": ...}]` lists and 5xx bodies, Starlette's plain-text
  404/405). The endpoints' refusals are ApiErrors, already shaped by `api.errors.handles_errors`, and
  pass through; this middleware's own refusals use the same `ApiError.response()`.

Responses under 400 (streams and server-sent events included) pass through untouched, unbuffered;
error responses are small and are held until complete.
"""

from __future__ import annotations

import json
import logging
from http import HTTPStatus
from typing import Any
from urllib.parse import unquote_plus, unquote_to_bytes

from bentoml.exceptions import InvalidArgument
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, QuerystringParser, parse_options_header
from starlette.datastructures import MutableHeaders
from starlette.responses import Response

from api.errors import CODES, ApiError
from api.http.asgi_types import METRICS_PATH, PROBES, App, Message, Receive, Scope, Send, StatusWatch
from api.http.json_body import TOO_DEEP, too_deep
from api.http.openapi_doc import fix_spec
from api.http.paths import UI_POLICY, is_ui_path
from core.bentoml_compat import MAX_FIELD_BYTES, MAX_PARTS, upload_name_problem  # form limits: see there

log = logging.getLogger("service")

JSON = "application/json"
FORMS = ("multipart/form-data", "application/x-www-form-urlencoded")
SUPPORTED = f"{JSON}, {FORMS[0]} or {FORMS[1]}"
UNTOUCHED = PROBES | {METRICS_PATH}
INTERNAL = "an unexpected error occurred; the server log has the details"


def is_shaped(body: Any) -> bool:
    error = body.get("error") if isinstance(body, dict) else None
    return isinstance(error, dict) and body.get("status") == "error" and {"code", "message"} <= set(error)


def validation_error(details: list[Any]) -> tuple[str, str]:
    """pydantic's error list (as BentoML sends it) -> (code, "field: what is wrong; ...")."""
    items = [d for d in details if isinstance(d, dict)]
    for item in items:
        if item.get("type") == "json_invalid":
            detail = str(item.get("msg")).removeprefix("Invalid JSON: ")
            if detail.startswith("recursion limit exceeded"):  # pydantic's bound, the same as MAX_JSON_DEPTH
                detail = TOO_DEEP
            return "invalid_json", f"the body is not valid JSON: {detail}"
    parts = [f"{'.'.join(str(p) for p in item.get('loc') or ['body'])}: {item.get('msg')}" for item in items]
    return "invalid_argument", "; ".join(parts) or "invalid input"


def error_fields(status: int, content_type: str, body: bytes, method: str, path: str, allow: str | None
             ) -> tuple[str, str] | None:
    """(code, message) for an error response, or None when it already has our shape."""
    data: Any = None
    if "json" in content_type:
        try:
            data = json.loads(body)
        except ValueError:
            pass
    if is_shaped(data):
        return None
    code = CODES.get(status, "internal_error" if status >= 500 else "bad_request")
    if isinstance(data, dict) and isinstance(data.get("detail"), list):  # pydantic ValidationError
        return validation_error(data["detail"])
    if isinstance(data, list) and data and isinstance(data[0], dict):  # a raised BentoMLException
        data = data[0]
    if status == 404 and body.strip() in (b"", b"Not Found"):
        return code, f"no such endpoint: {method} {path}"
    if status == 405:
        return code, f"{method} is not allowed on {path}" + (f"; use {allow}" if allow else "")
    if isinstance(data, dict):
        message = data.get("error") or data.get("detail") or data.get("message")
    else:
        message = body.decode("utf-8", "replace").strip()[:1000]
    return code, str(message or HTTPStatus(status).phrase)


class Refused(InvalidArgument):
    """Raised from `receive` to stop BentoML's form parsing before it acts on the body."""


class FormInspector:
    """Follows a form body as the app reads it. `problem` is (code, message) once the body holds
    what BentoML must not act on: a text value in a file field (BentoML would fetch it as a URL), a
    text field that is not UTF-8 (Starlette would decode it as Latin-1), or a multipart body that
    Starlette refuses (BentoML answers that with a 500)."""

    def __init__(self, media_type: str, params: dict[bytes, bytes], file_fields: set[str]) -> None:
        self.file_fields = file_fields
        self.problem: tuple[str, str] | None = None
        self.counts = {False: 0, True: 0}  # fields, files
        self.multipart = media_type == "multipart/form-data"
        self.utf8 = params.get(b"charset", b"utf-8").lower() in (b"utf-8", b"utf8")
        self.begin()
        self.parser: MultipartParser | QuerystringParser | None = None
        if not self.multipart:
            self.parser = QuerystringParser({"on_field_start": self.begin, "on_field_name": self.add_name,
                                             "on_field_data": self.add_data, "on_field_end": self.end})
        elif not params.get(b"boundary"):
            self.fail("invalid_multipart", "the multipart/form-data Content-Type has no boundary")
        else:
            self.parser = MultipartParser(params[b"boundary"], {
                "on_part_begin": self.begin, "on_header_field": self.add_header_name,
                "on_header_value": self.add_header_value, "on_header_end": self.header_end,
                "on_headers_finished": self.headers_finished, "on_part_data": self.add_data, "on_part_end": self.end})

    def fail(self, code: str, message: str) -> None:
        if self.problem is None:
            self.problem = (code, message)

    def feed(self, chunk: bytes, last: bool) -> None:
        if self.parser is None or self.problem:
            return
        try:
            self.parser.write(chunk)
            if last:
                self.parser.finalize()
        except FormParserError:
            self.fail("invalid_multipart", "the body is not valid multipart/form-data")

    def begin(self) -> None:
        self.name, self.header, self.value, self.disposition = b"", b"", b"", b""
        self.data = bytearray()
        self.is_file = False

    def add_name(self, data: bytes, start: int, end: int) -> None:
        self.name += data[start:end]

    def add_data(self, data: bytes, start: int, end: int) -> None:
        if self.is_file:
            return
        self.data += data[start:end]
        if len(self.name) + len(self.data) > MAX_FIELD_BYTES:
            self.fail("invalid_multipart", f"a form field is larger than {MAX_FIELD_BYTES // 1024} KB "
                      "(send large data as a file upload)")

    def add_header_name(self, data: bytes, start: int, end: int) -> None:
        self.header += data[start:end]

    def add_header_value(self, data: bytes, start: int, end: int) -> None:
        self.value += data[start:end]

    def header_end(self) -> None:
        if self.header.lower() == b"content-disposition":
            self.disposition = self.value
        self.header, self.value = b"", b""

    def headers_finished(self) -> None:
        _, options = parse_options_header(self.disposition)
        if b"name" not in options:
            self.fail("invalid_multipart", "a multipart part has no name in its Content-Disposition")
        self.name = options.get(b"name", b"")
        self.is_file = b"filename" in options
        problem = upload_name_problem(options[b"filename"]) if self.is_file else None
        if problem:
            self.fail("invalid_argument", f"{self.name.decode('utf-8', 'replace')}: {problem}")

    def end(self) -> None:
        if self.multipart:
            name, value = self.name.decode("utf-8", "replace"), bytes(self.data)
        else:  # urlencoded: still percent-encoded
            name = unquote_plus(self.name.decode("latin-1"))
            value = unquote_to_bytes(bytes(self.data).replace(b"+", b" "))
        self.counts[self.is_file] += 1
        if self.counts[self.is_file] > MAX_PARTS:
            kind = "files" if self.is_file else "fields"
            self.fail("invalid_multipart", f"too many form {kind} (at most {MAX_PARTS})")
        if name in self.file_fields and not self.is_file:
            self.fail("invalid_argument", f"{name} must be an uploaded file (a multipart part with a filename), "
                      "not a text value: the server fetches no URLs")
        elif not self.is_file and self.utf8:
            try:
                value.decode("utf-8")
            except UnicodeDecodeError:
                self.fail("invalid_argument", f"{name}: the value is not valid UTF-8")
        if not self.is_file and value.lstrip()[:1] in (b"[", b"{") and too_deep(value):
            self.fail("invalid_json", f"{name}: {TOO_DEEP}")

    def wrap(self, receive: Receive) -> Receive:
        async def inspected() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                self.feed(message.get("body", b""), last=not message.get("more_body", False))
            if self.problem:
                raise Refused(self.problem[1])
            return message

        return inspected


class ErrorShaper:
    """Wraps `send`: a response under 400 goes out as it comes; an error response is held until its
    body is complete and rewritten unless it already has our shape."""

    def __init__(self, scope: Scope, send: Send) -> None:
        self.scope, self.send = scope, send
        self.inspector: FormInspector | None = None  # set for form bodies
        self.started = False  # something went out
        self.held: Message | None = None
        self.body = bytearray()

    async def __call__(self, message: Message) -> None:
        if self.held is None:
            if message["type"] == "http.response.start" and message["status"] >= 400:
                self.held = message
                return
            self.started = True
            await self.send(message)
            return
        if message["type"] != "http.response.body":
            return  # trailers and the like of a response we replace
        self.body += message.get("body", b"")
        if not message.get("more_body", False):
            await self.send_error(self.held)

    async def send_error(self, start: Message) -> None:
        headers = MutableHeaders(raw=list(start.get("headers", [])))
        status = int(start["status"])
        if self.inspector and self.inspector.problem:
            found: tuple[str, str] | None = self.inspector.problem
            status = 400
        else:
            found = error_fields(status, headers.get("content-type", ""), bytes(self.body), self.scope["method"],
                             self.scope["path"], headers.get("allow"))
        if found is None:
            body = bytes(self.body)
        else:
            body = bytes(ApiError(status, *found).response().body)
            headers["content-type"] = JSON
        headers["content-length"] = str(len(body))
        self.started = True
        await self.send({**start, "status": status, "headers": headers.raw})
        await self.send({"type": "http.response.body", "body": body})


class SecurityHeaders:
    """Adds `X-Content-Type-Options: nosniff` to every HTTP response (browsers then never guess a type
    other than the one sent), and the strict UI_POLICY Content-Security-Policy under /ui. Registered
    first in service.py, so that it wraps every middleware of ours and the app; it replaces a header of
    the same name set inside it. An exception that escapes the middlewares inside it is answered here
    (500 in the error shape, with the headers) rather than by Starlette's ServerErrorMiddleware outside.
    Only BentoML's TimeoutMiddleware lies outside too, and its 504 (SERVICE_TIMEOUT_S) comes after the
    one api/http/limits.py sends (REQUEST_TIMEOUT_S)."""

    NOSNIFF = (b"x-content-type-options", b"nosniff")

    def __init__(self, app: App) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        added = [self.NOSNIFF]
        if is_ui_path(scope["path"]):
            added.append((b"content-security-policy", UI_POLICY.encode("ascii")))
        names = {name for name, _ in added}

        def with_headers(message: Message) -> Message:
            kept = [(k, v) for k, v in message.get("headers", []) if k.lower() not in names]
            return {**message, "headers": kept + added}

        send_with_headers = StatusWatch(send, on_start=with_headers)
        try:
            await self.app(scope, receive, send_with_headers)
        except Exception:
            if send_with_headers.started:
                raise
            log.exception("unhandled error on %s %s", scope["method"], scope["path"])
            await ApiError(500, "internal_error", INTERNAL).response()(scope, receive, send_with_headers)


class ApiContractMiddleware:
    """See the module docstring. `service` is the BentoML service (its API routes, file fields and spec)."""

    def __init__(self, app: App, service: Any, version: str = "dev") -> None:
        self.app = app
        self.service = service
        self.version = version
        prefix = (service.path_prefix or "").rstrip("/")
        # API route -> its file fields
        self.routes = {prefix + m.route: set(m.input_spec.multipart_fields) for m in service.apis.values()}
        self.docs = prefix + "/docs.json"
        self.untouched = {prefix + path for path in UNTOUCHED}
        self.spec: bytes | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.untouched:
            await self.app(scope, receive, send)
            return
        shaper = ErrorShaper(scope, send)
        try:
            await self.handle(scope, receive, shaper)
            if shaper.held is not None and not shaper.started:  # an error body that never ended
                await shaper.send_error(shaper.held)
        except Exception:
            # BentoML's TimeoutMiddleware would hold the request until its timeout, then drop it
            if shaper.started:
                raise
            log.exception("unhandled error on %s %s", scope["method"], scope["path"])
            problem = shaper.inspector.problem if shaper.inspector else None
            status, (code, message) = (400, problem) if problem else (500, ("internal_error", INTERNAL))
            await ApiError(status, code, message).response()(scope, receive, send)

    async def handle(self, scope: Scope, receive: Receive, send: ErrorShaper) -> None:
        if scope["path"] == self.docs and scope["method"] in ("GET", "HEAD"):
            await Response(self.openapi(), media_type=JSON)(scope, receive, send)
            return
        if scope["method"] == "POST" and scope["path"] in self.routes:
            raw = dict(scope["headers"]).get(b"content-type", JSON.encode())
            kind, params = parse_options_header(raw)
            media_type = kind.decode("latin-1").lower()
            if media_type not in (JSON, *FORMS):
                message = f"Content-Type {media_type or '(empty)'} is not supported: send {SUPPORTED}"
                await ApiError(415, "unsupported_media_type", message).response()(scope, receive, send)
                return
            if media_type in FORMS:
                inspector = send.inspector = FormInspector(media_type, params, self.routes[scope["path"]])
                if inspector.problem:
                    await ApiError(400, *inspector.problem).response()(scope, receive, send)
                    return
                receive = inspector.wrap(receive)
        await self.app(scope, receive, send)

    def openapi(self) -> bytes:
        if self.spec is None:
            spec = fix_spec(self.service.openapi_spec.asdict(), version=self.version)
            self.spec = json.dumps(spec, ensure_ascii=False).encode("utf-8")
        return self.spec

