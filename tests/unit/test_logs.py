"""api/http/logs.py on a small ASGI app: request ids and the two log formats (the real server: test_metrics.py)."""

from __future__ import annotations

import asyncio
import json
import logging

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from api.http.logs import JsonFormatter, RequestLog, TextFormatter, log


async def hello(request: Request) -> JSONResponse:
    return JSONResponse({"ok": True}, status_code=201)


def call(headers: dict[str, str], path: str = "/hello") -> httpx.Response:
    app = RequestLog(Starlette(routes=[Route("/hello", hello), Route("/readyz", hello)]))

    async def go() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            return await client.get(path, headers=headers)

    return asyncio.run(go())


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_a_sane_id_is_kept_and_others_replaced() -> None:
    seen = Records()
    log.addHandler(seen)
    try:
        kept = call({"X-Request-ID": "abc.DEF_1:2-3"})
        replaced = call({"X-Request-ID": "<script>"})
        quiet = call({"X-Request-ID": "probe-1"}, "/readyz")
    finally:
        log.removeHandler(seen)
    assert kept.status_code == 201 and kept.headers["X-Request-ID"] == "abc.DEF_1:2-3"
    assert replaced.headers["X-Request-ID"] != "<script>" and len(replaced.headers["X-Request-ID"]) == 32
    assert quiet.headers["X-Request-ID"] == "probe-1"
    records = seen.records
    assert [r.request_id for r in records] == ["abc.DEF_1:2-3", replaced.headers["X-Request-ID"]]  # type: ignore
    assert records[0].status == 201 and records[0].method == "GET" and records[0].path == "/hello"  # type: ignore


def record() -> logging.LogRecord:
    return log.makeRecord(log.name, logging.INFO, __file__, 1, "request", (), None, extra={
        "request_id": "r-1", "method": "POST", "path": "/vqa", "status": 503, "duration_ms": 12.5, "client": None})


def test_json_and_text_formats() -> None:
    line = json.loads(JsonFormatter().format(record()))
    assert {k: line[k] for k in ("request_id", "method", "path", "status", "duration_ms", "level")} == {
        "request_id": "r-1", "method": "POST", "path": "/vqa", "status": 503, "duration_ms": 12.5, "level": "INFO"}
    text = TextFormatter().format(record())
    assert "INFO mms.requests request request_id=r-1 method=POST path=/vqa status=503 duration_ms=12.5" in text


def test_log_format_setting(settings_env) -> None:  # type: ignore[no-untyped-def]
    assert settings_env().log_format == "json"
    assert settings_env(LOG_FORMAT="text").log_format == "text"
    with pytest.raises(ValueError, match="log_format"):
        settings_env(LOG_FORMAT="xml")
