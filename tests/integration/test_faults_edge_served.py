"""Issue 22 D3, D7, D8, D9, D10 and D12 against the real `bentoml serve` (one server for the module, bound
to 127.0.0.1 without API_KEY): a DNS-rebinding Host is refused and no redirect echoes a Host; a request with
both Content-Length and Transfer-Encoding gets 400 and the connection closed; %0a in a path forges no line
of BentoML's access log; HEAD and a byte Range on /images; and the service refuses to start, with its
reason, on an API_KEY no request can send and on a full store disk. Plain parts: tests/unit/test_faults_edge.py."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import httpx
import pytest
from serving import ROOT, Server, running, service_env
from shapes import draw_shape


class Served(NamedTuple):
    server: Server
    root: Path
    log: Path


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, tiny_clip_dir: Path) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("faults-edge")
    root = tmp / "photos"
    root.mkdir()
    draw_shape("circle", "red", size=64).save(root / "a.jpg")
    env = {**service_env(tmp, tiny_clip_dir, root), "VQA_ENABLED": "false", "LOG_FORMAT": "text"}
    with running(env, tmp / "server.log") as server:
        yield Served(server, root, tmp / "server.log")


def raw_exchange(server: Server, request: bytes) -> tuple[bytes, bool]:
    """Send raw bytes; the response, and whether the server closed the connection after it."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(request)
        data = b""
        closed = False
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                closed = True
                break
            data += chunk
            if b"\r\n\r\n" in data and data.endswith(b"}"):
                sock.settimeout(2)  # the body is in: wait a little for the close
        return data, closed


def test_a_rebinding_host_is_refused_and_loopback_names_answer(served: Served) -> None:
    url = served.server.url
    evil = httpx.get(f"{url}/health", headers={"Host": "evil.example"})
    assert evil.status_code == 400 and evil.json()["error"]["code"] == "host_not_allowed"
    assert httpx.get(f"{url}/health", headers={"Host": f"localhost:{served.server.port}"}).status_code == 200
    assert httpx.get(f"{url}/health").status_code == 200  # the seed's call, unchanged
    found = httpx.post(f"{url}/text2image_search", data={"text_query": "红色的圆形", "top_k": "1"})
    assert found.status_code == 200 and found.json()["status"] == "success"  # (nothing indexed here)


def test_redirects_carry_no_host(served: Served) -> None:
    response = httpx.get(f"{served.server.url}/health/", headers={"Host": "localhost"})
    assert response.status_code == 307 and response.headers["location"] == "/health"
    page = httpx.get(f"{served.server.url}/ui", headers={"Host": "localhost"})
    assert page.status_code in (301, 302, 307, 308) and page.headers["location"].startswith("/ui/")


def test_content_length_with_transfer_encoding_closes_the_connection(served: Served) -> None:
    smuggled = (b"POST /text2image_search HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"0\r\n\r\nGET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
    data, closed = raw_exchange(served.server, smuggled)
    head = data.split(b"\r\n\r\n", 1)[0].lower()
    assert head.startswith(b"http/1.1 400") and b"connection: close" in head
    assert b"invalid_framing" in data and data.count(b"HTTP/1.1") == 1 and closed  # the second request never ran


def test_a_newline_in_the_path_forges_no_log_line(served: Served) -> None:
    response = httpx.get(f"{served.server.url}/images/x%0aFORGED-LINE%0d.jpg?size=0")
    assert response.status_code == 404
    time.sleep(1)
    lines = served.log.read_text(errors="replace").splitlines()
    assert not any(line.startswith("FORGED-LINE") for line in lines)
    access = [line for line in lines if "FORGED-LINE" in line]
    assert access and all("x\\nFORGED-LINE\\r.jpg" in line for line in access), access


def test_head_and_range_on_images(served: Served) -> None:
    data = (served.root / "a.jpg").read_bytes()
    url = f"{served.server.url}/images/a.jpg?size=0"
    head = httpx.head(url)
    assert head.status_code == 200 and head.headers["content-length"] == str(len(data)) and head.content == b""
    part = httpx.get(url, headers={"Range": "bytes=2-11"})
    assert part.status_code == 206 and part.content == data[2:12]
    assert part.headers["content-range"] == f"bytes 2-11/{len(data)}"
    past = httpx.get(url, headers={"Range": f"bytes={len(data)}-"})
    assert past.status_code == 416 and past.headers["content-range"] == f"bytes */{len(data)}"
    assert httpx.get(url).content == data


def start_refused(env: dict[str, str], log: Path) -> str:
    """`bentoml serve` with `env` must exit by itself (non-zero) within a minute; its output."""
    proc = subprocess.run([sys.executable, "-m", "bentoml", "serve", ".", "--host", "127.0.0.1", "--port", "0"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    log.write_text(proc.stdout + proc.stderr)
    assert proc.returncode != 0
    return proc.stdout + proc.stderr


@pytest.mark.parametrize("key", [" padded-key", "clé"])
def test_an_api_key_no_request_can_send_stops_the_start(tmp_path: Path, tiny_clip_dir: Path, key: str) -> None:
    env = {**service_env(tmp_path, tiny_clip_dir, tmp_path), "API_KEY": key}
    output = start_refused(env, tmp_path / "serve.log")
    assert "error: API_KEY" in output and key not in output


def test_a_full_store_disk_stops_the_start_with_its_reason(tmp_path: Path, tiny_clip_dir: Path) -> None:
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=40m", "tmpfs", str(disk)], check=True)
    try:
        (disk / "qdrant").mkdir()
        with (disk / "filler").open("wb") as fh:  # leave ~5 MiB, as in the probe
            os.posix_fallocate(fh.fileno(), 0, os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize - 5 * 2**20)
        env = {**service_env(tmp_path, tiny_clip_dir, tmp_path), "QDRANT_PATH": str(disk / "qdrant")}
        output = start_refused(env, tmp_path / "serve.log")
        assert "not enough free disk space for the vector store" in output and "MiB free" in output
        assert "SIGBUS" not in output and "Bus error" not in output
    finally:
        subprocess.run(["umount", str(disk)], check=False)


def test_a_bad_setting_is_one_line_naming_it_and_the_start_stops(tmp_path: Path, tiny_clip_dir: Path) -> None:
    """As for `python -m indexer` (docs/indexing.md, exit 2): the setting named, why, where the settings are
    described; no traceback to read through."""
    env = {**service_env(tmp_path, tiny_clip_dir, tmp_path), "SEARCH_MAX_TOP_K": "fifty"}
    output = start_refused(env, tmp_path / "serve.log")
    assert "error: SEARCH_MAX_TOP_K: Input should be a valid integer" in output and "(docs/settings.md)" in output
    assert "Traceback" not in output, output
