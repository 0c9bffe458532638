"""Issue 22 D2, D3, D7, D8, D9 and D10, plain modules: the indexer trusts a service file only when it and its
folder are its user's alone; the store's free space is checked before the service opens it; no log line can
be forged through a request path; the Host allowlist and redirects without the Host (api/http/request_guard.py);
a request with both Content-Length and Transfer-Encoding is refused and its connection closed; an API_KEY
that no request can send is refused at start. The served cases are tests/integration/test_faults_edge_served.py."""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from api.http.limits import api_key_problem
from api.http.logs import EscapeControls, TextFormatter
from api.http.request_guard import RequestGuard, relative_location
from api.internal_store import write_private_json
from config import Settings
from store import open_store_for_writing
from store import qdrant_edge as edge
from store.interface import StoreLockedError
from store.qdrant_edge import EdgeStore, free_space_problem
from store.via_service import UntrustedServiceFile, read_service_file, service_file_path

# -- D2: the service file ----------------------------------------------------------------------------------


@pytest.fixture
def planted(tmp_path: Path) -> Path:
    """A service file pointing elsewhere, as another user would plant it, in a folder of this user (0700)."""
    folder = tmp_path / "qdrant"
    folder.mkdir(mode=0o700)
    path = service_file_path(folder, "images")
    write_private_json(path, {"url": "http://198.51.100.7:9", "token": "t", "pid": 1, "collection": "images"})
    return path


def test_a_private_service_file_in_a_private_folder_is_read(planted: Path) -> None:
    found = read_service_file(planted)
    assert found is not None and found.url == "http://198.51.100.7:9"


@pytest.mark.parametrize("case", ["world-writable folder", "group-writable folder", "writable file",
                                  "another user's file", "another user's folder", "a link"])
def test_a_service_file_others_could_have_written_is_refused_by_name(planted: Path, case: str) -> None:
    folder = planted.parent
    if case == "world-writable folder":
        folder.chmod(0o1777)
    elif case == "group-writable folder":
        folder.chmod(0o770)
    elif case == "writable file":
        planted.chmod(0o666)
    elif case == "another user's file":
        os.chown(planted, 12345, 12345)  # the tests run as root, who can hand a file to anyone
    elif case == "another user's folder":
        os.chown(folder, 12345, 12345)
    else:
        real = folder / "elsewhere.json"
        planted.rename(real)
        planted.symlink_to(real)
    with pytest.raises(UntrustedServiceFile) as refused:
        read_service_file(planted)
    assert str(planted) in str(refused.value) and "chmod go-w" in str(refused.value)
    assert isinstance(refused.value, StoreLockedError)  # the indexer exits 2 with the message


def test_the_indexer_refuses_to_write_through_a_planted_file(planted: Path) -> None:
    planted.parent.chmod(0o777)
    settings = Settings(_env_file=None, qdrant_path=planted.parent)  # type: ignore[call-arg]
    with pytest.raises(UntrustedServiceFile, match="refusing the service address file"):
        open_store_for_writing(settings)


def test_the_store_folder_is_made_private_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o002)
    try:
        store = EdgeStore(tmp_path / "qdrant", "images")
        store.ensure_collection("m", 4)
        store.close()
    finally:
        os.umask(old)
    assert (tmp_path / "qdrant").stat().st_mode & 0o022 == 0


# -- D3: free space before the store is opened --------------------------------------------------------------


def test_a_nearly_full_store_disk_is_a_problem_named_before_opening(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    assert free_space_problem(tmp_path / "not" / "yet" / "made") is None  # checked on the nearest folder
    real = shutil.disk_usage
    monkeypatch.setattr(edge.shutil, "disk_usage", lambda path: real(path)._replace(free=5 * 2**20))
    problem = free_space_problem(tmp_path / "qdrant")
    assert problem is not None and "5 MiB free" in problem and str(tmp_path / "qdrant") in problem


# -- D7: log lines ----------------------------------------------------------------------------------------------


def test_bentoml_access_lines_cannot_be_forged() -> None:
    out = io.StringIO()
    logger = logging.getLogger("test.access")
    handler = logging.StreamHandler(out)
    logger.addHandler(handler)
    logger.addFilter(EscapeControls())
    logger.propagate = False
    try:  # BentoML's own format, with the decoded path inside its second argument
        logger.warning("%s (%s) (%s) %.3fms", "127.0.0.1:5", "scheme=http,method=GET,path=/a\nFORGED 200\r\x1b[2J",
                       "status=401", 1.0)
    finally:
        logger.removeHandler(handler)
    lines = out.getvalue().splitlines()
    assert len(lines) == 1 and "path=/a\\nFORGED 200\\r\\x1b[2J" in lines[0]


def test_our_text_lines_escape_the_path() -> None:
    record = logging.LogRecord("mms.requests", logging.INFO, __file__, 1, "request", None, None)
    record.path = "/images/a\nlevel=ERROR forged\u2028.jpg"
    line = TextFormatter().format(record)
    assert "\n" not in line and "\u2028" not in line and "a\\nlevel=ERROR forged\\u2028.jpg" in line


# -- D8 / D9: the request guard ----------------------------------------------------------------------------


async def echo(request: Request) -> JSONResponse:
    return JSONResponse({"host": request.headers.get("host")})


def guarded(base_url: str = "http://127.0.0.1:3000", **options: Any) -> TestClient:
    app = Starlette(routes=[Route("/health", echo), Route("/livez", echo)])  # Starlette redirects /health/
    options = {"allowed_hosts": None, "api_key_set": False, **options}
    return TestClient(RequestGuard(app, **options), base_url=base_url, follow_redirects=False)


@pytest.mark.parametrize("host", ["localhost:3000", "127.0.0.1:3000", "[::1]:3000", "LOCALHOST", "app.localhost"])
def test_a_loopback_service_without_a_key_answers_loopback_names(host: str) -> None:
    assert guarded().get("/health", headers={"Host": host}).status_code == 200


@pytest.mark.parametrize("host", ["evil.example", "evil.example:3000", "127.0.0.1.evil.example", "10.0.0.5"])
def test_a_loopback_service_without_a_key_refuses_other_names(host: str) -> None:
    response = guarded().get("/health", headers={"Host": host})
    assert response.status_code == 400 and response.json()["error"]["code"] == "host_not_allowed"
    assert guarded().get("/livez", headers={"Host": host}).status_code == 200  # probes hold no data


def test_other_services_answer_any_name_unless_told() -> None:
    assert guarded("http://192.0.2.10:3000").get("/health", headers={"Host": "photos.lan"}).status_code == 200
    assert guarded(api_key_set=True).get("/health", headers={"Host": "photos.lan"}).status_code == 200
    allow = guarded("http://192.0.2.10:3000", allowed_hosts="photos.lan, nas.local:3000")
    assert allow.get("/health", headers={"Host": "photos.lan:3000"}).status_code == 200
    assert allow.get("/health", headers={"Host": "nas.local"}).status_code == 200
    assert allow.get("/health", headers={"Host": "evil.example"}).status_code == 400
    assert guarded(allowed_hosts="*").get("/health", headers={"Host": "evil.example"}).status_code == 200


def test_redirects_never_carry_the_host() -> None:
    response = guarded(allowed_hosts="*").get("/health/", headers={"Host": "evil.example"})
    assert response.status_code == 307 and response.headers["location"] == "/health"
    assert relative_location(b"http://evil.example//other.example/x?a=1") == b"/other.example/x?a=1"
    assert relative_location(b"/ui/") == b"/ui/"


async def call(app: Any, headers: list[tuple[bytes, bytes]]) -> list[dict[str, Any]]:
    scope = {"type": "http", "method": "POST", "path": "/health", "raw_path": b"/health", "query_string": b"",
             "headers": headers, "server": ("127.0.0.1", 3000), "client": ("127.0.0.1", 5), "scheme": "http",
             "http_version": "1.1", "root_path": ""}
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


def test_content_length_with_transfer_encoding_is_400_and_closes() -> None:
    import asyncio

    reached: list[str] = []

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        reached.append(scope["path"])

    guard = RequestGuard(inner, allowed_hosts=None, api_key_set=False)
    sent = asyncio.run(call(guard, [(b"host", b"localhost"), (b"content-length", b"5"),
                                    (b"transfer-encoding", b"chunked")]))
    start = sent[0]
    assert start["status"] == 400 and (b"connection", b"close") in start["headers"]
    assert json.loads(sent[1]["body"])["error"]["code"] == "invalid_framing" and not reached
    asyncio.run(call(guard, [(b"host", b"localhost"), (b"content-length", b"5")]))
    assert reached == ["/health"]


# -- D10: API_KEY ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("key", "problem"), [(" key", "white space"), ("key\n", "white space"),
                                              ("clé-secrète", "printable ASCII"), ("密钥", "printable ASCII"),
                                              ("a\tb", "printable ASCII")])
def test_an_api_key_no_request_can_send_is_refused(key: str, problem: str) -> None:
    found = api_key_problem(key)
    assert found is not None and problem in found and "API_KEY" in found and key.strip() not in found


def test_usable_api_keys_pass() -> None:
    assert api_key_problem(None) is None
    assert api_key_problem("s3cr3t-Key_with.punct~!") is None
