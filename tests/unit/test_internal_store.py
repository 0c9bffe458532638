"""The indexer's write path into a running service (api/internal_store.py) refuses everyone but the local
indexer with the service's token; the address file; and how the indexer picks its store
(store.open_store_for_writing). The VectorStore contract over this path runs in
tests/integration/test_store.py ("remote")."""

from __future__ import annotations

import base64
import json
import os
import socket
import stat
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from helpers.stores import DIM, MODEL, ServedEdge, make_points
from starlette.applications import Starlette
from starlette.routing import Route
from starlette.testclient import TestClient

from api.http.limits import Limits
from api.internal_store import InternalStore, listening_url, write_private_json
from store import open_store_for_writing
from store.interface import Hit, SearchFilter, StoreLockedError
from store.qdrant_edge import EdgeStore
from store.via_service import (
    TOKEN_HEADER,
    RemoteStore,
    ServiceFile,
    ServiceGoneError,
    from_wire,
    hints_of,
    read_service_file,
    service_file_path,
    to_wire,
)

UPSERT = "/internal/store/upsert"


@pytest.fixture
def served(tmp_path: Path) -> Iterator[ServedEdge]:
    s = ServedEdge(tmp_path / "qdrant", "images")
    s.store.ensure_collection(MODEL, DIM)
    yield s
    s.close()


def upsert_body() -> dict[str, Any]:
    point = make_points(1)[0]
    vector = np.asarray([point.vector], dtype="<f4")
    return {"ids": [point.id], "payloads": [point.payload], "dim": DIM,
            "vectors": base64.b64encode(vector.tobytes()).decode()}


def assert_refused(response: Any, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["status"] == "error" and body["error"]["code"] == code and body["error"]["message"]


def test_writes_from_outside_are_refused_and_store_nothing(served: ServedEdge) -> None:
    body = upsert_body()
    assert_refused(served.client().post(UPSERT, json=body), 403, "permission_denied")  # no token
    assert_refused(served.client(**{TOKEN_HEADER: "guess"}).post(UPSERT, json=body), 403, "permission_denied")
    api_key_only = served.client(authorization="Bearer public-key")
    assert_refused(api_key_only.post(UPSERT, json=body), 403, "permission_denied")
    # With the token, but from another machine, or forwarded by a proxy on this one: as if no such path.
    remote_host = served.client("203.0.113.9", **{TOKEN_HEADER: ServedEdge.TOKEN})
    assert_refused(remote_host.post(UPSERT, json=body), 404, "not_found")
    proxied = served.client(**{TOKEN_HEADER: ServedEdge.TOKEN, "X-Forwarded-For": "203.0.113.9"})
    assert_refused(proxied.post(UPSERT, json=body), 404, "not_found")
    assert served.store.count() == 0

    ok = served.client(**{TOKEN_HEADER: ServedEdge.TOKEN}).post(UPSERT, json=body)
    assert ok.status_code == 200, ok.text
    assert served.store.count() == 1


def test_the_path_is_off_without_a_token(served: ServedEdge) -> None:
    served.internal.token = None  # QDRANT_URL, or the address file could not be written
    response = served.client(**{TOKEN_HEADER: ""}).post("/internal/store/count", json={})
    assert_refused(response, 404, "not_found")


def test_malformed_calls_are_400_and_unknown_ops_404(served: ServedEdge) -> None:
    client = served.client(**{TOKEN_HEADER: ServedEdge.TOKEN})
    assert_refused(client.post("/internal/store/drop_everything", json={}), 404, "not_found")
    assert_refused(client.post(UPSERT, content=b"{not json"), 400, "invalid_argument")
    bad = {**upsert_body(), "vectors": "AAAA"}  # 3 bytes for one 8-d vector
    assert_refused(client.post(UPSERT, json=bad), 400, "invalid_argument")
    assert_refused(client.post("/internal/store/set_descriptions", json={"described": ["x"]}), 400,
                   "invalid_argument")
    assert_refused(client.post("/internal/store/search", json={"limit": 5}), 400, "invalid_argument")
    assert served.store.count() == 0


def test_the_api_key_middleware_leaves_the_check_to_the_write_path(served: ServedEdge) -> None:
    """With API_KEY set, the key alone is refused (403 from the write path), and the token alone is enough."""
    app = Starlette(routes=[Route("/internal/store/{op}", served.internal.handle, methods=["POST"])])
    limited = Limits(app, api_key="public-key", public_metrics=False, public_docs=False,  # type: ignore[arg-type]
                     max_upload_bytes=2**20, max_concurrency=4, timeout_s=10, retry_after_s=1)
    with TestClient(limited, client=("127.0.0.1", 1)) as client:  # type: ignore[arg-type]
        assert_refused(client.post(UPSERT, json=upsert_body(), headers={"Authorization": "Bearer public-key"}),
                       403, "permission_denied")
        assert client.post(UPSERT, json=upsert_body(), headers={TOKEN_HEADER: ServedEdge.TOKEN}).status_code == 200
        assert_refused(client.post("/v1/anything", json={}), 401, "unauthorized")  # the rest still needs the key


def test_model_mismatch_and_missing_collection_come_back_as_their_errors(served: ServedEdge) -> None:
    from store.interface import CollectionMissingError, ModelMismatchError

    remote = served.remote()
    with pytest.raises(ModelMismatchError):
        remote.ensure_collection("another/model", DIM)
    remote.ensure_collection(MODEL, DIM, recreate=True)
    remote.upsert(make_points(3))
    assert remote.count() == 3 and served.store.count() == 3
    served.store.close()
    other = ServedEdge(served.store.folder, "other")
    try:
        with pytest.raises(CollectionMissingError):
            other.remote().upsert(make_points(1))
    finally:
        other.close()


def test_address_file_is_private_and_withdrawn(tmp_path: Path) -> None:
    path = service_file_path(tmp_path / "qdrant", "images")
    internal = InternalStore(EdgeStore(tmp_path / "qdrant", "images"), None)  # type: ignore[arg-type]
    internal.advertise(path, "http://127.0.0.1:3999", "images")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    found = read_service_file(path)
    assert found is not None and found.url == "http://127.0.0.1:3999" and found.token == internal.token
    assert len(found.token) >= 40 and found.collection == "images"
    write_private_json(path, {**json.loads(path.read_text()), "token": "a newer service"})
    internal.withdraw()  # not ours any more: left for the service that wrote it
    assert path.exists()
    path.write_text(json.dumps({"url": found.url, "token": internal.token, "pid": 1, "collection": "images"}))
    internal.withdraw()
    assert not path.exists()


def test_listening_url_reads_the_socket_bentoml_hands_the_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as sock:
        sock.bind(("0.0.0.0", 0))
        sock.listen()
        port = sock.getsockname()[1]
        monkeypatch.setattr(sys, "argv", ["worker", "--fd", str(sock.fileno()), "--worker-id", "1"])
        assert listening_url("http://fallback:1") == f"http://127.0.0.1:{port}"
        assert sock.getsockname()[1] == port  # the worker's own socket is left open
    monkeypatch.setattr(sys, "argv", ["worker"])
    assert listening_url("http://fallback:1") == "http://fallback:1"


# ---------------------------------------------------------------- the indexer's choice of store


def test_indexer_store_is_the_folder_without_a_live_service(tmp_path: Path, settings_env: Any) -> None:
    settings = settings_env(QDRANT_PATH=tmp_path / "qdrant", QDRANT_URL=None, QDRANT_COLLECTION=None)
    assert isinstance(open_store_for_writing(settings), EdgeStore)
    # A service killed with SIGKILL leaves its file: nothing answers there, so the folder is used.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = sock.getsockname()[1]
    write_private_json(service_file_path(settings.qdrant_path, "images"),
                       {"url": f"http://127.0.0.1:{dead}", "token": "t", "pid": 1, "collection": "images"})
    with pytest.raises(ServiceGoneError):
        RemoteStore(f"http://127.0.0.1:{dead}", "t").info()
    assert isinstance(open_store_for_writing(settings), EdgeStore)


def test_indexer_store_with_a_server_url_ignores_the_address_file(tmp_path: Path, settings_env: Any) -> None:
    from store.qdrant_server import ServerStore

    settings = settings_env(QDRANT_PATH=tmp_path / "qdrant", QDRANT_URL="http://127.0.0.1:9")
    write_private_json(service_file_path(settings.qdrant_path, "images"),
                       {"url": "http://127.0.0.1:9", "token": "t", "pid": 1, "collection": "images"})
    assert isinstance(open_store_for_writing(settings), ServerStore)


def test_unreadable_address_file_says_whose_it_is(tmp_path: Path, settings_env: Any,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    settings = settings_env(QDRANT_PATH=tmp_path / "qdrant", QDRANT_URL=None)
    path = service_file_path(settings.qdrant_path, "images")
    write_private_json(path, {"url": "http://127.0.0.1:9", "token": "t", "pid": 1, "collection": "images"})
    real = os.open

    def denied(name: Any, *args: Any, **kwargs: Any) -> int:  # as for another user (tests may run as root)
        if Path(name) == path:
            raise PermissionError(13, "Permission denied", str(name))
        return real(name, *args, **kwargs)

    monkeypatch.setattr(os, "open", denied)  # the service file is opened once, no-follow (store/via_service.py)
    with pytest.raises(StoreLockedError, match="run the indexer as that user"):
        open_store_for_writing(settings)


# ---------------------------------------------------------------- one generic call (store/via_service.py)


def test_store_methods_off_the_allowlist_are_404_and_do_nothing(served: ServedEdge) -> None:
    served.store.upsert(make_points(2))
    client = served.client(**{TOKEN_HEADER: ServedEdge.TOKEN})
    for method in ("close", "finish", "ensure_indexes", "_drop", "__init__"):
        response = client.post(f"/internal/store/{method}", json={})
        assert response.status_code == 404, method
        assert response.json()["error"]["code"] == "not_found"
    assert served.store.count() == 2  # still open, nothing dropped


def test_unknown_and_missing_arguments_are_400(served: ServedEdge) -> None:
    client = served.client(**{TOKEN_HEADER: ServedEdge.TOKEN})
    unknown = client.post("/internal/store/count", json={"drop": True})
    assert unknown.status_code == 400 and unknown.json()["error"]["code"] == "invalid_argument"
    missing = client.post("/internal/store/ensure_collection", json={"model_id": MODEL})
    assert missing.status_code == 400 and "dim" in missing.json()["error"]["message"]


def test_every_answer_crosses_as_the_local_store_gives_it(served: ServedEdge) -> None:
    remote = served.remote()
    points = make_points(4)
    remote.upsert(points)
    query = points[0].vector
    where = SearchFilter(exclude_ids=(points[1].id,))
    assert remote.search(query, 3, where) == served.store.search(query, 3, where)
    got = remote.vectors([p.id for p in points])
    assert set(got) == {p.id for p in points}
    np.testing.assert_array_equal(got[points[2].id], served.store.vectors([points[2].id])[points[2].id])
    items, after = remote.payload_page(None, 2)
    local_items, local_after = served.store.payload_page(None, 2)
    assert items == local_items and after == str(local_after)
    assert dict(remote.payloads()) == dict(served.store.payloads())
    assert remote.unindexed_points() == served.store.unindexed_points() == 4
    remote.finish()  # only flushes: the index is built at the service's next start
    assert served.store.unindexed_points() == 4


def test_the_wire_keeps_types() -> None:
    hits = [Hit("a", 0.5, {"path": "x.jpg", "folders": ["f"]})]
    assert from_wire(to_wire(hits), hints_of("search")["return"]) == hits
    where = SearchFilter(folder="f", min_width=10, exclude_ids=("a", "b"))
    assert from_wire(to_wire(where), hints_of("search")["where"]) == where
    with pytest.raises(ValueError):
        from_wire({"x": ["not fields"]}, hints_of("set_payloads")["payloads"])


def test_the_client_waits_past_the_services_request_timeout() -> None:
    found = ServiceFile("http://127.0.0.1:9", "t", 1, "images")
    for service_timeout in (30.0, 110.0, 600.0):
        remote = RemoteStore.from_file(found, service_timeout)
        try:
            assert remote.client.timeout == httpx.Timeout(remote.timeout_s)
            assert remote.timeout_s > service_timeout
        finally:
            remote.close()
