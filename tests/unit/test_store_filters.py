"""The shared filter building (store/common.Store.filter_of) gives the same filter, and the same
results, on the embedded store (qdrant-edge-py) and the in-memory store (store.memory_store()), for
each SearchFilter field; and a field declared with on_payload() alone is enough to filter on it."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

from store import memory_store
from store.interface import AT_MOST, INDEXED_FIELDS, Point, SearchFilter, folders_of, on_payload, point_id
from store.qdrant_edge import EdgeStore
from store.qdrant_server import ServerStore

DIM = 8
MODEL = "test/filters"
T0 = 1_700_000_000.0
DAY = 86_400.0
N = 30
FOLDERS = ["", "a", "a/b", "ab", "z"]

Store = EdgeStore | ServerStore
Keep = Callable[[str, dict[str, Any]], bool]  # (point id, payload) -> does the filter keep it


def make_points() -> list[Point]:
    rng = np.random.default_rng(11)
    vectors = rng.standard_normal((N, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    points = []
    for i, vector in enumerate(vectors):
        folder = FOLDERS[i % len(FOLDERS)]
        rel = f"{folder}/p{i}.jpg" if folder else f"p{i}.jpg"
        payload = {"path": rel, "content_hash": f"h{i}", "size": 1000 * (i + 1), "mtime": T0 + i * DAY,
                   "width": 100 + 10 * i, "height": 50 + 20 * (i % 7), "folders": folders_of(rel),
                   "media": "video" if i % 4 == 0 else "image",
                   "ocr_norm": "金龙 golden dragon" if i % 3 == 0 else "dragon"}
        points.append(Point(point_id(rel), vector, payload))
    return points


POINTS = make_points()
EXCLUDED = (POINTS[0].id, POINTS[7].id)

# One row per SearchFilter field: a value that keeps some points but not all, and which points it keeps.
TABLE: dict[str, tuple[Any, Keep]] = {
    "folder": ("a", lambda pid, p: p["path"].startswith("a/")),
    "modified_after": (T0 + 10 * DAY, lambda pid, p: p["mtime"] >= T0 + 10 * DAY),
    "modified_before": (T0 + 5 * DAY, lambda pid, p: p["mtime"] <= T0 + 5 * DAY),
    "min_width": (300, lambda pid, p: p["width"] >= 300),
    "min_height": (130, lambda pid, p: p["height"] >= 130),
    "min_bytes": (12_000, lambda pid, p: p["size"] >= 12_000),
    "media": ("video", lambda pid, p: p["media"] == "video"),
    "exclude_ids": (EXCLUDED, lambda pid, p: pid not in EXCLUDED),
    "phrases": (("龙 golden",), lambda pid, p: "龙 golden" in p["ocr_norm"]),
}


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Store]]:
    made: dict[str, Store] = {"edge": EdgeStore(tmp_path_factory.mktemp("edge"), "images"),
                                    "memory": memory_store()}
    for store in made.values():
        store.ensure_collection(MODEL, DIM)
        store.upsert(POINTS)
    yield made
    for store in made.values():
        store.close()


def expected(query: np.ndarray, keep: Keep) -> list[str]:
    kept = [p for p in POINTS if keep(p.id, p.payload)]
    return [p.id for p in sorted(kept, key=lambda p: -float(p.vector @ query))]


def neutral(engine_filter: Any) -> tuple[list[tuple[Any, ...]], list[str]]:
    """A filter of either engine as plain values: ([(key, match value) or (key, gte, lte)], excluded ids)."""
    must: list[tuple[Any, ...]] = []
    for c in engine_filter.must or []:
        if c.match is not None:
            must.append((c.key, getattr(c.match, "value", None) or c.match.substring))
        else:
            must.append((c.key, c.range.gte, c.range.lte))
    excluded: list[str] = []
    for c in engine_filter.must_not or []:
        ids = getattr(c, "point_ids", None) or getattr(c, "has_id", None) or []
        excluded += sorted(str(i) for i in ids)
    return must, excluded


def test_the_table_covers_every_filter_field() -> None:
    assert set(TABLE) == {f.name for f in dataclasses.fields(SearchFilter)}


@pytest.mark.parametrize("name", sorted(TABLE))
def test_each_field_builds_the_same_filter_on_both_backends(stores: dict[str, Store], name: str) -> None:
    value, _ = TABLE[name]
    where = SearchFilter(**{name: value})
    edge, memory = (neutral(stores[kind].filter_of(where)) for kind in ("edge", "memory"))
    assert edge == memory
    assert edge != ([], [])


@pytest.mark.parametrize("name", sorted(TABLE))
def test_each_field_keeps_the_same_points_on_both_backends(stores: dict[str, Store], name: str) -> None:
    value, keep = TABLE[name]
    query = POINTS[3].vector
    want = expected(query, keep)
    assert 0 < len(want) < N  # the row really filters
    for kind, store in stores.items():
        got = [h.id for h in store.search(query, N, SearchFilter(**{name: value}))]
        assert got == want, kind


def test_fields_combine_and_bounds_on_one_key_make_one_range(stores: dict[str, Store]) -> None:
    where = SearchFilter(folder="a", modified_after=T0 + 2 * DAY, modified_before=T0 + 25 * DAY, min_width=150)

    def keep(pid: str, p: dict[str, Any]) -> bool:
        return bool(p["path"].startswith("a/") and T0 + 2 * DAY <= p["mtime"] <= T0 + 25 * DAY and p["width"] >= 150)

    query = POINTS[9].vector
    for kind, store in stores.items():
        must, _ = neutral(store.filter_of(where))
        assert ("mtime", T0 + 2 * DAY, T0 + 25 * DAY) in must and len(must) == 3, kind
        assert [h.id for h in store.search(query, N, where)] == expected(query, keep), kind


@pytest.mark.parametrize("where", [None, SearchFilter(), SearchFilter(folder="")])
def test_no_condition_is_no_filter(stores: dict[str, Store], where: SearchFilter | None) -> None:
    for store in stores.values():
        assert store.filter_of(where) is None


def test_every_filter_key_has_its_declared_payload_index() -> None:
    for f in dataclasses.fields(SearchFilter):
        if f.metadata and f.metadata["index"]:  # phrases: an exact substring test, on a key with no index
            assert INDEXED_FIELDS[f.metadata["key"]] == f.metadata["index"], f.name


def test_a_declared_field_is_all_a_new_filter_needs(stores: dict[str, Store]) -> None:
    @dataclasses.dataclass(frozen=True)
    class WithMaxWidth(SearchFilter):
        max_width: int | None = on_payload("width", AT_MOST, "integer")

    where = WithMaxWidth(min_width=150, max_width=300)
    query = POINTS[1].vector
    want = expected(query, lambda pid, p: 150 <= p["width"] <= 300)
    for kind, store in stores.items():
        assert [h.id for h in store.search(query, N, where)] == want, kind
