"""Archives for tests (indexer/archive.py): a described collection to export, its whole contents, its answers."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from helpers.stores import DIM, MODEL, make_points
from indexer import archive
from indexer.archive import export_archive
from store.interface import IndexTuning, SearchFilter, VectorStore


def fill(store: VectorStore, n: int = 40, seed: int = 0, model: str = MODEL) -> list[str]:
    """`n` points, three in four described, in a collection of `model`; their ids."""
    store.ensure_collection(model, DIM)
    points = make_points(n, seed=seed)
    for p in points:
        p.payload["model_id"] = model
    store.upsert(points)
    # Descriptions of distinct lengths: distinct BM25 scores, so rankings have no ties to break.
    store.set_descriptions({p.id: {"description": ("red car" if i % 3 else "small dog") + " more" * (4 * i),
                                   "tags": ["outdoor", f"t{i}"], "visible_text": "收据" if i % 5 == 0 else None,
                                   "described_by": "tiny-vlm|p1"}
                            for i, p in enumerate(points) if i % 4})
    return [p.id for p in points]


def everything(store: VectorStore) -> dict[str, tuple[list[float], dict[int, float] | None, dict]]:  # type: ignore[type-arg]
    out = {}
    offset = None
    while True:
        page, offset = store.records_page(offset, 7)
        for r in page:
            assert r.vector is not None
            # qdrant-client's local mode keeps text weights as float64, the engines as float32
            text = None if r.text is None else {k: float(np.float32(v)) for k, v in r.text.items()}
            out[r.id] = (r.vector.tolist(), text, r.payload)
        if offset is None or not page:
            return out


def answers(store: VectorStore) -> list[list[tuple[float, list[str]]]]:
    """Vector, hybrid and text answers: (score, ids with that score) best first. Equal scores (RRF gives
    them: ranks 1+2 and 2+1) may come in either order, and the last group may be cut by the limit."""
    query = make_points(3, seed=9)
    runs = []
    for p in query:
        runs.append(store.search(p.vector, 10))
        runs.append(store.search(p.vector, 10, text="red car", where=SearchFilter(folder="album")))
    runs += [store.search(None, 10, text=t) for t in ("small dog", "收据", "outdoor t7")]
    out = []
    for hits in runs:
        groups: dict[float, list[str]] = {}
        for h in hits:
            groups.setdefault(round(h.score, 5), []).append(h.id)
        out.append([(score, sorted(ids)) for score, ids in groups.items()][:-1])
    return out


def export(store: VectorStore, path: Path) -> archive.ArchiveSummary:
    return export_archive(store, str(path), IndexTuning(), "images")


def everything_from(file: Path) -> dict[str, tuple[list[float], dict[int, float] | None, dict]]:  # type: ignore[type-arg]
    with archive.open_archive(file) as fh:
        _, records = archive.read_archive(fh, str(file))
        return {r.id: (r.vector.tolist(), r.text, r.payload) for r in records}  # type: ignore[union-attr]


def same_points(a: VectorStore, b: VectorStore) -> bool:
    """The same points, payloads and text vectors; dense vectors equal to float32 rounding (a Cosine
    collection normalises each vector it is given again, which may move its last bit)."""
    left, right = everything(a), everything(b)
    if left.keys() != right.keys():
        return False
    return all(left[k][1:] == right[k][1:] and np.allclose(left[k][0], right[k][0], rtol=0, atol=1e-6)
               for k in left)
