"""What the two backends do the same way, written once: QdrantStore.

EdgeStore (qdrant-edge-py, store/qdrant_edge.py) and ServerStore (qdrant-client, store/qdrant_server.py) both
subclass QdrantStore. It holds the search filter building, the scroll loop (payloads), the chunked
retrieve loop (vectors), the search paging and dedup glue (search), the missing-collection answers
(empty results, count 0), the payload-index set-up and the settings both implementations share (FACET_LIMIT,
search params, int8/binary quantization, sparse vectors). Each backend supplies only its Qdrant
primitives, the abstract methods below: scroll one page, retrieve some ids, run one Query, count,
list / create payload indexes, make a match / range / has-id condition and a filter of them, and
turn a Qdrant error into a StoreError (used by _guard, around every Qdrant call). A primitive
raises CollectionMissingError when the collection does not exist and StoreError for any other
failure.

Adding a search filter field is one edit in store/: declare it in SearchFilter (store/interface.py)
with on_payload(payload key, MATCH / AT_LEAST / AT_MOST, index type), e.g.

    max_width: int | None = on_payload("width", AT_MOST, "integer")

QdrantStore.filter_of() turns it into a Qdrant condition on both implementations, and INDEXED_FIELDS
(derived from the declarations) makes ensure_collection() create the key's payload index on both
(any Qdrant index type name works: each backend maps the name onto its library's enum).
A new kind of test (other than MATCH / AT_LEAST / AT_MOST) would need one more primitive here.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from store.interface import (
    DEDUP_FETCH_FACTOR,
    HYBRID_DEPTH,
    INDEXED_FIELDS,
    RECOVERY,
    TEXT_FIELDS,
    TEXT_VECTOR,
    CollectionInfo,
    CollectionMissingError,
    Hit,
    IndexTuning,
    ModelMismatchError,
    Record,
    SearchFilter,
    StoreDamagedError,
    StoreError,
    clean_payload,
    description_text,
)
from store.text_terms import query_terms, terms

SCROLL_PAGE = 512  # points per scroll request
# A cosine lies in [-1, 1]; float32 rounding takes it a hair past. A score beyond this (garbled vector
# files gave ~7e37) means the store is damaged: the search is refused rather than answered wrongly.
COSINE_SLACK = 1e-3
RETRIEVE_CHUNK = 1024  # ids per retrieve request
FACET_LIMIT = 10_000  # distinct values counted by described_counts (one per describing model + prompt)


class QdrantStore(ABC):
    """The part of a VectorStore both Qdrant implementations share (see the module docstring)."""

    # --- reads, written once ---------------------------------------------------------------------

    def payloads(self) -> Iterator[tuple[str, dict[str, Any]]]:
        offset: Any = None
        while True:
            page, offset = self.payload_page(offset, SCROLL_PAGE)
            yield from page
            if offset is None or not page:
                return

    def payload_page(self, offset: Any, limit: int) -> tuple[list[tuple[str, dict[str, Any]]], Any]:
        """One page of payloads() from `offset` (None: the start) and the next page's offset (None after
        the last): what the service hands an indexer that writes through it (store/via_service.py)."""
        try:
            records, next_offset = self._scroll(offset, limit)
        except CollectionMissingError:
            return [], None
        return [(str(record.id), dict(record.payload or {})) for record in records], next_offset

    def records_page(self, offset: Any, limit: int) -> tuple[list[Record], Any]:
        try:
            records, next_offset = self._scroll(offset, limit, vectors=True)
        except CollectionMissingError:
            return [], None
        return [Record(str(r.id), default_vector(r.vector), text_vector(r.vector), dict(r.payload or {}))
                for r in records], next_offset

    def restore(self, records: Sequence[Record]) -> None:
        if not records:
            return
        for record in records:
            if record.vector is None:
                raise StoreError(f"point {record.id} has no CLIP vector: it cannot be restored as it is")
        if any(r.text is not None for r in records):
            self._ensure_text_vector()
        self._restore(records)

    def vectors(self, ids: Sequence[str]) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for record in self._records(ids):
            vector = default_vector(record.vector)
            if vector is not None:
                out[str(record.id)] = vector
        return out

    def payloads_of(self, ids: Sequence[str], keys: Sequence[str]) -> dict[str, dict[str, Any]]:
        return {str(record.id): dict(record.payload or {})
                for record in self._records(ids, vectors=False, payload=list(keys))}

    def _records(self, ids: Sequence[str], vectors: bool = True, payload: list[str] | None = None) -> Iterator[Any]:
        """_retrieve over any number of ids, RETRIEVE_CHUNK at a time; none when the collection is missing."""
        wanted = list(ids)
        for start in range(0, len(wanted), RETRIEVE_CHUNK):
            try:
                yield from self._retrieve(wanted[start:start + RETRIEVE_CHUNK], vectors, payload)
            except CollectionMissingError:
                return

    def search(self, vector: np.ndarray | None, limit: int, where: SearchFilter | None = None, offset: int = 0,
               dedup: bool = False, text: str | None = None) -> list[Hit]:
        if vector is None and text is None:
            raise StoreError("a search needs a vector, a text or both")
        dense = None if vector is None else as_vector(vector)
        condition = self.filter_of(where)
        try:
            words = query_terms(text) if text is not None and self._has_text_vector() else {}
            if dense is None and not words:
                return []  # no words, or no point was ever described

            # A text with no words beside a vector still fuses (one ranking): the scores stay RRF scores. Quoted
            # phrases (a test on a key with no index) make the dense ranking exact, so it misses no photo that holds
            # them however few do.
            plan = Query(dense, words or None, fused=dense is not None and text is not None,
                         exact=bool(where is not None and where.contains()))
            def query(n: int, skip: int) -> list[Hit]:
                return [_hit(p) for p in self._query(plan, condition, n, skip)]

            # With phrases, each page is cut from the top in one order that never ties (score, then path): equal
            # scores (the same sign in two photos, or two fused ranks that add up the same) may come back in
            # either order from one query to the next, and a page taken at an offset would repeat or skip one.
            # (Without phrases paging is as it always was.)
            hits = (search_pages(query, limit, offset, dedup) if not plan.exact or dedup
                    else stable_page(query, limit, offset))
        except CollectionMissingError:
            return []
        if text is None:
            self._check_cosines(hits)
        return hits

    def check(self) -> None:
        """A quick health probe (service and indexer start): count the points, then run the nearest search
        of one fixed direction and of its opposite, so a vector garbled into huge values (it scores first
        in one of the two) or an unreadable vector file raises StoreDamagedError. --verify reads everything."""
        info = self.info()
        if info is None or info.dim <= 0 or self.count() == 0:
            return
        probe = np.random.default_rng(0).standard_normal(info.dim).astype(np.float32)
        probe /= np.linalg.norm(probe)
        for direction in (probe, -probe):
            self.search(direction, 1)

    def _check_cosines(self, hits: list[Hit]) -> None:
        """Refuse scores a cosine cannot give (see COSINE_SLACK): the store's vector files are damaged."""
        bad = [h.score for h in hits if not abs(h.score) <= 1 + COSINE_SLACK]  # NaN fails the test too
        if bad:
            raise StoreDamagedError(
                f"{self._where()} answered a similarity of {bad[0]:.3g}, which a cosine cannot be: its vector "
                f"files are damaged (`python -m indexer --verify` lists the damaged points). {RECOVERY}")

    def set_descriptions(self, described: dict[str, dict[str, Any]]) -> None:
        if not described:
            return
        self._ensure_text_vector()
        # The text vector holds the words of every TEXT_FIELDS field of the point: those given here over those it
        # holds (a described photo's read text, a read photo's description).
        held = {str(record.id): dict(record.payload or {})
                for record in self._retrieve(list(described), vectors=False, payload=list(TEXT_FIELDS))}
        updates = [(pid, clean_payload(fields), terms(description_text({**held[pid], **fields})))
                   for pid, fields in described.items() if pid in held]  # a photo deleted meanwhile: skip
        if updates:
            self._describe(updates)

    def described_counts(self) -> dict[str, int]:
        return self._counts("described_by")

    def read_counts(self) -> dict[str, int]:
        return self._counts("ocr_by")

    def _counts(self, key: str) -> dict[str, int]:
        """Number of points per value of the payload `key`."""
        try:
            if key in self._index_names():
                return self._facet(key)
            counts: dict[str, int] = {}  # a collection from before the index: read every payload
            for _, payload in self.payloads():
                value = payload.get(key)
                if value is not None:
                    counts[str(value)] = counts.get(str(value), 0) + 1
            return counts
        except CollectionMissingError:
            return {}

    def _ensure_text_vector(self) -> None:
        """Add the text vector, and the payload indexes (described_by's), to a collection made before they
        existed. A collection made with the text vector got every index at creation; the backends cache
        _has_text_vector(), so this costs one check per handle."""
        if not self._has_text_vector():
            self._add_text_vector()
            self._ensure_indexes()

    def unindexed_points(self) -> int:
        """None here: Qdrant indexes in the background (EdgeStore counts its own)."""
        return 0

    def count(self) -> int:
        """Number of points; 0 when the collection is missing."""
        try:
            return self._count()
        except CollectionMissingError:
            return 0

    def filter_of(self, where: SearchFilter | None) -> Any:
        """The Qdrant filter for a SearchFilter (None: no conditions)."""
        if where is None:
            return None
        must = [self._match(key, value) for key, value in where.matches().items()]
        must += [self._range(key, low, high) for key, (low, high) in where.ranges().items()]
        must += [self._contains(key, text) for key, text in where.contains()]
        must_not = [self._has_id(list(where.exclude_ids))] if where.exclude_ids else []
        if not must and not must_not:
            return None
        return self._filter(must or None, must_not or None)

    def _ensure_indexes(self) -> None:
        """Create the payload indexes of INDEXED_FIELDS that are missing (a repeated creation is
        harmless, so concurrent indexers are fine)."""
        present = self._index_names()
        for name, kind in INDEXED_FIELDS.items():
            if name not in present:
                self._create_index(name, kind)

    @contextmanager
    def _guard(self, what: str) -> Iterator[None]:
        """Run Qdrant calls: their failures become the StoreError that _error() makes; our own
        errors (CollectionMissingError included) pass through."""
        try:
            yield
        except StoreError:
            raise
        except BaseException as exc:
            error = self._error(exc, what)
            if error is None:
                raise
            raise error from exc

    def _missing(self) -> CollectionMissingError:
        return CollectionMissingError(
            f"{self._where()} does not exist yet: run the indexer (python -m indexer) first")

    # --- the Qdrant primitives -----------------------------------------------------------------

    @abstractmethod
    def info(self) -> CollectionInfo | None:
        """The model record (VectorStore.info)."""

    @abstractmethod
    def _where(self) -> str:
        """The collection and where it is, for messages."""

    @abstractmethod
    def _error(self, exc: BaseException, what: str) -> StoreError | None:
        """The StoreError for a Qdrant failure while doing `what`, or None to let `exc` through
        (KeyboardInterrupt, SystemExit)."""

    @abstractmethod
    def _scroll(self, offset: Any, limit: int, vectors: bool = False) -> tuple[Sequence[Any], Any]:
        """One page of records (with .id and .payload; with `vectors`, .vector: every vector by name,
        the dense one under "") from `offset` (None: the start), and the offset of the next page
        (None after the last)."""

    @abstractmethod
    def _restore(self, records: Sequence[Record]) -> None:
        """Upsert whole points: dense vector (never None here), text sparse vector if any, payload."""

    @abstractmethod
    def _retrieve(self, ids: list[str], vectors: bool = True, payload: list[str] | None = None) -> Sequence[Any]:
        """The records (with .id and, if `vectors`, .vector; with `payload`, .payload holding those keys, else no
        payload) of these ids; missing ids are left out."""

    @abstractmethod
    def _query(self, plan: Query, condition: Any, limit: int, offset: int) -> Sequence[Any]:
        """Points (with .id, .score, .payload) that match `condition` (a filter_of() result), best first,
        skipping the first `offset`, ranked as `plan` says (see Query)."""

    @abstractmethod
    def _has_text_vector(self) -> bool:
        """Whether the collection has the text sparse vector (collections made before it have not)."""

    @abstractmethod
    def _add_text_vector(self) -> None:
        """Add the text sparse vector (Modifier.IDF) to an existing collection; StoreError when the
        engine cannot (the message says to re-create the collection)."""

    @abstractmethod
    def _describe(self, updates: list[tuple[str, dict[str, Any], dict[int, float]]]) -> None:
        """For each (id, payload fields, text terms) of existing points: set those payload fields and
        replace the point's text vector by the terms ({}: an empty one), keeping the dense vector."""

    @abstractmethod
    def _facet(self, key: str) -> dict[str, int]:
        """Exact number of points per value of the keyword-indexed payload `key`."""

    @abstractmethod
    def _count(self) -> int:
        """Exact number of points."""

    @abstractmethod
    def _index_names(self) -> set[str]:
        """The payload keys that have an index."""

    @abstractmethod
    def _create_index(self, key: str, kind: str) -> None:
        """Create a payload index on `key`; `kind` is a Qdrant schema type name ("keyword", "float"...)."""

    @abstractmethod
    def _match(self, key: str, value: Any) -> Any:
        """Condition: the payload `key` equals `value` (for a list of values: one of them does)."""

    @abstractmethod
    def _range(self, key: str, low: float | None, high: float | None) -> Any:
        """Condition: low <= payload `key` <= high (None: unbounded on that side)."""

    @abstractmethod
    def _contains(self, key: str, text: str) -> Any:
        """Condition: the payload `key`'s text holds `text` (an exact substring: `key` has no full-text index)."""

    @abstractmethod
    def _has_id(self, ids: list[str]) -> Any:
        """Condition: the point is one of `ids`."""

    @abstractmethod
    def _filter(self, must: list[Any] | None, must_not: list[Any] | None) -> Any:
        """The filter that holds all of `must` and none of `must_not` (None: no such conditions)."""


def _hit(point: Any) -> Hit:
    return Hit(id=str(point.id), score=float(point.score), payload=dict(point.payload or {}))


def text_vector(vector: Any) -> dict[int, float] | None:
    """A record's text sparse vector as term -> weight (None when it has none)."""
    sparse = vector.get(TEXT_VECTOR) if isinstance(vector, dict) else None
    if sparse is None:
        return None
    return {int(i): float(v) for i, v in zip(sparse.indices, sparse.values, strict=True)}


def default_vector(vector: Any) -> np.ndarray | None:
    """A record's unnamed vector as float32 (the libraries give it bare or as {"": vector})."""
    if isinstance(vector, dict):
        vector = vector.get("")
    if vector is None:
        return None
    return np.asarray(vector, dtype=np.float32)


@dataclass(frozen=True)
class Query:
    """What ranks a search, for a backend's one _query():
    - `dense` only (not fused): nearest to the vector, by cosine;
    - `words` only (not fused): BM25 of the text vector's terms (a query_terms() result);
    - fused: one query, a dense prefetch and, unless `words` is None, a text prefetch, each of the first
      max(HYBRID_DEPTH, offset + limit) points matching the condition, fused by RRF (k = RRF_K); the
      fused list, filtered by the condition again."""

    dense: list[float] | None
    words: dict[int, float] | None
    fused: bool
    exact: bool = False  # rank the dense vectors by an exact scan of the points that match (no HNSW)

    def depth(self, limit: int, offset: int) -> int:
        """How many points each prefetch of a fused query ranks."""
        return max(HYBRID_DEPTH, offset + limit)


# --- the shared settings of both libraries: `lib` is qdrant_edge or qdrant_client.models (same class names) ----


def search_params(lib: Any, tuning: IndexTuning, exact: bool = False) -> Any:
    """The dense search's beam width and, with quantized vectors, the rescoring of the oversampled candidates
    (IndexTuning.rescore_oversampling x limit) with the float vectors (so the final order and scores are exact
    cosines)."""
    rescore = (lib.QuantizationSearchParams(rescore=True, oversampling=tuning.rescore_oversampling())
               if tuning.quantization else None)
    return lib.SearchParams(hnsw_ef=tuning.hnsw_ef, quantization=rescore, exact=exact)


def quantization_config(lib: Any, tuning: IndexTuning, int8: Any) -> Any:
    """The quantized copy of the vectors, kept in RAM: QDRANT_QUANTIZATION=int8 is scalar quantization (`int8`:
    the library's ScalarType member), binary one bit a dimension."""
    if tuning.quantization_type == "binary":
        return lib.BinaryQuantizationConfig(always_ram=True)
    return lib.ScalarQuantizationConfig(type=int8, quantile=0.99, always_ram=True)


def sparse_vector(lib: Any, words: dict[int, float]) -> Any:
    """The sparse vector of text terms (term id -> weight)."""
    return lib.SparseVector(indices=list(words), values=list(words.values()))


# --- the backends' own helpers -------------------------------------------------------------------


def as_vector(vector: Any) -> list[float]:
    """A float32 vector as the list of floats the Qdrant APIs take."""
    arr = np.asarray(vector, dtype=np.float32)
    if arr.ndim != 1:
        raise StoreError(f"a vector must be one-dimensional, got shape {arr.shape}")
    return arr.tolist()  # type: ignore[no-any-return]


def require_same_model(stored: CollectionInfo, model_id: str, dim: int, where: str) -> None:
    """Raise ModelMismatchError when the collection was made by another model or dimension."""
    if stored.model_id == model_id and stored.dim == dim:
        return
    made_by = f"{stored.model_id!r}" if stored.model_id else "an unrecorded model"
    raise ModelMismatchError(
        f"{where} holds {stored.dim}-dimensional vectors made by {made_by}, but the current model is "
        f"{model_id!r} ({dim} dimensions). Re-create the collection (indexer --recreate) to re-embed "
        "the library with the current model, or point QDRANT_COLLECTION at another collection.")


def search_pages(query: Callable[[int, int], list[Hit]], limit: int, offset: int, dedup: bool) -> list[Hit]:
    """Run a backend's `query(limit, offset)` for one page. With dedup, fetch from the top, more and
    more, until the collapsed list covers the page or the matches run out, so that page n+1 starts
    right after page n."""
    if limit <= 0:
        return []
    if not dedup:
        return query(limit, offset)
    wanted = offset + limit
    fetch = wanted * DEDUP_FETCH_FACTOR
    while True:
        hits = query(fetch, 0)
        unique = best_per_content(hits)
        if len(unique) >= wanted or len(hits) < fetch:
            return unique[offset:wanted]
        fetch *= DEDUP_FETCH_FACTOR


def stable_page(query: Callable[[int, int], list[Hit]], limit: int, offset: int) -> list[Hit]:
    """One page of a backend's `query(limit, offset)` cut from the hits in the order of score, then path: the same
    order for every page. Hits are fetched from the top, 2 x (offset + limit) of them and more while the last one
    fetched still ties with the page's last (which of several equal scores an engine returns is its choice)."""
    if limit <= 0:
        return []
    wanted = offset + limit
    fetch = 2 * wanted
    while True:
        hits = query(fetch, 0)
        ordered = sorted(hits, key=lambda h: (-h.score, str(h.payload.get("path", h.id))))
        if len(hits) < fetch or ordered[-1].score < ordered[min(len(ordered), wanted) - 1].score:
            return ordered[offset:wanted]
        fetch *= DEDUP_FETCH_FACTOR


def best_per_content(hits: list[Hit]) -> list[Hit]:
    """The first (best) hit of each content_hash, in order; hits without a hash are all kept. Equal
    scores (identical copies have identical vectors) are ordered by path first, so the copy kept, and
    so every page, is the same whatever number of hits Qdrant was asked for."""
    seen: set[str] = set()
    out = []
    for hit in sorted(hits, key=lambda h: (-h.score, str(h.payload.get("path", h.id)))):
        key = str(hit.payload.get("content_hash") or f"id:{hit.id}")
        if key not in seen:
            seen.add(key)
            out.append(hit)
    return out


def same_payload_groups(payloads: dict[str, dict[str, Any]]) -> list[tuple[list[str], dict[str, Any]]]:
    """(ids, fields) groups of points that get the same fields, so each group is one update."""
    groups: dict[str, tuple[list[str], dict[str, Any]]] = {}
    for pid, fields in payloads.items():
        clean = clean_payload(fields)
        groups.setdefault(json.dumps(clean, sort_keys=True), ([], clean))[0].append(pid)
    return list(groups.values())
