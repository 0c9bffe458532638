"""The VectorStore contract, run against every backend (tests/helpers/stores.py):

- edge:       EdgeStore (qdrant-edge-py) in a tmp folder
- memory:     ServerStore over QdrantClient(":memory:")
- server-url: ServerStore against a real server, only when QDRANT_URL is set (a unique collection,
              dropped afterwards)

plus the embedded store on disk (its meta file, a second handle in this process, engine failures).
The process-level behaviour (folder lock held by another process, SIGKILL) is in
tests/integration/test_store_processes.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers.stores import (
    BACKENDS,
    DIM,
    MODEL,
    Backend,
    each_backend,  # noqa: F401 - a fixture
    edge_store,
    make_points,
    payload_for,
    unit_vectors,
)

from store.interface import (
    PAYLOAD_FIELDS,
    CollectionInfo,
    CollectionMissingError,
    ModelMismatchError,
    Point,
    StoreError,
    StoreLockedError,
    VectorStore,
    point_id,
)


@pytest.fixture
def store(backend: Backend) -> VectorStore:
    return backend.open()


# --- the contract, on every backend ----------------------------------------------------------------


def test_missing_collection(store: VectorStore) -> None:
    assert store.info() is None
    assert store.search(unit_vectors(1)[0], 5) == []
    assert store.count() == 0
    assert list(store.payloads()) == []
    assert store.vectors([point_id("a.jpg")]) == {}
    store.finish()
    with pytest.raises(CollectionMissingError):
        store.upsert(make_points(1))


def test_ensure_creates_and_info(store: VectorStore) -> None:
    store.ensure_collection(MODEL, DIM)
    assert store.info() == CollectionInfo(model_id=MODEL, dim=DIM)
    assert store.count() == 0
    assert store.search(unit_vectors(1)[0], 3) == []
    store.ensure_collection(MODEL, DIM)  # idempotent
    assert store.info() == CollectionInfo(model_id=MODEL, dim=DIM)


def test_model_mismatch(store: VectorStore) -> None:
    store.ensure_collection(MODEL, DIM)
    store.upsert(make_points(2))
    with pytest.raises(ModelMismatchError, match="test/clip-b"):
        store.ensure_collection("test/clip-b", DIM)
    with pytest.raises(ModelMismatchError, match="16"):
        store.ensure_collection(MODEL, 16)
    assert store.info() == CollectionInfo(model_id=MODEL, dim=DIM)
    assert store.count() == 2


def test_recreate_drops_points(store: VectorStore) -> None:
    store.ensure_collection(MODEL, DIM)
    store.upsert(make_points(3))
    store.ensure_collection("test/clip-b", 16, recreate=True)
    assert store.info() == CollectionInfo(model_id="test/clip-b", dim=16)
    assert store.count() == 0
    assert list(store.payloads()) == []
    store.upsert(make_points(2, dim=16))
    assert store.count() == 2
    store.ensure_collection("test/clip-b", 16, recreate=True)  # same model: still starts empty
    assert store.count() == 0


def test_search_ranking(store: VectorStore) -> None:
    store.ensure_collection(MODEL, DIM)
    points = make_points(30)
    store.upsert(points)
    query = unit_vectors(1, seed=99)[0]
    hits = store.search(query, 5)
    dots = {p.id: float(p.vector @ query) for p in points}
    best = sorted(dots, key=lambda k: dots[k], reverse=True)[:5]
    assert [h.id for h in hits] == best
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    for h in hits:
        assert h.score == pytest.approx(dots[h.id], abs=1e-4)
        assert h.payload["path"] == next(p.payload["path"] for p in points if p.id == h.id)
    assert len(store.search(query, 100)) == 30
    assert store.search(query, 0) == []
    # An exact match scores ~1.
    top = store.search(points[7].vector, 1)
    assert top[0].id == points[7].id and top[0].score == pytest.approx(1.0, abs=1e-4)


def test_upsert_same_id_replaces(store: VectorStore) -> None:
    store.ensure_collection(MODEL, DIM)
    points = make_points(3)
    store.upsert(points)
    new_vec = unit_vectors(1, seed=5)[0]
    store.upsert([Point(id=points[0].id, vector=new_vec, payload={**points[0].payload, "width": 1})])
    assert store.count() == 3
    payloads = dict(store.payloads())
    assert payloads[points[0].id]["width"] == 1
    np.testing.assert_allclose(store.vectors([points[0].id])[points[0].id], new_vec, atol=1e-5)
    assert store.search(new_vec, 1)[0].id == points[0].id


def test_delete(store: VectorStore) -> None:
    store.ensure_collection(MODEL, DIM)
    points = make_points(5)
    store.upsert(points)
    store.delete([points[1].id, points[3].id, point_id("never/indexed.jpg")])
    store.delete([])
    assert store.count() == 3
    left = {p.id for p in points} - {points[1].id, points[3].id}
    assert {i for i, _ in store.payloads()} == left
    assert {h.id for h in store.search(points[1].vector, 10)} == left
    assert set(store.vectors([p.id for p in points])) == left


def test_payloads_roundtrip_all_fields(store: VectorStore, monkeypatch: pytest.MonkeyPatch) -> None:
    # A tiny scroll page, so that paging is exercised too.
    from store import qdrant_base as common

    monkeypatch.setattr(common, "SCROLL_PAGE", 3)
    store.ensure_collection(MODEL, DIM)
    points = make_points(8)
    points[0].payload["path"] = "相册/夏天 ü.jpg"
    points[1].payload["width"] = np.int64(640)  # numpy scalars are stored as plain numbers
    points[1].payload["mtime"] = np.float64(1.5)
    store.upsert(points)
    got = dict(store.payloads())
    assert len(got) == 8
    for p in points:
        assert set(got[p.id]) == set(PAYLOAD_FIELDS)
        for key in PAYLOAD_FIELDS:
            want = p.payload[key]
            if isinstance(want, np.generic):
                want = want.item()
            assert got[p.id][key] == want, key
            assert type(got[p.id][key]) is type(want), key
    assert got[points[1].id]["width"] == 640


def test_payload_rejects_nested_values(store: VectorStore) -> None:
    store.ensure_collection(MODEL, DIM)
    with pytest.raises(StoreError, match="labels"):  # LIST_FIELDS (folders, tags) are the only lists
        store.upsert([Point(id=point_id("x.jpg"), vector=unit_vectors(1)[0], payload={"labels": ["a"]})])


def test_vectors_roundtrip(store: VectorStore) -> None:
    store.ensure_collection(MODEL, DIM)
    points = make_points(6)
    store.upsert(points)
    missing = point_id("not/here.jpg")
    got = store.vectors([points[0].id, points[4].id, missing])
    assert set(got) == {points[0].id, points[4].id}
    for p in (points[0], points[4]):
        assert got[p.id].dtype == np.float32 and got[p.id].shape == (DIM,)
        np.testing.assert_allclose(got[p.id], p.vector, atol=1e-5)
    assert store.vectors([]) == {}


def test_count(store: VectorStore) -> None:
    store.ensure_collection(MODEL, DIM)
    assert store.count() == 0
    store.upsert(make_points(4))
    store.upsert(make_points(3, seed=1))
    assert store.count() == 7


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != "memory"], indirect=True)
def test_reopen_after_close_keeps_data(backend: Backend) -> None:
    first = backend.open()
    first.ensure_collection(MODEL, DIM)
    points = make_points(10)
    first.upsert(points)
    first.delete([points[9].id])
    first.finish()
    first.close()
    first.close()  # idempotent

    second = backend.open()
    assert second.info() == CollectionInfo(model_id=MODEL, dim=DIM)
    assert second.count() == 9
    assert second.search(points[2].vector, 1)[0].id == points[2].id
    second.ensure_collection(MODEL, DIM)
    second.upsert(make_points(2, seed=3))  # no finish(): close() alone must keep it
    second.close()

    third = backend.open()
    assert third.count() == 11
    with pytest.raises(ModelMismatchError):
        third.ensure_collection("test/other", DIM)


def test_open_store_picks_backend(tmp_path: Path) -> None:
    from config import Settings
    from store import open_store
    from store.qdrant_edge import EdgeStore
    from store.qdrant_server import ServerStore

    edge = open_store(Settings(qdrant_url=None, qdrant_path=tmp_path / "q", qdrant_collection="c"))
    assert isinstance(edge, EdgeStore)
    assert edge.shard_path == tmp_path / "q" / "c"
    assert not (tmp_path / "q").exists()  # opening creates nothing
    server = open_store(Settings(qdrant_url="http://127.0.0.1:1", qdrant_collection="c", qdrant_shards=2))
    assert isinstance(server, ServerStore)
    assert server.shards == 2
    server.close()


def test_server_unreachable_names_qdrant_url() -> None:
    from store.qdrant_server import ServerStore

    store = ServerStore.from_url("http://127.0.0.1:1", None, "images")
    try:
        with pytest.raises(StoreError, match="QDRANT_URL"):
            store.count()
        with pytest.raises(StoreError, match="QDRANT_URL"):
            store.ensure_collection(MODEL, DIM)
    finally:
        store.close()


# --- the embedded store on disk ---------------------------------------------------------------------


def test_edge_unfinished_creation_is_replaced(tmp_path: Path) -> None:
    """A shard folder without its model record (a crash inside ensure_collection) counts as missing."""
    folder = tmp_path / "qdrant"
    s = edge_store(folder)
    s.ensure_collection(MODEL, DIM)
    s.upsert(make_points(2))
    s.close()
    (folder / "images.meta.json").unlink()

    s = edge_store(folder)
    assert s.info() is None
    assert s.count() == 0
    s.ensure_collection("test/clip-b", 4)
    assert s.info() == CollectionInfo(model_id="test/clip-b", dim=4)
    assert s.count() == 0
    s.close()
    assert sorted(p.name for p in folder.iterdir()) == [".images.create.lock", "images", "images.meta.json"]


def test_edge_meta_file_is_plain_json(tmp_path: Path) -> None:
    folder = tmp_path / "qdrant"
    s = edge_store(folder)
    s.ensure_collection(MODEL, DIM)
    meta = json.loads((folder / "images.meta.json").read_text())
    assert meta["model_id"] == MODEL and meta["dim"] == DIM
    s.close()


def test_edge_rejects_path_like_collection(tmp_path: Path) -> None:
    from store.qdrant_edge import EdgeStore

    for bad in ("", "..", "a/b", ".hidden"):
        with pytest.raises(StoreError):
            EdgeStore(tmp_path, bad)


def test_edge_same_process_second_handle_is_locked(tmp_path: Path) -> None:
    folder = tmp_path / "qdrant"
    first = edge_store(folder)
    first.ensure_collection(MODEL, DIM)
    second = edge_store(folder)
    with pytest.raises(StoreLockedError):
        second.count()
    first.close()
    assert second.count() == 0
    second.close()



# --- engine failures become StoreError ----------------------------------------------------------------


def test_invalid_point_id_is_a_store_error(store: VectorStore) -> None:
    store.ensure_collection(MODEL, DIM)
    with pytest.raises(StoreError):
        store.upsert([Point(id="not-a-uuid", vector=unit_vectors(1)[0], payload=payload_for("x.jpg"))])
    assert store.count() == 0


class PanicException(BaseException):
    """Named like pyo3's: what a Rust panic inside the engine raises (a BaseException)."""


class RaisingShard:
    def __init__(self, shard: object, exc: BaseException) -> None:
        self.shard, self.exc = shard, exc

    def __getattr__(self, name: str) -> object:
        return getattr(self.shard, name)

    def update(self, operation: object) -> None:
        raise self.exc


def test_edge_engine_panic_is_a_store_error(tmp_path: Path) -> None:
    from store.qdrant_edge import EdgeStore

    s = EdgeStore(tmp_path / "qdrant", "images")
    s.ensure_collection(MODEL, DIM)
    real = s._shard
    s._shard = RaisingShard(real, PanicException("called `Option::unwrap()` on a `None` value"))  # type: ignore[assignment]
    with pytest.raises(StoreError, match="Qdrant Edge upsert failed.*unwrap"):
        s.upsert(make_points(2))
    s._shard = RaisingShard(real, KeyboardInterrupt())  # type: ignore[assignment]
    with pytest.raises(KeyboardInterrupt):
        s.delete([point_id("a.jpg")])
    s._shard = real
    assert s.count() == 0
    s.close()


def test_edge_refuses_writes_when_the_disk_is_nearly_full(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    from store import qdrant_edge as edge

    free = {"bytes": edge.MIN_FREE_BYTES + 1000}
    real = shutil.disk_usage
    monkeypatch.setattr(edge.shutil, "disk_usage", lambda path: real(path)._replace(free=free["bytes"]))
    s = edge_store(tmp_path / "qdrant")
    s.ensure_collection(MODEL, DIM)  # needs only the reserve
    for write in (lambda: s.upsert(make_points(1)), lambda: s.delete([point_id("a.jpg")])):
        with pytest.raises(StoreError, match=r"not enough free disk space .*\(QDRANT_PATH\): 64 MiB free"):
            write()
    assert s.count() == 0
    free["bytes"] = edge.MIN_FREE_BYTES + 10**6
    s.upsert(make_points(3))
    free["bytes"] = edge.MIN_FREE_BYTES + 1000
    with pytest.raises(StoreError, match="not enough free disk space"):
        s.finish()  # the optimizer may copy the 3 points
    s.close()
    free["bytes"] = edge.MIN_FREE_BYTES - 1
    with pytest.raises(StoreError, match="not enough free disk space"):
        edge_store(tmp_path / "other").ensure_collection(MODEL, DIM)
    reopened = edge_store(tmp_path / "qdrant")
    with pytest.raises(StoreError, match="not enough free disk space"):
        reopened.ensure_collection(MODEL, DIM)  # the indexer opening it
    assert reopened.count() == 3  # reading is never refused
    reopened.close()
