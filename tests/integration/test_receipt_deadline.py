"""Receipt deadlines (api/http/receipt_deadline.py) and body-before-slot (api/http/limits.py) on a real uvicorn
server in this process, spoken to over raw sockets: stalled clients are closed, real ones are not."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from api.http.limits import Limits
from api.http.receipt_deadline import protocol_class

HEADER_S, TOTAL_S = 0.5, 1.5


async def echo(request: Request) -> JSONResponse:
    body = await request.body()
    await asyncio.sleep(float(request.query_params.get("sleep", 0)))
    return JSONResponse({"received": len(body)})


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, int]]:
    app = Limits(Starlette(routes=[Route("/echo", echo, methods=["GET", "POST"])]), api_key=None,
                 public_metrics=False, public_docs=False, max_upload_bytes=4 * 1024 * 1024, max_concurrency=2,
                 timeout_s=30, retry_after_s=1)
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning",
                            http=protocol_class(HEADER_S, TOTAL_S), timeout_keep_alive=30)
    uv = uvicorn.Server(config)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    thread = threading.Thread(target=uv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not uv.started:
        time.sleep(0.02)
    yield sock.getsockname()
    uv.should_exit = True
    thread.join(5)


def connect(address: tuple[str, int]) -> socket.socket:
    conn = socket.create_connection(address, timeout=10)
    return conn


def read_all(conn: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    chunks = []
    while chunk := conn.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def read_response(conn: socket.socket) -> bytes:
    """One whole response (headers and its content-length of body) from a kept-alive connection."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += conn.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.lower().split(b"\r\n")
    length = next(int(line.split(b":")[1]) for line in lines if line.startswith(b"content-length"))
    while len(body) < length:
        body += conn.recv(65536)
    return head + b"\r\n\r\n" + body


def post(body: bytes, path: str = "/echo") -> bytes:
    return (f"POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/octet-stream\r\n"
            f"content-length: {len(body)}\r\n\r\n").encode() + body


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def error_code(response: bytes) -> str:
    return str(json.loads(response.split(b"\r\n\r\n", 1)[1])["error"]["code"])


def test_half_headers_are_closed_with_408(server: tuple[str, int]) -> None:
    conn = connect(server)
    start = time.monotonic()
    conn.sendall(b"GET /echo HTTP/1.1\r\nhost: x\r\n")
    response = read_all(conn)
    assert status_of(response) == 408 and error_code(response) == "request_timeout"
    assert b"headers" in response
    assert HEADER_S * 0.8 <= time.monotonic() - start < TOTAL_S


def test_silent_connection_is_closed(server: tuple[str, int]) -> None:
    conn = connect(server)
    start = time.monotonic()
    response = read_all(conn)
    assert status_of(response) == 408
    assert time.monotonic() - start < TOTAL_S


def test_stalled_body_is_closed_at_the_total_deadline(server: tuple[str, int]) -> None:
    conn = connect(server)
    start = time.monotonic()
    conn.sendall(post(b"x" * 100)[:-90])  # headers and 10 of 100 bytes
    response = read_all(conn)
    assert status_of(response) == 408 and b"body" in response
    assert TOTAL_S * 0.8 <= time.monotonic() - start < TOTAL_S + 1.5


def test_slow_but_timely_body_and_long_answer_are_untouched(server: tuple[str, int]) -> None:
    conn = connect(server)
    request = post(b"y" * 3000, path="/echo?sleep=2")  # the answer takes longer than both deadlines
    for i in range(0, len(request), 1000):
        conn.sendall(request[i:i + 1000])
        time.sleep(0.1)
    conn.settimeout(10)
    response = read_response(conn)
    assert status_of(response) == 200 and b'"received":3000' in response


def test_keep_alive_requests_each_get_their_own_deadline(server: tuple[str, int]) -> None:
    conn = connect(server)
    for _ in range(2):
        conn.sendall(b"GET /echo HTTP/1.1\r\nhost: x\r\n\r\n")
        assert status_of(read_response(conn)) == 200
        time.sleep(HEADER_S * 1.5)  # idle between requests is keep-alive time, not receipt time
    conn.sendall(b"GET /echo HTTP/1.1\r\n")
    assert status_of(read_all(conn)) == 408


def test_stalled_bodies_do_not_hold_the_in_flight_slots(server: tuple[str, int]) -> None:
    """max_concurrency is 2: five uploads that stall hold no slot, so a complete request is answered."""
    stalled = [connect(server) for _ in range(5)]
    for conn in stalled:
        conn.sendall(post(b"z" * 1000)[:-500])
    time.sleep(0.2)
    conn = connect(server)
    conn.sendall(post(b"ok"))
    response = read_response(conn)
    assert status_of(response) == 200 and b'"received":2' in response
    for conn in stalled:
        conn.close()


def test_body_over_the_limit_is_413(server: tuple[str, int]) -> None:
    conn = connect(server)
    head = (b"POST /echo HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n")
    chunk = b"a" * (1024 * 1024)
    conn.sendall(head)
    with pytest.raises(OSError):  # the server may close while we are still sending
        for _ in range(6):
            conn.sendall(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
        conn.sendall(b"0\r\n\r\n")
        response = read_response(conn)
        assert status_of(response) == 413
        raise OSError("answered 413")
