"""Request ids and one log line per request.

`RequestLog` is, after SecurityHeaders, the outermost of the service's own ASGI middlewares (service.py). Every
HTTP request gets an id: the caller's `X-Request-ID` when it is sane (1-128 characters of letters,
digits and `-_.:`), else a new random one. The id is sent back in the `X-Request-ID` response header
and is logged, with method, path, status and duration, as one line on stderr per request on the
`mms.requests` logger: a JSON object (LOG_FORMAT=json, the default) or `key=value` text
(LOG_FORMAT=text), with the route it reached (its path template, e.g. `/images/{path:path}`, read from the
app). Probes (/livez, /readyz, /healthz: api/http/asgi_types.py, PROBES) and /metrics get the header but no line.

No request can forge a log line: control characters (a path's decoded %0a, %0d...) are written as escapes
(`\\n`, `\\x1b`) in our text lines and in BentoML's own access log (`bentoml.access`, which writes the
decoded path), through `EscapeControls`; JSON lines escape them anyway.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
import uuid
from datetime import UTC, datetime

from api.http.asgi_types import METRICS_PATH, PROBES, App, Message, Receive, Scope, Send, StatusWatch, route_of

HEADER = b"x-request-id"
SANE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
QUIET = PROBES | {METRICS_PATH}
FIELDS = ("request_id", "method", "path", "status", "duration_ms", "client", "route")

log = logging.getLogger("mms.requests")
# C0 and C1 controls, DEL, and the Unicode line and paragraph separators: each could start a new log line.
CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def escape_controls(text: str) -> str:
    """`text` with every control character written as its Python escape (a newline as backslash-n)."""
    return CONTROLS.sub(lambda m: repr(m.group())[1:-1], text)


class EscapeControls(logging.Filter):
    """Escapes control characters in a record's message and its string arguments (BentoML's access log
    line is "%s (%s) (%s) %.3fms" with the decoded path inside the second argument)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = escape_controls(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(escape_controls(a) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {k: escape_controls(v) if isinstance(v, str) else v for k, v in record.args.items()}
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {"time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
                "level": record.levelname, "logger": record.name, "message": record.getMessage()}
        line.update({key: getattr(record, key) for key in FIELDS if hasattr(record, key)})
        return json.dumps(line, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        when = datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
        pairs = " ".join(f"{key}={escape_controls(str(getattr(record, key)))}" for key in FIELDS
                         if hasattr(record, key))
        return f"{when} {record.levelname} {record.name} {record.getMessage()} {pairs}"


def setup(log_format: str) -> None:
    """Send `mms.requests` lines to stderr in the chosen format, and escape control characters in
    BentoML's access log (once per process)."""
    access = logging.getLogger("bentoml.access")
    if not any(isinstance(f, EscapeControls) for f in access.filters):
        access.addFilter(EscapeControls())
    if any(getattr(h, "mms_requests", False) for h in log.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.mms_requests = True  # type: ignore[attr-defined]
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False


def incoming_id(scope: Scope) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == HEADER:
            text = value.decode("latin-1").strip()
            return text if SANE_ID.fullmatch(text) else None
    return None


class RequestLog:
    def __init__(self, app: App, *, log_format: str = "json") -> None:
        self.app = app
        setup(log_format)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        rid = incoming_id(scope) or uuid.uuid4().hex
        started = time.perf_counter()

        def with_id(message: Message) -> Message:
            headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != HEADER]
            message["headers"] = [*headers, (HEADER, rid.encode("latin-1"))]
            return message

        watch = StatusWatch(send, on_start=with_id)
        try:
            await self.app(scope, receive, watch)
        finally:
            if scope.get("path") not in QUIET:
                self.write(scope, rid, watch.status, time.perf_counter() - started)

    @staticmethod
    def write(scope: Scope, rid: str, status: int, seconds: float) -> None:
        client = scope.get("client")
        route = route_of(scope)  # the endpoint's path template, read from the app (none when unrouted)
        log.info("request", extra={
            "request_id": rid, "method": scope.get("method"), "path": scope.get("path"), "status": status,
            "duration_ms": round(seconds * 1000, 2), "client": client[0] if client else None,
            **({"route": route} if route else {})})
