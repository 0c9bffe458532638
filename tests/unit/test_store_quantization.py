"""QDRANT_QUANTIZATION=binary and QDRANT_ON_DISK on each backend: the collection is made with them, searches
still rank by exact cosine (the float vectors rescore the oversampled binary candidates)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers.stores import MODEL, make_points, unit_vectors

from store import memory_store, tuning_of
from store.interface import BINARY_OVERSAMPLING, IndexTuning, Point
from store.qdrant_edge import EdgeStore

DIM = 64
BINARY = IndexTuning(quantization_type="binary", on_disk=True, full_scan_kb=1)  # indexed, not scanned


def fill(store: Any, n: int = 400) -> list[Point]:
    points = make_points(n, dim=DIM)
    store.ensure_collection(MODEL, DIM)
    store.upsert(points)
    store.finish()
    return points


@pytest.mark.parametrize("backend", ["edge", "memory"])
def test_binary_quantization_with_vectors_on_disk_ranks_by_cosine(backend: str, tmp_path: Path) -> None:
    store: Any = EdgeStore(tmp_path / "q", "images", BINARY) if backend == "edge" else memory_store(tuning=BINARY)
    points = fill(store)
    for query in unit_vectors(10, DIM, seed=7):
        hits = store.search(query, 10)
        scores = [h.score for h in hits]
        assert len(hits) == 10 and scores == sorted(scores, reverse=True)
        best = {p.id: float(np.dot(p.vector, query)) for p in points}
        assert all(abs(h.score - best[h.id]) < 1e-4 for h in hits)  # rescored: exact cosines
    for point in points[:20]:  # a stored photo's own vector finds it first (recall: bench/quantization.py)
        assert store.search(point.vector, 1)[0].id == point.id
    store.close()


def test_the_setting_picks_the_quantization(settings_env: Any) -> None:
    assert tuning_of(settings_env(QDRANT_QUANTIZATION="binary", QDRANT_ON_DISK="true")) == IndexTuning(
        quantization_type="binary", on_disk=True)
    plain = tuning_of(settings_env(QDRANT_QUANTIZATION="none", QDRANT_ON_DISK="false"))
    assert not plain.quantization and not plain.on_disk
    assert BINARY.rescore_oversampling() == BINARY_OVERSAMPLING == 16.0 and IndexTuning().rescore_oversampling() == 2.0
    wider = tuning_of(settings_env(QDRANT_QUANTIZATION="binary", QDRANT_OVERSAMPLING="8"))
    assert wider.rescore_oversampling() == 8.0


def test_binary_shard_reopens_with_its_points(tmp_path: Path) -> None:
    store = EdgeStore(tmp_path / "q", "images", BINARY)
    points = fill(store, 50)
    store.close()
    again = EdgeStore(tmp_path / "q", "images", BINARY)
    assert again.count() == 50 and again.search(points[3].vector, 1)[0].id == points[3].id
    again.close()
