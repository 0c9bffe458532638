"""Stores for tests: the backends every store test runs on, and points with known vectors and payloads."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from store.interface import Point, VectorStore, folders_of, point_id

DIM = 8
MODEL = "test/clip-a"

# The real-server backend joins the suite only where a server is given (it is not skipped elsewhere:
# it is simply not collected).
BACKENDS = ["edge", "memory", "remote"] + (["server-url"] if os.environ.get("QDRANT_URL") else [])


class ServedEdge:
    """An EdgeStore as a running service holds it, behind the indexer's write path (api/internal_store.py),
    reached in this process through Starlette's TestClient from a loopback address."""

    TOKEN = "test-token"

    def __init__(self, folder: Path, collection: str) -> None:
        from starlette.applications import Starlette
        from starlette.routing import Route
        from starlette.testclient import TestClient

        from api.internal_store import InternalStore
        from api.store_calls import StoreCalls
        from store.qdrant_edge import EdgeStore

        self.store = EdgeStore(folder, collection)
        self.calls = StoreCalls(self.store, retry_after_s=1)
        self.internal = InternalStore(self.store, self.calls)
        self.internal.token = self.TOKEN
        app = Starlette(routes=[Route("/internal/store/{op}", self.internal.handle, methods=["POST"])])
        self.clients: list[TestClient] = []
        self.app = app

    def client(self, address: str = "127.0.0.1", **headers: str) -> Any:
        from starlette.testclient import TestClient

        client = TestClient(self.app, client=(address, 40000), headers=headers)
        self.clients.append(client)
        return client

    def remote(self) -> VectorStore:
        from store.via_service import RemoteStore

        return RemoteStore("http://testserver", self.TOKEN, client=self.client())

    def close(self) -> None:
        for client in self.clients:
            client.close()
        self.calls.thread.shutdown()
        self.store.close()


class Backend:
    """Opens stores on one backing storage; `open()` again gives a fresh handle on the same data."""

    def __init__(self, kind: str, tmp_path: Path) -> None:
        self.kind = kind
        self.folder = tmp_path / "qdrant"
        self.collection = "images"
        self.opened: list[VectorStore] = []
        self.client = None
        self.served: ServedEdge | None = None
        if kind == "remote":  # the indexer's view of a running service's embedded store (store/via_service.py)
            self.served = ServedEdge(self.folder, self.collection)
        if kind == "memory":
            from qdrant_client import QdrantClient

            self.client = QdrantClient(":memory:")
        elif kind == "server-url":
            self.collection = f"test_store_{uuid.uuid4().hex[:12]}"

    def open(self) -> VectorStore:
        store: VectorStore
        if self.served is not None:
            store = self.served.remote()
        elif self.kind == "edge":
            from store.qdrant_edge import EdgeStore

            store = EdgeStore(self.folder, self.collection)
        elif self.kind == "memory":
            from store.qdrant_server import ServerStore

            store = ServerStore(self.client, self.collection)  # type: ignore[arg-type]
        else:
            from store.qdrant_server import ServerStore

            store = ServerStore.from_url(os.environ["QDRANT_URL"], os.environ.get("QDRANT_API_KEY"),
                                         self.collection)
        self.opened.append(store)
        return store

    def cleanup(self) -> None:
        if self.kind == "server-url":
            from store.qdrant_server import ServerStore

            dropper = self.opened[0] if self.opened else self.open()
            assert isinstance(dropper, ServerStore)
            with contextlib.suppress(Exception):
                dropper.client.delete_collection(self.collection)
        for store in self.opened:
            if self.kind != "memory":
                store.close()
        if self.client is not None:
            self.client.close()
        if self.served is not None:
            self.served.close()


def unit_vectors(n: int, dim: int = DIM, seed: int = 0) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def payload_for(rel: str, i: int = 0) -> dict[str, object]:
    return {
        "path": rel,
        "content_hash": f"sha256:{i:064x}",
        "size": 1_234_567_890_123 + i,
        "mtime": 1_700_000_000.123456 + i,
        "width": 4032,
        "height": 3024,
        "indexed_at": "2025-01-02T03:04:05+00:00",
        "model_id": MODEL,
        "folders": folders_of(rel),
        "media": "image",
    }


def make_points(n: int, seed: int = 0, dim: int = DIM) -> list[Point]:
    vecs = unit_vectors(n, dim, seed)
    rels = [f"album/{seed}/photo {i}.jpg" for i in range(n)]
    return [Point(id=point_id(rel), vector=vec, payload=payload_for(rel, i))
            for i, (rel, vec) in enumerate(zip(rels, vecs, strict=True))]


def edge_store(folder: Path) -> VectorStore:
    from store.qdrant_edge import EdgeStore

    return EdgeStore(folder, "images")


# Fixtures the store tests share: a module imports them by these names (pytest finds fixtures in its namespace).
@pytest.fixture(params=BACKENDS, name="backend")
def each_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """The test runs once per backend."""
    b = Backend(request.param, tmp_path)
    yield b
    b.cleanup()


@pytest.fixture(name="store")
def store_with_collection(backend: Backend) -> VectorStore:
    """The backend's store with a collection of MODEL, DIM."""
    s = backend.open()
    s.ensure_collection(MODEL, DIM)
    return s
