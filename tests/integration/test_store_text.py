"""Descriptions in the store: set_descriptions, text (BM25) and hybrid (RRF) search, described_counts,
run against every backend (tests/helpers/stores.py), plus collections made before the text vector."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers.stores import BACKENDS, DIM, MODEL, Backend, each_backend, make_points, store_with_collection, unit_vectors  # noqa: F401 - fixtures

from store.interface import Point, SearchFilter, StoreError, VectorStore, point_id


def ids(hits: list) -> list[str]:  # type: ignore[type-arg]
    return [h.id for h in hits]


def test_text_search_finds_words_of_the_description_visible_text_and_tags(store: VectorStore) -> None:
    points = make_points(6)
    store.upsert(points)
    store.set_descriptions({
        points[0].id: {"description": "草地上的一只小狗", "described_by": "m"},
        points[1].id: {"description": "A black Cat on a sofa", "described_by": "m"},
        points[2].id: {"description": "一张收据", "visible_text": "增值税发票 No.42", "described_by": "m"},
        points[3].id: {"description": "海边", "tags": ["sunset", "beach"], "described_by": "m"},
    })
    assert ids(store.search(None, 10, text="狗")) == [points[0].id]  # 狗 inside 小狗
    assert ids(store.search(None, 10, text="cat")) == [points[1].id]
    assert ids(store.search(None, 10, text="CAT")) == [points[1].id]
    assert ids(store.search(None, 10, text="发票")) == [points[2].id]
    assert ids(store.search(None, 10, text="Sunset")) == [points[3].id]
    assert store.search(None, 10, text="zebra") == []
    assert store.search(None, 10, text="!!") == []
    hit = store.search(None, 1, text="小狗")[0]
    assert hit.payload["description"] == "草地上的一只小狗" and hit.payload["path"] == points[0].payload["path"]
    assert hit.score > 0


def test_text_search_ranks_by_bm25_and_skips_undescribed_points(store: VectorStore) -> None:
    points = make_points(8)
    store.upsert(points)
    store.set_descriptions({
        points[5].id: {"description": "发票 发票 发票 on the table"},
        points[6].id: {"description": "出发 去 买票"},  # 发 and 票, not 发票
        points[7].id: {"description": "一张发票"},
    })
    hits = store.search(None, 10, text="发票")
    assert ids(hits) == [points[5].id, points[7].id, points[6].id]
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_hybrid_with_words_no_description_has_keeps_the_vector_ranking(store: VectorStore) -> None:
    points = make_points(30)
    store.upsert(points)
    store.set_descriptions({p.id: {"description": f"photo number {i}"} for i, p in enumerate(points[:10])})
    query = unit_vectors(1, seed=99)[0]
    vector_only = store.search(query, 12)
    assert ids(store.search(query, 12, text="zebra")) == ids(vector_only)
    assert ids(store.search(query, 12, text="")) == ids(vector_only)
    # The vector ranking with the cosine scores, unchanged by the descriptions.
    dots = {p.id: float(p.vector @ query) for p in points}
    assert ids(vector_only) == sorted(dots, key=lambda k: dots[k], reverse=True)[:12]


def test_hybrid_lifts_a_point_whose_description_matches(store: VectorStore) -> None:
    points = make_points(30)
    store.upsert(points)
    query = unit_vectors(1, seed=99)[0]
    ranking = ids(store.search(query, 30))
    lifted = ranking[14]
    store.set_descriptions({lifted: {"description": "a red kite over the beach"},
                            ranking[0]: {"description": "a grey wall"}})
    hits = store.search(query, 5, text="kite")
    # 1/(60+0) + 1/(60+14) beats the vector ranking's best alone, 1/(60+0).
    assert ids(hits) == [lifted] + [r for r in ranking if r != lifted][:4]
    assert lifted not in ids(store.search(query, 5))
    assert hits[0].score > hits[1].score > 0


def test_filters_and_paging_apply_to_text_and_hybrid(store: VectorStore) -> None:
    here, there = make_points(8, seed=0), make_points(8, seed=1)  # folders album/0 and album/1
    store.upsert(here + there)
    store.set_descriptions({p.id: {"description": "dog " * (i + 1) + "park"} for i, p in enumerate(here + there)})
    only_here = SearchFilter(folder="album/0")
    text_hits = store.search(None, 20, where=only_here, text="dog")
    assert set(ids(text_hits)) == {p.id for p in here}
    assert ids(text_hits) == [p.id for p in reversed(here)]  # more "dog" ranks higher
    query = unit_vectors(1, seed=7)[0]
    hybrid = store.search(query, 20, where=only_here, text="dog")
    assert set(ids(hybrid)) == {p.id for p in here}
    excluded = SearchFilter(exclude_ids=(here[7].id,))
    assert here[7].id not in ids(store.search(None, 20, where=excluded, text="dog"))
    assert here[7].id not in ids(store.search(query, 20, where=excluded, text="dog"))
    for text, vector in (("dog", None), ("dog", query)):
        whole = ids(store.search(vector, 9, text=text))
        pages = [ids(store.search(vector, 3, offset=start, text=text)) for start in (0, 3, 6)]
        assert sum(pages, []) == whole and len(whole) == 9
        assert store.search(vector, 3, offset=16, text=text) == []


def test_dedup_in_hybrid_keeps_one_copy(store: VectorStore) -> None:
    points = make_points(6)
    twin = Point(point_id("album/copy.jpg"), points[2].vector, {**points[2].payload, "path": "album/copy.jpg"})
    store.upsert([*points, twin])
    store.set_descriptions({points[2].id: {"description": "lighthouse"}, twin.id: {"description": "lighthouse"}})
    query = unit_vectors(1, seed=3)[0]
    both = ids(store.search(query, 7, text="lighthouse"))
    assert {points[2].id, twin.id} <= set(both[:2])
    one = ids(store.search(query, 6, text="lighthouse", dedup=True))
    assert len(one) == 6 and len({points[2].id, twin.id} & set(one)) == 1
    assert ids(store.search(query, 3, text="lighthouse", dedup=True, offset=3)) == one[3:]
    assert len(ids(store.search(None, 5, text="lighthouse", dedup=True))) == 1


def test_set_descriptions_keeps_vectors_and_other_payload(store: VectorStore) -> None:
    points = make_points(4)
    store.upsert(points)
    before = store.vectors([p.id for p in points])
    store.set_descriptions({points[0].id: {"description": "小狗", "visible_text": "", "tags": ["dog", "grass"],
                                           "described_by": "qwen|abc"},
                            point_id("deleted meanwhile.jpg"): {"description": "gone"}})
    after = store.vectors([p.id for p in points])
    assert set(after) == set(before)
    for pid in before:
        np.testing.assert_array_equal(after[pid], before[pid])
    payload = dict(store.payloads())[points[0].id]
    assert payload == {**points[0].payload, "description": "小狗", "visible_text": "", "tags": ["dog", "grass"],
                       "described_by": "qwen|abc"}
    assert store.count() == 4
    top = store.search(points[0].vector, 1)[0]
    assert top.id == points[0].id and top.score == pytest.approx(1.0, abs=1e-4)  # still the cosine


def test_a_new_description_replaces_the_old_words(store: VectorStore) -> None:
    points = make_points(3)
    store.upsert(points)
    store.set_descriptions({points[0].id: {"description": "a cat", "described_by": "old"}})
    store.set_descriptions({points[0].id: {"description": "a dog", "described_by": "new"}})
    assert store.search(None, 5, text="cat") == []
    assert ids(store.search(None, 5, text="dog")) == [points[0].id]
    assert store.described_counts() == {"new": 1}
    store.set_descriptions({points[0].id: {"description": "", "described_by": "new"}})  # nothing to say
    assert store.search(None, 5, text="dog") == []


def test_upsert_replaces_the_point_and_its_description(store: VectorStore) -> None:
    points = make_points(3)
    store.upsert(points)
    store.set_descriptions({points[0].id: {"description": "lighthouse", "described_by": "m"}})
    store.upsert([points[0]])  # the file's content changed: re-embedded, not described yet
    assert store.search(None, 5, text="lighthouse") == []
    assert "description" not in dict(store.payloads())[points[0].id]
    assert store.described_counts() == {}


def test_described_counts(store: VectorStore) -> None:
    assert store.described_counts() == {}
    points = make_points(5)
    store.upsert(points)
    assert store.described_counts() == {}
    store.set_descriptions({points[0].id: {"description": "a", "described_by": "m1"},
                            points[1].id: {"description": "b", "described_by": "m1"},
                            points[2].id: {"description": "c", "described_by": "m2"}})
    assert store.described_counts() == {"m1": 2, "m2": 1}
    store.delete([points[0].id])
    assert store.described_counts() == {"m1": 1, "m2": 1}


def test_missing_collection_and_no_query(backend: Backend) -> None:
    s = backend.open()
    assert s.search(None, 5, text="dog") == []
    assert s.search(unit_vectors(1)[0], 5, text="dog") == []
    assert s.described_counts() == {}
    s.ensure_collection(MODEL, DIM)
    with pytest.raises(StoreError, match="vector, a text or both"):
        s.search(None, 5)


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != "memory"], indirect=True)
def test_descriptions_survive_reopening(backend: Backend) -> None:
    s = backend.open()
    s.ensure_collection(MODEL, DIM)
    points = make_points(3)
    s.upsert(points)
    s.set_descriptions({points[1].id: {"description": "小狗", "described_by": "m"}})
    s.close()
    again = backend.open()
    assert ids(again.search(None, 5, text="狗")) == [points[1].id]
    assert again.described_counts() == {"m": 1}


# --- collections made before the text vector -------------------------------------------------------


def old_edge_shard(folder: Path, points: list[Point]) -> None:
    """A shard as the store made it before descriptions: no sparse vector, no described_by index."""
    import qdrant_edge as qe

    folder.mkdir(parents=True)
    shard = qe.EdgeShard.create(str(folder / "images"), qe.EdgeConfig(
        vectors=qe.EdgeVectorParams(size=DIM, distance=qe.Distance.Cosine)))
    shard.update(qe.UpdateOperation.upsert_points([qe.Point(p.id, p.vector.tolist(), p.payload) for p in points]))
    shard.flush()
    shard.close()
    (folder / "images.meta.json").write_text(json.dumps({"version": 1, "model_id": MODEL, "dim": DIM}))


def test_an_old_edge_shard_gains_the_text_vector_and_keeps_its_points(tmp_path: Path) -> None:
    from store.qdrant_edge import EdgeStore

    points = make_points(10)
    old_edge_shard(tmp_path / "qdrant", points)
    store = EdgeStore(tmp_path / "qdrant", "images")
    store.ensure_collection(MODEL, DIM)
    query = unit_vectors(1, seed=4)[0]
    ranking = ids(store.search(query, 10))
    assert store.search(None, 5, text="dog") == []  # nothing described, no text vector yet
    assert ids(store.search(query, 10, text="dog")) == ranking
    store.set_descriptions({points[3].id: {"description": "一只小狗", "described_by": "m"}})
    assert ids(store.search(None, 5, text="狗")) == [points[3].id]
    assert store.count() == 10 and store.described_counts() == {"m": 1}
    store.close()
    again = EdgeStore(tmp_path / "qdrant", "images")
    assert ids(again.search(None, 5, text="狗")) == [points[3].id]
    assert ids(again.search(query, 10)) == ranking
    assert set(again.vectors([p.id for p in points])) == {p.id for p in points}
    again.finish()  # the HNSW / optimizer pass over a shard with both vectors
    assert ids(again.search(None, 5, text="狗")) == [points[3].id]
    again.close()


def test_an_old_server_collection_gains_the_text_vector() -> None:
    from qdrant_client import QdrantClient, models

    from store.qdrant_server import ServerStore

    client = QdrantClient(":memory:")
    client.create_collection("images", vectors_config=models.VectorParams(size=DIM, distance=models.Distance.COSINE),
                             metadata={"model_id": MODEL, "dim": DIM})
    points = make_points(5)
    client.upsert("images", [models.PointStruct(id=p.id, vector=p.vector.tolist(), payload=p.payload)
                             for p in points])
    store = ServerStore(client, "images")
    store.ensure_collection(MODEL, DIM)
    assert store.search(None, 5, text="dog") == []
    store.set_descriptions({points[2].id: {"description": "a dog", "described_by": "m"}})
    assert ids(store.search(None, 5, text="DOG")) == [points[2].id]
    assert store.described_counts() == {"m": 1}
    client.close()


def test_a_server_that_cannot_add_the_text_vector_says_to_recreate(monkeypatch: pytest.MonkeyPatch) -> None:
    from qdrant_client import QdrantClient, models

    from store.qdrant_server import ServerStore

    client = QdrantClient(":memory:")
    client.create_collection("images", vectors_config=models.VectorParams(size=DIM, distance=models.Distance.COSINE),
                             metadata={"model_id": MODEL, "dim": DIM})
    points = make_points(2)
    store = ServerStore(client, "images")
    store.upsert(points)

    def refuse(*args: object, **kwargs: object) -> None:
        raise NotImplementedError("not supported by this server")

    monkeypatch.setattr(client, "create_vector_name", refuse)
    with pytest.raises(StoreError, match=r"python -m indexer --recreate"):
        store.set_descriptions({points[0].id: {"description": "a dog"}})
    client.close()
