"""Slow clients against the real `bentoml serve`: the receipt deadlines reach the server BentoML starts,
and uploads that stall hold none of the in-flight slots (issue 16, point 7). Seconds, not minutes."""

from __future__ import annotations

import concurrent.futures
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from serving import Server, running, service_env


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, tiny_clip_dir: Path) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("slow")
    (tmp / "images").mkdir()
    env = service_env(tmp, tiny_clip_dir, tmp / "images")
    env.update(REQUEST_HEADER_TIMEOUT_S="1", REQUEST_BODY_TIMEOUT_S="3", MAX_CONCURRENCY="4", VQA_ENABLED="false")
    with running(env, tmp / "server.log") as srv:
        yield srv


def read_until_closed(conn: socket.socket) -> bytes:
    data = b""
    while chunk := conn.recv(65536):
        data += chunk
    return data


def test_half_sent_headers_are_closed_by_the_deadline(server: Server) -> None:
    """200 connections that send half their headers are all closed with 408 within the header deadline."""
    conns = [socket.create_connection(("127.0.0.1", server.port), timeout=15) for _ in range(200)]
    start = time.monotonic()
    for conn in conns:
        conn.sendall(b"POST /text2image_search HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: appl")
    answers = [read_until_closed(conn) for conn in conns]
    assert time.monotonic() - start < 8
    assert all(answer.startswith(b"HTTP/1.1 408") for answer in answers), answers[:3]
    assert b'"code": "request_timeout"' in answers[0]
    assert httpx.get(f"{server.url}/health", timeout=10).status_code == 200


def test_stalled_bodies_do_not_take_the_slots_of_complete_requests(server: Server) -> None:
    """Twice MAX_CONCURRENCY uploads whose bodies never arrive; complete searches are answered meanwhile,
    and the stalled ones are closed at the body deadline."""
    stalled = [socket.create_connection(("127.0.0.1", server.port), timeout=15) for _ in range(8)]
    for conn in stalled:
        conn.sendall(b"POST /text2image_search HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
                     b"content-length: 1000\r\n\r\n{\"text_query\": ")
    time.sleep(0.3)

    def search(_: int) -> int:
        return httpx.post(f"{server.url}/text2image_search", json={"text_query": "红色的圆形", "top_k": 1},
                          timeout=10).status_code

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        statuses = list(pool.map(search, range(8)))
    assert statuses == [200] * 8
    answers = [read_until_closed(conn) for conn in stalled]
    assert all(answer.startswith(b"HTTP/1.1 408") for answer in answers), answers[:2]
