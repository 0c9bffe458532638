"""The server vector store: a collection on a Qdrant server (QDRANT_URL), through qdrant-client.

The model record lives in the collection's own metadata (create_collection(metadata=...),
Qdrant server >= 1.16; qdrant-client's local ":memory:" mode keeps it too), so it is created and
dropped atomically with the collection. A collection without that record (made by another tool,
or by a server that ignores metadata) reports model_id "" and therefore never matches a model.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

from qdrant_client import QdrantClient, models
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from store.interface import (
    RRF_K,
    TEXT_VECTOR,
    CollectionInfo,
    CollectionMissingError,
    IndexTuning,
    Point,
    Record,
    StoreError,
    clean_payload,
)
from store.qdrant_base import (
    FACET_LIMIT,
    QdrantStore,
    Query,
    as_vector,
    quantization_config,
    require_same_model,
    same_payload_groups,
    search_params,
    sparse_vector,
)

UPSERT_CHUNK = 256


class ServerStore(QdrantStore):
    """VectorStore over one collection of a Qdrant server (or of a local qdrant-client)."""

    def __init__(self, client: QdrantClient, collection: str, shards: int = 1,
                 replication_factor: int = 1, tuning: IndexTuning | None = None) -> None:
        self.client = client
        self.collection = collection
        self.shards = shards
        self.replication_factor = replication_factor
        self.tuning = tuning or IndexTuning()
        self._text = False  # the collection is known to have the text vector
        options = getattr(client, "init_options", {}) or {}
        # qdrant-client's local mode (tests) searches exactly and warns about search_params.
        self.local = bool(options.get("path") or options.get("location") == ":memory:")
        self.location = str(options.get("url") or options.get("location") or options.get("host")
                            or options.get("path") or "the Qdrant server")

    @classmethod
    def from_url(cls, url: str, api_key: str | None, collection: str, shards: int = 1,
                 replication_factor: int = 1, timeout: int = 30, tuning: IndexTuning | None = None) -> ServerStore:
        try:
            # No compatibility check: it makes a request in the constructor; errors show up, with
            # a clear message, on the first operation instead.
            client = QdrantClient(url=url, api_key=api_key or None, timeout=timeout,
                                  check_compatibility=False)
        except Exception as exc:
            raise StoreError(f"invalid Qdrant server address {url!r} (QDRANT_URL): {exc}") from exc
        return cls(client, collection, shards=shards, replication_factor=replication_factor, tuning=tuning)

    def _where(self) -> str:
        return f"collection {self.collection!r} on {self.location}"

    # --- VectorStore -----------------------------------------------------------------------------

    def info(self) -> CollectionInfo | None:
        try:
            with self._guard("read the collection"):
                described = self.client.get_collection(self.collection)
        except CollectionMissingError:
            return None
        meta = described.config.metadata or {}
        params = described.config.params.vectors
        if not isinstance(params, models.VectorParams) or params.distance != models.Distance.COSINE:
            # Named vectors or another distance: not a collection this app made.
            return CollectionInfo(model_id="", dim=0)
        return CollectionInfo(model_id=str(meta.get("model_id", "")), dim=int(params.size))

    def ensure_collection(self, model_id: str, dim: int, recreate: bool = False) -> None:
        if dim <= 0:
            raise StoreError(f"invalid vector dimension {dim}")
        current = self.info()
        if current is not None and not recreate:
            require_same_model(current, model_id, dim, self._where())
            self._ensure_indexes()
            return
        if current is not None:
            with self._guard("drop the collection"):
                self.client.delete_collection(self.collection)
            self._text = False
        try:
            with self._guard("create the collection"):
                self.client.create_collection(
                    self.collection,
                    vectors_config=models.VectorParams(size=dim, distance=models.Distance.COSINE,
                                                       on_disk=self.tuning.on_disk or None),
                    sparse_vectors_config={TEXT_VECTOR: models.SparseVectorParams(modifier=models.Modifier.IDF)},
                    hnsw_config=models.HnswConfigDiff(m=self.tuning.m, ef_construct=self.tuning.ef_construct,
                                                      full_scan_threshold=self.tuning.full_scan_kb),
                    quantization_config=self._quantization(),
                    shard_number=self.shards,
                    replication_factor=self.replication_factor,
                    metadata={"model_id": model_id, "dim": dim},
                )
        except StoreError:
            # Another indexer may have created it meanwhile: accept it if it is the same model.
            current = self.info()
            if current is None:
                raise
            require_same_model(current, model_id, dim, self._where())
            self._ensure_indexes()
            return
        created = self.info()
        if created is None or created.model_id != model_id:
            raise StoreError(
                f"{self.location} did not keep the collection metadata that records the model; "
                "Qdrant server 1.16 or newer is needed (upgrade the server, or unset QDRANT_URL "
                "to use the embedded store in QDRANT_PATH).")
        self._ensure_indexes()

    def upsert(self, points: Sequence[Point]) -> None:
        for start in range(0, len(points), UPSERT_CHUNK):
            with self._guard("upsert points"):  # PointStruct raises a ValidationError for a bad id
                chunk = [models.PointStruct(id=p.id, vector=as_vector(p.vector),
                                            payload=clean_payload(p.payload))
                         for p in points[start:start + UPSERT_CHUNK]]
                self.client.upsert(self.collection, points=chunk, wait=True)

    def delete(self, ids: Sequence[str]) -> None:
        if not ids:
            return
        with self._guard("delete points"):
            self.client.delete(self.collection, points_selector=models.PointIdsList(points=list(ids)),
                               wait=True)

    def set_payloads(self, payloads: dict[str, dict[str, Any]]) -> None:
        for ids, fields in same_payload_groups(payloads):
            with self._guard("set payload"):
                self.client.set_payload(self.collection, payload=fields, points=list(ids), wait=True)

    def _quantization(self) -> models.ScalarQuantization | models.BinaryQuantization | None:
        if not self.tuning.quantization:
            return None
        config = quantization_config(models, self.tuning, models.ScalarType.INT8)
        if isinstance(config, models.BinaryQuantizationConfig):
            return models.BinaryQuantization(binary=config)
        return models.ScalarQuantization(scalar=config)

    def finish(self) -> None:
        """Nothing to do: writes used wait=True (applied and in the server's WAL), and the server's
        optimizers build the HNSW index in the background."""

    def flush(self) -> None:
        """Nothing to do: every write waited until the server had applied it (see finish)."""

    def close(self) -> None:
        self.client.close()

    # --- the engine's primitives (see store/qdrant_base.py) ---------------------------------------------

    def _scroll(self, offset: Any, limit: int, vectors: bool = False) -> tuple[Sequence[Any], Any]:
        with self._guard("scroll points"):
            return self.client.scroll(self.collection, limit=limit, offset=offset,
                                      with_payload=True, with_vectors=vectors)

    def _restore(self, records: Sequence[Record]) -> None:
        for start in range(0, len(records), UPSERT_CHUNK):
            with self._guard("restore points"):
                chunk = [models.PointStruct(id=r.id, vector=_vectors_of(r), payload=clean_payload(r.payload))
                         for r in records[start:start + UPSERT_CHUNK]]
                self.client.upsert(self.collection, points=chunk, wait=True)

    def _retrieve(self, ids: list[str], vectors: bool = True, payload: list[str] | None = None) -> Sequence[Any]:
        with self._guard("retrieve points"):
            # with_vectors=True would also return the text vector: name the dense one.
            return self.client.retrieve(self.collection, ids=ids, with_payload=payload or False,
                                        with_vectors=[""] if vectors else False)

    def _query(self, plan: Query, condition: Any, limit: int, offset: int) -> Sequence[Any]:
        params = None if self.local else search_params(models, self.tuning, plan.exact)
        text = None if plan.words is None else _sparse(plan.words)
        ranking: dict[str, Any]
        if plan.fused:
            depth = plan.depth(limit, offset)
            prefetch = [models.Prefetch(query=plan.dense, limit=depth, filter=condition, params=params)]
            if text is not None:
                prefetch.append(models.Prefetch(query=text, using=TEXT_VECTOR, limit=depth, filter=condition))
            ranking = {"prefetch": prefetch, "query": models.RrfQuery(rrf=models.Rrf(k=RRF_K))}
        elif plan.dense is not None:
            ranking = {"query": plan.dense, "search_params": params}
        else:
            ranking = {"query": text, "using": TEXT_VECTOR}
        with self._guard("hybrid search" if plan.fused else "search" if plan.dense is not None else "text search"):
            return self.client.query_points(self.collection, limit=limit, offset=offset or None,
                                            query_filter=condition, with_payload=True, with_vectors=False,
                                            **ranking).points

    def _has_text_vector(self) -> bool:
        if not self._text:
            with self._guard("read the collection"):
                sparse = self.client.get_collection(self.collection).config.params.sparse_vectors or {}
            self._text = TEXT_VECTOR in sparse
        return self._text

    def _add_text_vector(self) -> None:
        config = models.SparseVectorNameConfig(sparse=models.SparseVectorConfig(modifier=models.Modifier.IDF))
        try:
            with self._guard("add the text vector"):
                self.client.create_vector_name(self.collection, TEXT_VECTOR, config, wait=True)
        except CollectionMissingError:
            raise
        except StoreError as exc:
            raise StoreError(
                f"{exc}. {self._where()} was made before descriptions could be searched and this Qdrant "
                "cannot add the text vector to it (Qdrant server 1.17 or newer can): re-create the "
                "collection (python -m indexer --recreate), which re-embeds the library.") from exc
        self._text = True

    def _describe(self, updates: list[tuple[str, dict[str, Any], dict[int, float]]]) -> None:
        for start in range(0, len(updates), UPSERT_CHUNK):
            chunk = updates[start:start + UPSERT_CHUNK]
            operations: list[Any] = [
                models.SetPayloadOperation(set_payload=models.SetPayload(payload=fields, points=[pid]))
                for pid, fields, _ in chunk]
            operations.append(models.UpdateVectorsOperation(update_vectors=models.UpdateVectors(points=[
                models.PointVectors(id=pid, vector={TEXT_VECTOR: _sparse(words)}) for pid, _, words in chunk])))
            with self._guard("set descriptions"):  # one request per chunk
                self.client.batch_update_points(self.collection, update_operations=operations, wait=True)

    def _facet(self, key: str) -> dict[str, int]:
        with self._guard("count values"):
            found = self.client.facet(self.collection, key, limit=FACET_LIMIT, exact=True)
        return {str(hit.value): int(hit.count) for hit in found.hits if hit.count > 0}

    def _count(self) -> int:
        with self._guard("count points"):
            return int(self.client.count(self.collection, exact=True).count)

    def _index_names(self) -> set[str]:
        with self._guard("read the payload indexes"):
            return set(self.client.get_collection(self.collection).payload_schema or {})

    def _create_index(self, key: str, kind: str) -> None:
        with self._guard("create a payload index"), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # qdrant-client's local mode: "indexes have no effect"
            self.client.create_payload_index(self.collection, key, field_schema=models.PayloadSchemaType(kind),
                                             wait=True)

    def _match(self, key: str, value: Any) -> Any:
        return models.FieldCondition(key=key, match=models.MatchValue(value=value))

    def _range(self, key: str, low: float | None, high: float | None) -> Any:
        return models.FieldCondition(key=key, range=models.Range(gte=low, lte=high))

    def _contains(self, key: str, text: str) -> Any:
        return models.FieldCondition(key=key, match=models.MatchSubstring(substring=text))

    def _has_id(self, ids: list[str]) -> Any:
        return models.HasIdCondition(has_id=list(ids))

    def _filter(self, must: list[Any] | None, must_not: list[Any] | None) -> Any:
        return models.Filter(must=must, must_not=must_not)

    # --- internals -------------------------------------------------------------------------------

    def _error(self, exc: BaseException, what: str) -> StoreError | None:
        """qdrant-client's errors as StoreError; a missing collection as CollectionMissingError."""
        if not isinstance(exc, Exception):
            return None  # KeyboardInterrupt, SystemExit
        if isinstance(exc, UnexpectedResponse):
            return self._refused(exc, what)
        if isinstance(exc, ValueError):
            # qdrant-client's local mode (":memory:" or a path) raises ValueError("Collection x not found")
            if "not found" in str(exc).lower():
                return self._missing()
            return StoreError(f"cannot {what} for {self._where()}: {exc}")
        transport = type(exc).__module__.split(".")[0] in ("httpx", "httpcore", "grpc")
        if transport or isinstance(exc, (ResponseHandlingException, OSError, ConnectionError, TimeoutError)):
            return self._unreachable(what, exc)
        return StoreError(f"cannot {what} for {self._where()}: {exc}")

    def _refused(self, exc: UnexpectedResponse, what: str) -> StoreError:
        """The server answered with an error status."""
        detail = _response_text(exc)
        if exc.status_code == 404 and "collection" in detail.lower():
            return self._missing()
        if exc.status_code in (401, 403):
            return StoreError(f"{self.location} refused to {what} (HTTP {exc.status_code}): check QDRANT_API_KEY")
        return StoreError(f"{self.location} failed to {what} for {self._where()} "
                          f"(HTTP {exc.status_code}): {detail}")

    def _unreachable(self, what: str, exc: Exception) -> StoreError:
        return StoreError(
            f"cannot reach the Qdrant server at {self.location} (QDRANT_URL) to {what}: {exc}. "
            "Start the server or fix QDRANT_URL, or unset QDRANT_URL to use the embedded store "
            "in QDRANT_PATH.")


def _vectors_of(record: Record) -> dict[str, Any]:
    vectors: dict[str, Any] = {"": as_vector(record.vector)}
    if record.text is not None:
        vectors[TEXT_VECTOR] = _sparse(record.text)
    return vectors


def _sparse(words: dict[int, float]) -> models.SparseVector:
    return sparse_vector(models, words)  # type: ignore[no-any-return]


def _response_text(exc: UnexpectedResponse) -> str:
    content = exc.content
    text = content.decode("utf-8", "replace") if isinstance(content, bytes) else str(content)
    return text[:500] or str(exc)
