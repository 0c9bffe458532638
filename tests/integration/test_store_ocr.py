"""Read text (OCR fields) in the store, on every backend (tests/helpers/stores.py): the text vector holds a photo's
read text beside its description whichever is written first, quoted phrases are an exact substring filter (with
folder filters, paging and every ranking), read_counts, and the lines' payload round trip. No model: the stage
and the real reads are tested in tests/integration/test_ocr_indexing.py."""

from __future__ import annotations

import pytest
from helpers.stores import (  # noqa: F401 - fixtures
    BACKENDS,
    DIM,
    MODEL,
    Backend,
    each_backend,
    make_points,
    payload_for,
    store_with_collection,
    unit_vectors,
)

from runners.ocr import normalized, read_text_norm
from store.interface import Point, SearchFilter, StoreError, VectorStore, point_id


def read(*lines: str) -> dict[str, object]:
    return {"ocr_text": "\n".join(lines), "ocr_norm": read_text_norm(lines), "ocr_by": "ocr-test",
            "ocr_lines": [{"text": line, "confidence": 0.99, "box": [0.1, 0.1 * i, 0.5, 0.1 * i + 0.05],
                           "angle": 0.0} for i, line in enumerate(lines)]}


def ids(hits: list) -> list[str]:  # type: ignore[type-arg]
    return [h.id for h in hits]


def test_read_text_and_descriptions_share_the_text_vector_and_phrases_filter_exactly(store: VectorStore) -> None:
    points = make_points(8)
    store.upsert(points)
    p = [pt.id for pt in points]
    store.set_descriptions({p[0]: read("金龙面馆", "Golden Dragon"), p[1]: read("生日快乐 小明"),
                            p[2]: read("Dragon Fruit 火龙果"), p[3]: read("GOLDEN  dragon tea")})
    store.set_descriptions({p[0]: {"description": "一家餐馆", "described_by": "m"},  # described after being read
                            p[4]: {"description": "a golden retriever", "described_by": "m"}})
    store.set_descriptions({p[4]: read("Retriever Club")})  # read after being described
    # The words of both, whichever came first.
    assert set(ids(store.search(None, 10, text="餐馆"))) == {p[0]}
    assert set(ids(store.search(None, 10, text="面馆"))) == {p[0]}
    assert set(ids(store.search(None, 10, text="retriever"))) == {p[4]}
    assert set(ids(store.search(None, 10, text="club"))) == {p[4]}
    assert set(ids(store.search(None, 10, text="dragon"))) == {p[0], p[2], p[3]}
    # Quoted phrases: an exact substring of the normalized read text, in every ranking.
    golden = SearchFilter(phrases=(normalized("Golden Dragon"),))
    assert set(ids(store.search(None, 10, golden, text="golden dragon"))) == {p[0], p[3]}
    assert set(ids(store.search(unit_vectors(1, seed=5)[0], 10, golden))) == {p[0], p[3]}
    assert set(ids(store.search(unit_vectors(1, seed=5)[0], 10, golden, text="golden dragon"))) == {p[0], p[3]}
    assert store.search(None, 10, SearchFilter(phrases=("dragon golden",)), text="dragon golden") == []
    assert set(ids(store.search(None, 10, SearchFilter(phrases=(normalized("生日快乐小明"),)), text="生日"))) == {p[1]}
    both = SearchFilter(phrases=("dragon", normalized("火龙果")))
    assert ids(store.search(None, 10, both, text="dragon")) == [p[2]]
    # Paging cuts the filtered list: two pages of one, then nothing.
    pages = [ids(store.search(None, 1, golden, offset=k, text="golden dragon")) for k in range(3)]
    assert sorted(pages[0] + pages[1]) == sorted([p[0], p[3]]) and pages[2] == []
    assert store.read_counts() == {"ocr-test": 5}
    hit = store.search(None, 1, SearchFilter(phrases=("retriever club",)), text="club")[0]
    assert hit.payload["ocr_lines"][0] == {"text": "Retriever Club", "confidence": 0.99, "box": [0.1, 0.0, 0.5, 0.05],
                                           "angle": 0.0}
    assert hit.payload["description"] == "a golden retriever"


def test_phrases_combine_with_folder_filters(store: VectorStore) -> None:
    rels = ["trip/a.jpg", "trip/b.jpg", "home/c.jpg", "d.jpg"]
    points = [Point(point_id(rel), vec, payload_for(rel, i))
              for i, (rel, vec) in enumerate(zip(rels, unit_vectors(len(rels)), strict=True))]
    store.upsert(points)
    store.set_descriptions({point.id: read("Exit 出口") for point in points})
    where = SearchFilter(folder="trip", phrases=(normalized("exit 出口"),))
    assert set(ids(store.search(None, 10, where, text="exit"))) == {points[0].id, points[1].id}
    assert store.search(None, 10, SearchFilter(folder="trip", phrases=("exit出口x",)), text="exit") == []


def test_lines_that_are_not_plain_objects_are_refused(store: VectorStore) -> None:
    points = make_points(1)
    store.upsert(points)
    with pytest.raises(StoreError):
        store.set_descriptions({points[0].id: {"ocr_lines": [{"text": {"nested": 1}}]}})


def test_pages_of_a_phrase_never_repeat_or_skip_a_photo_when_scores_tie(store: VectorStore) -> None:
    points = make_points(5)
    store.upsert(points)
    store.set_descriptions({point.id: read("EXIT 出口") for point in points})  # the same text: BM25 ties
    where = SearchFilter(phrases=("exit出口",))
    query = unit_vectors(1, seed=9)[0]
    for vector, text in ((None, "exit"), (query, "exit"), (query, None)):
        pages = [ids(store.search(vector, 2, where, offset=k, text=text)) for k in (0, 2, 4, 6)]
        assert sorted(sum(pages, [])) == sorted(pt.id for pt in points), (vector is None, text)
        assert [len(page) for page in pages] == [2, 2, 1, 0]


def test_verify_checks_the_read_text(store: VectorStore) -> None:
    from indexer.verify import verify_store

    points = make_points(3)
    store.upsert(points)
    store.set_descriptions({points[0].id: read("Golden Dragon")})
    store.set_payloads({points[1].id: {"ocr_by": "x", "ocr_text": "EXIT"},  # set as payload alone: no text vector
                        points[2].id: {"ocr_norm": 3}})
    report = verify_store(store)
    assert sorted(report.problems) == [
        "a read-text field 'ocr_norm' that is not text", "read text without its text vector (text search misses it)"]
