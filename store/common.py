"""What the two backends do the same way, written once: EngineStore.

EdgeStore (qdrant-edge-py, store/edge.py) and ServerStore (qdrant-client, store/server.py) both
subclass EngineStore. It holds the search filter building, the scroll loop (payloads), the chunked
retrieve loop (vectors), the search paging and dedup glue (search), the missing-collection answers
(empty results, count 0) and the payload-index set-up. Each backend supplies only its engine's
primitives, the abstract methods below: scroll one page, retrieve some ids, run one query, count,
list / create payload indexes, make a match / range / has-id condition and a filter of them, and
turn an engine error into a StoreError (used by _guard, around every engine call). A primitive
raises CollectionMissingError when the collection does not exist and StoreError for any other
failure.

Adding a search filter field is one edit in store/: declare it in SearchFilter (store/base.py)
with on_payload(payload key, MATCH / AT_LEAST / AT_MOST, index type), e.g.

    max_width: int | None = on_payload("width", AT_MOST, "integer")

EngineStore.filter_of() turns it into the engine's condition on both backends, and INDEXED_FIELDS
(derived from the declarations) makes ensure_collection() create the key's payload index on both
(any Qdrant index type name works: each backend maps the name onto its engine's enum).
A new kind of test (other than MATCH / AT_LEAST / AT_MOST) would need one more primitive here.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np

from store.base import (
    INDEXED_FIELDS,
    CollectionMissingError,
    Hit,
    SearchFilter,
    StoreError,
    as_vector,
    search_pages,
)

SCROLL_PAGE = 512  # points per scroll request
RETRIEVE_CHUNK = 1024  # ids per retrieve request


class EngineStore(ABC):
    """The engine-independent part of a VectorStore (see the module docstring)."""

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
        the last): what the service hands an indexer that writes through it (store/remote.py)."""
        try:
            records, next_offset = self._scroll(offset, limit)
        except CollectionMissingError:
            return [], None
        return [(str(record.id), dict(record.payload or {})) for record in records], next_offset

    def vectors(self, ids: Sequence[str]) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        wanted = list(ids)
        for start in range(0, len(wanted), RETRIEVE_CHUNK):
            try:
                records = self._retrieve(wanted[start:start + RETRIEVE_CHUNK])
            except CollectionMissingError:
                return out
            for record in records:
                vector = default_vector(record.vector)
                if vector is not None:
                    out[str(record.id)] = vector
        return out

    def search(self, vector: np.ndarray, limit: int, where: SearchFilter | None = None, offset: int = 0,
               dedup: bool = False) -> list[Hit]:
        query_vector = as_vector(vector)
        condition = self.filter_of(where)

        def query(n: int, skip: int) -> list[Hit]:
            found = self._query(query_vector, condition, n, skip)
            return [Hit(id=str(p.id), score=float(p.score), payload=dict(p.payload or {})) for p in found]

        try:
            return search_pages(query, limit, offset, dedup)
        except CollectionMissingError:
            return []

    def count(self) -> int:
        """Number of points; 0 when the collection is missing."""
        try:
            return self._count()
        except CollectionMissingError:
            return 0

    def filter_of(self, where: SearchFilter | None) -> Any:
        """The engine's filter for a SearchFilter (None: no conditions)."""
        if where is None:
            return None
        must = [self._match(key, value) for key, value in where.matches().items()]
        must += [self._range(key, low, high) for key, (low, high) in where.ranges().items()]
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
        """Run engine calls: their failures become the StoreError that _error() makes; our own
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

    # --- the engine's primitives -----------------------------------------------------------------

    @abstractmethod
    def _where(self) -> str:
        """The collection and where it is, for messages."""

    @abstractmethod
    def _error(self, exc: BaseException, what: str) -> StoreError | None:
        """The StoreError for an engine failure while doing `what`, or None to let `exc` through
        (KeyboardInterrupt, SystemExit)."""

    @abstractmethod
    def _scroll(self, offset: Any, limit: int) -> tuple[Sequence[Any], Any]:
        """One page of records (with .id and .payload, no vectors) from `offset` (None: the start),
        and the offset of the next page (None after the last)."""

    @abstractmethod
    def _retrieve(self, ids: list[str]) -> Sequence[Any]:
        """The records (with .id and .vector, no payload) of these ids; missing ids are left out."""

    @abstractmethod
    def _query(self, vector: list[float], condition: Any, limit: int, offset: int) -> Sequence[Any]:
        """Nearest points (with .id, .score, .payload) that match `condition` (a filter_of() result),
        best first, skipping the first `offset`."""

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
    def _has_id(self, ids: list[str]) -> Any:
        """Condition: the point is one of `ids`."""

    @abstractmethod
    def _filter(self, must: list[Any] | None, must_not: list[Any] | None) -> Any:
        """The filter that holds all of `must` and none of `must_not` (None: no such conditions)."""


def default_vector(vector: Any) -> np.ndarray | None:
    """A record's unnamed vector as float32 (engines give it bare or as {"": vector})."""
    if isinstance(vector, dict):
        vector = vector.get("")
    if vector is None:
        return None
    return np.asarray(vector, dtype=np.float32)
