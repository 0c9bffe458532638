"""Search filters, paging and dedup in the store layer, on the embedded store (qdrant-edge-py) and the
server store (qdrant-client in ":memory:" mode, or a real server when QDRANT_URL is set); payload
indexes; and the indexer completing old payloads without re-embedding."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers.indexing import index
from helpers.stores import BACKENDS, Backend, unit_vectors
from qdrant_client import QdrantClient
from shapes import make_library

from runners.clip import ClipEncoder
from store import interface as base
from store.interface import INDEXED_FIELDS, Hit, Point, SearchFilter, VectorStore, folders_of, point_id
from store.qdrant_edge import EdgeStore
from store.qdrant_server import ServerStore

DIM = 8
MODEL = "test/clip-a"
DAY = 86_400.0
T0 = 1_700_000_000.0


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[VectorStore]:
    backend = Backend(request.param, tmp_path)
    made = backend.open()
    made.ensure_collection(MODEL, DIM)
    yield made
    backend.cleanup()


def library_points(n: int = 40, seed: int = 3) -> list[Point]:
    """Points spread over folders, dates and sizes; every 4th pair shares its content hash."""
    folders = ["", "a", "a/b", "ab", "a/b/c", "z"]
    points = []
    for i, vector in enumerate(unit_vectors(n, DIM, seed)):
        folder = folders[i % len(folders)]
        rel = f"{folder}/p{i}.jpg" if folder else f"p{i}.jpg"
        payload = {"path": rel, "content_hash": f"h{i // 2}" if i % 4 < 2 else f"u{i}", "size": 1000 * (i + 1),
                   "mtime": T0 + i * DAY, "width": 100 + 10 * i, "height": 50 + 20 * (i % 7),
                   "indexed_at": T0, "model_id": MODEL, "folders": folders_of(rel)}
        points.append(Point(point_id(rel), vector, payload))
    return points


def brute_force(points: list[Point], query: np.ndarray, keep: Any) -> list[str]:
    chosen = [p for p in points if keep(p.payload)]
    return [p.id for p in sorted(chosen, key=lambda p: -float(p.vector @ query))]


def ids(hits: list[Hit]) -> list[str]:
    return [h.id for h in hits]


def test_folders_of() -> None:
    assert folders_of("a/b/c.jpg") == ["a", "a/b"]
    assert folders_of("top.png") == []
    assert folders_of("相册/夏天/x.jpg") == ["相册", "相册/夏天"]


@pytest.mark.parametrize(("where", "keep"), [
    (SearchFilter(folder="a"), lambda p: p["path"].startswith("a/")),
    (SearchFilter(folder="a/b"), lambda p: p["path"].startswith("a/b/")),
    (SearchFilter(folder="ab"), lambda p: p["path"].startswith("ab/")),
    (SearchFilter(folder="nowhere"), lambda p: False),
    (SearchFilter(modified_after=T0 + 10 * DAY), lambda p: p["mtime"] >= T0 + 10 * DAY),
    (SearchFilter(modified_before=T0 + 5 * DAY), lambda p: p["mtime"] <= T0 + 5 * DAY),
    (SearchFilter(modified_after=T0 + 3 * DAY, modified_before=T0 + 20 * DAY),
     lambda p: T0 + 3 * DAY <= p["mtime"] <= T0 + 20 * DAY),
    (SearchFilter(min_width=300), lambda p: p["width"] >= 300),
    (SearchFilter(min_height=130), lambda p: p["height"] >= 130),
    (SearchFilter(min_bytes=25_000), lambda p: p["size"] >= 25_000),
    (SearchFilter(folder="a", min_width=200, modified_before=T0 + 30 * DAY),
     lambda p: p["path"].startswith("a/") and p["width"] >= 200 and p["mtime"] <= T0 + 30 * DAY),
    (SearchFilter(), lambda p: True),
])
def test_filters_keep_exactly_the_matching_points_in_rank_order(store: VectorStore, where: SearchFilter,
                                                                 keep: Any) -> None:
    points = library_points()
    store.upsert(points)
    query = unit_vectors(1, DIM, seed=77)[0]
    expected = brute_force(points, query, keep)
    assert ids(store.search(query, 100, where)) == expected
    assert ids(store.search(query, 3, where)) == expected[:3]


def test_exclude_ids_leaves_the_query_image_out(store: VectorStore) -> None:
    points = library_points()
    store.upsert(points)
    hits = store.search(points[5].vector, 5, SearchFilter(exclude_ids=(points[5].id,)))
    assert points[5].id not in ids(hits) and len(hits) == 5
    assert store.search(points[5].vector, 1)[0].id == points[5].id  # without it, it is the best match


def test_offset_pages_join_into_the_full_ranking(store: VectorStore) -> None:
    points = library_points()
    store.upsert(points)
    query = unit_vectors(1, DIM, seed=8)[0]
    full = ids(store.search(query, 40))
    pages = [ids(store.search(query, 7, offset=start)) for start in range(0, 42, 7)]
    assert sum(pages, []) == full
    assert store.search(query, 5, offset=40) == []
    where = SearchFilter(folder="a")
    filtered = ids(store.search(query, 40, where))
    assert ids(store.search(query, 2, where, offset=2)) == filtered[2:4]


def test_dedup_keeps_the_best_of_each_content_and_pages_consistently(store: VectorStore,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(base, "DEDUP_FETCH_FACTOR", 2)  # so that the fetch loop goes round several times
    points = library_points()
    store.upsert(points)
    query = unit_vectors(1, DIM, seed=9)[0]
    ranked = store.search(query, 40)
    best: dict[str, str] = {}
    for hit in ranked:
        best.setdefault(hit.payload["content_hash"], hit.id)
    expected = [h.id for h in ranked if best[h.payload["content_hash"]] == h.id]
    assert len(expected) < len(ranked)  # there are duplicates to collapse
    assert ids(store.search(query, 40, dedup=True)) == expected
    pages = [ids(store.search(query, 3, offset=start, dedup=True)) for start in range(0, 40, 3)]
    assert sum(pages, []) == expected
    hashes = [h.payload["content_hash"] for h in store.search(query, 10, dedup=True)]
    assert len(hashes) == len(set(hashes)) == 10
    in_a = ids(store.search(query, 40, SearchFilter(folder="a"), dedup=True))
    assert in_a and all(points[[p.id for p in points].index(i)].payload["path"].startswith("a/") for i in in_a)


def test_set_payloads_adds_fields_and_keeps_vectors(store: VectorStore) -> None:
    points = library_points(6)
    store.upsert(points)
    store.set_payloads({points[0].id: {"folders": ["x", "x/y"]}, points[1].id: {"folders": ["x", "x/y"]},
                        points[2].id: {"folders": []}})
    stored = dict(store.payloads())
    assert stored[points[0].id]["folders"] == ["x", "x/y"] == stored[points[1].id]["folders"]
    assert stored[points[2].id]["folders"] == [] and stored[points[2].id]["path"] == points[2].payload["path"]
    assert stored[points[3].id] == points[3].payload
    vectors = store.vectors([p.id for p in points])
    for p in points:
        np.testing.assert_allclose(vectors[p.id], p.vector, atol=1e-5)
    assert ids(store.search(points[0].vector, 5, SearchFilter(folder="x/y"))) == [points[0].id, points[1].id]


def test_missing_collection_searches_empty_with_filters(tmp_path: Path) -> None:
    edge = EdgeStore(tmp_path / "q", "none")
    server = ServerStore(QdrantClient(":memory:"), "none")
    for empty in (edge, server):
        assert empty.search(unit_vectors(1, DIM)[0], 5, SearchFilter(folder="a"), offset=3, dedup=True) == []


def schema(store: EdgeStore) -> set[str]:
    shard = store._require_open()
    return set(shard.info().payload_schema)


def test_edge_payload_indexes_on_create_and_on_an_existing_collection(tmp_path: Path) -> None:
    import qdrant_edge as qe

    store = EdgeStore(tmp_path / "q", "images")
    store.ensure_collection(MODEL, DIM)
    assert schema(store) == set(INDEXED_FIELDS)
    kinds = {name: info.data_type for name, info in store._require_open().info().payload_schema.items()}
    assert kinds["folders"] == qe.PayloadSchemaType.Keyword and kinds["mtime"] == qe.PayloadSchemaType.Float
    assert kinds["width"] == qe.PayloadSchemaType.Integer
    store.upsert(library_points())
    shard = store._require_open()
    for name in ("folders", "mtime"):  # as a collection made before these indexes existed
        shard.update(qe.UpdateOperation.delete_field_index(name))
    store.close()
    again = EdgeStore(tmp_path / "q", "images")
    again.ensure_collection(MODEL, DIM)
    assert schema(again) == set(INDEXED_FIELDS)
    again.ensure_collection(MODEL, DIM)  # idempotent
    assert again.count() == 40
    query = unit_vectors(1, DIM, seed=4)[0]
    assert ids(again.search(query, 40, SearchFilter(folder="a/b"))) == brute_force(
        library_points(), query, lambda p: p["path"].startswith("a/b/"))
    again.close()


def test_server_store_asks_for_payload_indexes(monkeypatch: pytest.MonkeyPatch) -> None:
    """qdrant-client's local mode ignores payload indexes, so the requests themselves are checked."""
    client = QdrantClient(":memory:")
    asked: list[tuple[str, Any]] = []
    monkeypatch.setattr(client, "create_payload_index",
                        lambda collection, name, field_schema, wait: asked.append((name, field_schema)))
    store = ServerStore(client, "images")
    store.ensure_collection(MODEL, DIM)
    assert {name for name, _ in asked} == set(INDEXED_FIELDS)
    assert dict(asked)["folders"].value == "keyword" and dict(asked)["mtime"].value == "float"
    asked.clear()
    store.ensure_collection(MODEL, DIM)  # an existing collection gets them too
    assert {name for name, _ in asked} == set(INDEXED_FIELDS)


# ---------------------------------------------------------------- the indexer


@pytest.fixture(scope="module")
def encoder(random_clip_dir: Path) -> ClipEncoder:
    return ClipEncoder(str(random_clip_dir), "cpu", model_id="random-clip")


@pytest.mark.parametrize("kind", ["edge", "server"])
def test_indexer_writes_folders_and_completes_old_payloads_without_embedding(
        kind: str, encoder: ClipEncoder, tmp_path: Path) -> None:
    store: Any = EdgeStore(tmp_path / "qdrant", "images") if kind == "edge" else \
        ServerStore(QdrantClient(":memory:"), "images")
    library = tmp_path / "lib"
    shapes = make_library(library, n_per_class=1, seed=5)
    index(store, encoder, library)
    stored = dict(store.payloads())
    assert all(stored[point_id(rel)]["folders"] == folders_of(rel) for rel in shapes)
    assert any(stored[point_id(rel)]["folders"] for rel in shapes)  # some are in subfolders
    before = store.vectors(list(stored))
    old = {pid: {k: v for k, v in p.items() if k != "folders"} for pid, p in stored.items()}
    store.delete(list(stored))  # as an index written before the field existed
    store.upsert([Point(pid, before[pid], payload) for pid, payload in old.items()])
    assert all("folders" not in p for _, p in store.payloads())

    summary, counting = index(store, encoder, library)
    assert counting.embedded == 0 and summary.unchanged == len(shapes)
    assert summary.payload_updated == len(shapes)
    stored = dict(store.payloads())
    assert all(stored[point_id(rel)]["folders"] == folders_of(rel) for rel in shapes)
    after = store.vectors(list(stored))
    assert all(np.allclose(after[pid], before[pid], atol=1e-6) for pid in before)  # vectors kept
    red = [rel for rel in shapes if rel.startswith("red/")]
    found = store.search(before[point_id(red[0])], 50, SearchFilter(folder="red"))
    assert sorted(h.payload["path"] for h in found) == sorted(red)

    again, counting = index(store, encoder, library)
    assert again.payload_updated == 0 and counting.embedded == 0
    store.close()
