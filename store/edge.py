"""The embedded vector store: one Qdrant Edge shard (qdrant-edge-py) in a local folder.

Layout under `folder` (QDRANT_PATH):

    <collection>/                 the Qdrant Edge shard (engine files: wal/, segments/, edge_config.json)
    <collection>.meta.json        {"model_id": ..., "dim": ...}: which model made the vectors

The engine keeps the vector size in its own edge_config.json but has no place for user metadata,
so the model record lives in the JSON file beside the shard. That file is also the commit marker
of a collection: it is written (atomically) only after the shard was created, and removed first
when the collection is dropped. A shard folder without it is an unfinished creation, which
ensure_collection() replaces.

Only one process at a time can open a shard: the engine takes an exclusive lock on its write-ahead
log. A second opener gets StoreLockedError. The shard is opened lazily, on the first operation
that needs it, and held until close().
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import threading
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import qdrant_edge as qe

from store.base import (
    HYBRID_DEPTH,
    RRF_K,
    TEXT_VECTOR,
    CollectionInfo,
    IndexTuning,
    Point,
    StoreError,
    StoreLockedError,
    as_vector,
    clean_payload,
    require_same_model,
    same_payload_groups,
)
from store.common import EngineStore

log = logging.getLogger(__name__)

META_VERSION = 1
# Durability: the engine appends every update to its write-ahead log before update() returns. The
# WAL is an mmap'd file and update() makes no sync call (checked with strace), so the update sits in
# the OS page cache: a process killed right after upsert()/delete() returned (SIGKILL included)
# replays it at the next load; see test_edge_sigkill_after_upsert_keeps_points. So writes do not
# flush; that is the cheapest correct option. A flush (msync of the WAL + segments, fsync) costs
# ~8 ms per 32x512 batch, and only adds safety against an OS crash / power loss, which a re-run of
# the indexer repairs anyway (point ids are deterministic). To bound WAL replay at the next load
# (~0.2 s per 3,000 unflushed 512-d points) the store flushes once this many points were written
# since the last flush; finish() and close() flush too.
FLUSH_EVERY_POINTS = 8192
# Disk space: the engine writes through mmap'd sparse files, so on a full disk it cannot report an
# error: the process dies of SIGBUS (checked on a full tmpfs; opening a shard can already fill in a
# 32 MiB vector chunk). So the indexer's operations (ensure_collection, upsert, delete, finish) raise
# StoreError while less than this, plus an estimate of what the write needs, is free. Searching
# is never refused.
MIN_FREE_BYTES = 64 * 2**20
BYTES_PER_VALUE = 4  # float32
POINT_OVERHEAD = 1024  # payload, id tracker, WAL record framing (generous)
FACET_LIMIT = 10_000  # distinct values counted by described_counts (one per describing model + prompt)


class EdgeStore(EngineStore):
    """VectorStore over a Qdrant Edge shard stored in `folder / collection`."""

    def __init__(self, folder: Path, collection: str, tuning: IndexTuning | None = None) -> None:
        if (not collection or collection in (".", "..") or collection.startswith(".")
                or "/" in collection or "\\" in collection or "\0" in collection):
            raise StoreError(f"invalid collection name {collection!r} (QDRANT_COLLECTION): "
                             "use a plain name such as 'images'")
        self.folder = Path(folder)
        self.collection = collection
        self.tuning = tuning or IndexTuning()
        self._shard: qe.EdgeShard | None = None
        self._unflushed = 0
        self._lock = threading.RLock()
        self._text = False  # the shard is known to have the text vector

    # --- locations -------------------------------------------------------------------------------

    @property
    def shard_path(self) -> Path:
        return self.folder / self.collection

    @property
    def meta_path(self) -> Path:
        return self.folder / f"{self.collection}.meta.json"

    def _where(self) -> str:
        return f"collection {self.collection!r} in {self.folder}"

    # --- VectorStore -----------------------------------------------------------------------------

    def info(self) -> CollectionInfo | None:
        meta = self._read_meta()
        if meta is None or not self.shard_path.is_dir():
            return None
        return CollectionInfo(model_id=str(meta["model_id"]), dim=int(meta["dim"]))

    def ensure_collection(self, model_id: str, dim: int, recreate: bool = False) -> None:
        if dim <= 0:
            raise StoreError(f"invalid vector dimension {dim}")
        with self._lock:
            current = self.info()
            if current is not None and not recreate:
                require_same_model(current, model_id, dim, self._where())
                if self._shard is None:
                    self._check_space(0)  # loading may fill in a sparse 32 MiB vector file
                self._open()  # take the folder's lock now: fail before any embedding work
                self._ensure_indexes()
                return
            try:
                self._drop()
                self._create(model_id, dim)
            except OSError as exc:  # the meta file or the folder (the engine's own errors are StoreError)
                raise StoreError(f"cannot create {self._where()}: {exc}") from exc
            self._ensure_indexes()

    def upsert(self, points: Sequence[Point]) -> None:
        if not points:
            return
        shard = self._require_open()
        vectors = [as_vector(p.vector) for p in points]
        self._check_space(2 * len(points) * _point_bytes(len(vectors[0])))  # WAL and segment
        with self._guard("upsert"):  # qe.Point raises ValueError for an id that is not a UUID
            batch = [qe.Point(p.id, v, clean_payload(p.payload)) for p, v in zip(points, vectors, strict=True)]
            shard.update(qe.UpdateOperation.upsert_points(batch))
        self._written(len(batch))

    def delete(self, ids: Sequence[str]) -> None:
        if not ids:
            return
        shard = self._require_open()
        self._check_space(len(ids) * POINT_OVERHEAD)
        with self._guard("delete"):
            shard.update(qe.UpdateOperation.delete_points(list(ids)))
        self._written(len(ids))

    def set_payloads(self, payloads: dict[str, dict[str, Any]]) -> None:
        if not payloads:
            return
        shard = self._require_open()
        self._check_space(len(payloads) * POINT_OVERHEAD)
        with self._guard("set payload"):
            for ids, fields in same_payload_groups(payloads):
                shard.update(qe.UpdateOperation.set_payload(list(ids), fields))
        self._written(len(payloads))

    def finish(self) -> None:
        """Flush, then run the optimizers: they build the HNSW index once a segment passes the
        engine's indexing threshold (~10 MB of vectors, ~5,000 512-d points; below that a full
        scan is faster anyway). ~1.5 s for 6,000 512-d points on 2 cores; 9 s for 10,000 and 23 s
        for 20,000 on 2 busy cores, holding Python's GIL throughout (qdrant-edge-py does not release
        it), so a service never runs this while it serves: see unindexed_points()."""
        with self._lock:
            if not self.flush():
                return
            info = self.info()
            self._check_space(self.count() * _point_bytes(info.dim if info else 0))  # the optimizer copies them
            with self._guard("optimize"):
                self._require_open().optimize()

    def flush(self) -> bool:
        """Make the writes so far durable (no index build); False when the collection does not exist.
        This is the end of an indexer run written through a service (store/remote.py): the new points
        are searched exactly until the index is built (see unindexed_points)."""
        with self._lock:
            shard = self._open_if_exists()
            if shard is None:
                return False
            with self._guard("flush"):
                shard.flush()
            self._unflushed = 0
            return True

    def unindexed_points(self) -> int:
        """Points outside the HNSW index (written since the last finish(), e.g. through a running
        service). Searches scan them exactly: ~2 ms for 20,000 512-d points, so they stay correct and
        fast; the service builds the index at its next start when there are many (service.py)."""
        shard = self._open_if_exists()
        if shard is None:
            return 0
        with self._guard("info"):
            info = shard.info()
        return max(0, int(info.points_count) - int(info.indexed_vectors_count))

    def close(self) -> None:
        with self._lock:
            shard, self._shard = self._shard, None
            if shard is None:
                return
            try:
                with self._guard("flush"):
                    shard.flush()
            finally:
                with self._guard("close"):
                    shard.close()
            self._unflushed = 0

    # --- the engine's primitives (see store/common.py) ---------------------------------------------

    def _scroll(self, offset: Any, limit: int) -> tuple[Sequence[Any], Any]:
        shard = self._require_open()
        with self._guard("scroll"):
            return shard.scroll(qe.ScrollRequest(offset=offset, limit=limit, with_payload=True, with_vector=False))

    def _retrieve(self, ids: list[str], vectors: bool = True) -> Sequence[Any]:
        shard = self._require_open()
        wanted: list[int | uuid.UUID | str] = list(ids)
        with self._guard("retrieve"):
            # with_vector=True would also return the text vector: name the dense one.
            return shard.retrieve(wanted, with_payload=False, with_vector=[""] if vectors else False)

    def _query(self, vector: list[float], condition: Any, limit: int, offset: int) -> Sequence[Any]:
        shard = self._require_open()
        request = qe.QueryRequest(limit=limit, offset=offset or None, query=qe.Query.Nearest(vector),
                                  filter=condition, with_payload=True, with_vector=False,
                                  params=self._search_params())
        with self._guard("search"):
            return shard.query(request)

    def _query_text(self, words: dict[int, float], condition: Any, limit: int, offset: int) -> Sequence[Any]:
        shard = self._require_open()
        request = qe.QueryRequest(limit=limit, offset=offset or None,
                                  query=qe.Query.Nearest(_sparse(words), using=TEXT_VECTOR), filter=condition,
                                  with_payload=True, with_vector=False)
        with self._guard("text search"):
            return shard.query(request)

    def _query_hybrid(self, vector: list[float], words: dict[int, float] | None, condition: Any, limit: int,
                      offset: int) -> Sequence[Any]:
        shard = self._require_open()
        depth = max(HYBRID_DEPTH, offset + limit)
        prefetches = [qe.Prefetch(limit=depth, query=qe.Query.Nearest(vector), filter=condition,
                                  params=self._search_params())]
        if words is not None:
            prefetches.append(qe.Prefetch(limit=depth, query=qe.Query.Nearest(_sparse(words), using=TEXT_VECTOR),
                                          filter=condition))
        request = qe.QueryRequest(limit=limit, offset=offset or None, prefetches=prefetches,
                                  query=qe.Fusion.Rrf(k=RRF_K),  # type: ignore[arg-type]  # stubs: Fusion only
                                  filter=condition, with_payload=True, with_vector=False)
        with self._guard("hybrid search"):
            return shard.query(request)

    def _has_text_vector(self) -> bool:
        """The engine has no call that lists a shard's vectors; its edge_config.json (which it rewrites when
        a vector is added) does."""
        if not self._text:
            self._require_open()  # CollectionMissingError when there is no collection
            try:
                config = json.loads((self.shard_path / "edge_config.json").read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise StoreError(f"cannot read the configuration of {self.shard_path}: {exc}") from exc
            self._text = TEXT_VECTOR in (config.get("sparse_vectors") or {})
        return self._text

    def _add_text_vector(self) -> None:
        shard = self._require_open()
        self._check_space(0)
        with self._guard("add the text vector"):
            shard.update(qe.UpdateOperation.create_sparse_vector(TEXT_VECTOR, modifier=qe.Modifier.Idf))
        self._text = True

    def _describe(self, updates: list[tuple[str, dict[str, Any], dict[int, float]]]) -> None:
        shard = self._require_open()
        self._check_space(len(updates) * POINT_OVERHEAD * 4)  # payload and text vector, WAL and segment
        with self._guard("set descriptions"):
            for pid, fields, _ in updates:
                shard.update(qe.UpdateOperation.set_payload([pid], fields))
            shard.update(qe.UpdateOperation.update_vectors(
                [qe.PointVectors(pid, {TEXT_VECTOR: _sparse(words)}) for pid, _, words in updates]))
        self._written(len(updates))

    def _facet(self, key: str) -> dict[str, int]:
        shard = self._require_open()
        with self._guard("count values"):
            found = shard.facet(qe.FacetRequest(key, limit=FACET_LIMIT, exact=True))
        # The engine keeps reporting a value whose last point was changed, with count 0.
        return {str(hit.value): int(hit.count) for hit in found if hit.count > 0}

    def _count(self) -> int:
        shard = self._require_open()
        with self._guard("count"):
            return int(shard.count(qe.CountRequest(exact=True)))

    def _index_names(self) -> set[str]:
        shard = self._require_open()
        with self._guard("read the payload indexes"):
            return set(shard.info().payload_schema)

    def _create_index(self, key: str, kind: str) -> None:
        shard = self._require_open()
        schema = getattr(qe.PayloadSchemaType, kind.capitalize())  # "keyword" -> PayloadSchemaType.Keyword
        with self._guard("create a payload index"):
            shard.update(qe.UpdateOperation.create_field_index(key, schema))

    def _match(self, key: str, value: Any) -> Any:
        return qe.FieldCondition(key, match=qe.MatchValue(value))

    def _range(self, key: str, low: float | None, high: float | None) -> Any:
        return qe.FieldCondition(key, range=qe.RangeFloat(gte=low, lte=high))

    def _has_id(self, ids: list[str]) -> Any:
        return qe.HasIdCondition(set(ids))

    def _filter(self, must: list[Any] | None, must_not: list[Any] | None) -> Any:
        return qe.Filter(must=must, must_not=must_not)

    # --- internals -------------------------------------------------------------------------------

    def _error(self, exc: BaseException, what: str) -> StoreError | None:
        """The engine raises plain Exception, and PanicException (a BaseException) for a Rust panic."""
        if not isinstance(exc, Exception) and type(exc).__name__ != "PanicException":
            return None  # KeyboardInterrupt, SystemExit
        text = str(exc)
        if "WouldBlock" in text or "Resource temporarily unavailable" in text:
            return StoreLockedError(
                f"the vector store folder {self.folder} is in use: another process has the "
                f"{self.collection!r} collection open (an embedded Qdrant store allows one process "
                "at a time). A running service (bentoml serve) takes the indexer's writes itself "
                "when its address file (.<collection>.service.json) is there; otherwise stop the "
                "process that holds the folder, or use a Qdrant server via QDRANT_URL.")
        if any(s in text for s in ("No space left", "os error 28", "File too large", "os error 27")):
            return StoreError(
                f"Qdrant Edge {what} failed on {self.shard_path}: the disk is full (or a file size limit "
                f"was reached): {text}. Free some space (or move QDRANT_PATH) and run the indexer again: "
                "it goes on where it stopped.")
        return StoreError(f"Qdrant Edge {what} failed on {self.shard_path}: {text}")

    def _check_space(self, need: int) -> None:
        """Raise StoreError when a write of about `need` bytes could fill the disk (see MIN_FREE_BYTES)."""
        try:
            free = shutil.disk_usage(self.folder).free
        except OSError:
            return  # the write itself will tell
        if free < MIN_FREE_BYTES + need:
            raise StoreError(
                f"not enough free disk space for the vector store in {self.folder} (QDRANT_PATH): "
                f"{free / 2**20:.0f} MiB free, {(MIN_FREE_BYTES + need) / 2**20:.0f} MiB wanted. Free some "
                "space (or move QDRANT_PATH) and run the indexer again: it goes on where it stopped.")

    def _read_meta(self) -> dict[str, Any] | None:
        try:
            text = self.meta_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StoreError(f"cannot read {self.meta_path}: {exc}") from exc
        try:
            meta = json.loads(text)
            str(meta["model_id"])
            int(meta["dim"])
        except (ValueError, KeyError, TypeError) as exc:
            raise StoreError(f"{self.meta_path} is damaged ({exc}); re-create the collection "
                             "(indexer --recreate)") from exc
        return meta  # type: ignore[no-any-return]

    def _write_meta(self, model_id: str, dim: int) -> None:
        data = json.dumps({"version": META_VERSION, "model_id": model_id, "dim": dim,
                           "distance": "Cosine"}, indent=2) + "\n"
        fd, tmp = tempfile.mkstemp(prefix=f".{self.collection}.meta.", suffix=".tmp", dir=self.folder)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.meta_path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        _fsync_dir(self.folder)

    def _config(self, dim: int, text: bool = False) -> qe.EdgeConfig:
        """The engine stores this config; loading an older shard with it applies the new HNSW and
        quantization settings from the next optimize() (the indexer's finish) on. `text`: with the
        text sparse vector (a new shard). Shards are loaded without it: the engine refuses to load a
        shard made before the text vector with a config that has it ("incompatible"), and loads one
        that has it with a config that lacks it, keeping the vector (set_descriptions adds it to an
        old shard)."""
        t = self.tuning
        quantization: qe.ScalarQuantizationConfig | qe.BinaryQuantizationConfig | None = None
        if t.quantization and t.quantization_type == "binary":
            quantization = qe.BinaryQuantizationConfig(always_ram=True)
        elif t.quantization:
            quantization = qe.ScalarQuantizationConfig(type=qe.ScalarType.Int8, quantile=0.99, always_ram=True)
        return qe.EdgeConfig(
            vectors=qe.EdgeVectorParams(size=dim, distance=qe.Distance.Cosine, on_disk=t.on_disk or None),
            hnsw_config=qe.HnswIndexConfig(m=t.m, ef_construct=t.ef_construct, full_scan_threshold=t.full_scan_kb),
            quantization_config=quantization,
            sparse_vectors={TEXT_VECTOR: qe.EdgeSparseVectorParams(modifier=qe.Modifier.Idf)} if text else None)

    def _search_params(self) -> qe.SearchParams:
        t = self.tuning
        rescore = (qe.QuantizationSearchParams(rescore=True, oversampling=t.rescore_oversampling())
                   if t.quantization else None)
        return qe.SearchParams(hnsw_ef=t.hnsw_ef, quantization=rescore)

    def _load(self, dim: int | None) -> qe.EdgeShard:
        # With a config, the engine checks it against the segments: a dimension that differs from
        # the one recorded in the meta file fails here instead of at the first search.
        with self._guard("open"):
            return qe.EdgeShard.load(str(self.shard_path), self._config(dim) if dim else None)

    def _open(self) -> qe.EdgeShard:
        with self._lock:
            if self._shard is None:
                info = self.info()
                if info is None:
                    raise self._missing()
                self._shard = self._load(info.dim)
            return self._shard

    def _open_if_exists(self) -> qe.EdgeShard | None:
        shard = self._shard
        if shard is not None:
            return shard
        with self._lock:
            if self._shard is None and self.info() is None:
                return None
            return self._open()

    def _require_open(self) -> qe.EdgeShard:
        return self._shard if self._shard is not None else self._open()

    def _written(self, n: int) -> None:
        self._unflushed += n
        if self._unflushed >= FLUSH_EVERY_POINTS:
            with self._lock:
                if self._shard is not None:
                    with self._guard("flush"):
                        self._shard.flush()
                self._unflushed = 0

    def _drop(self) -> None:
        """Remove the collection (meta first, so a crash midway leaves 'missing', never a
        half-dropped collection). Refuses with StoreLockedError while another process holds it."""
        shard = self._shard
        self._shard = None
        self._text = False
        if shard is None and self.shard_path.exists():
            try:
                shard = self._load(None)  # takes the lock, or says who holds it
            except StoreLockedError:
                raise
            except StoreError as exc:  # an unfinished/damaged shard: nothing to keep
                log.warning("dropping unreadable shard %s: %s", self.shard_path, exc)
                shard = None
        self.meta_path.unlink(missing_ok=True)
        for old in self.folder.glob(f".{self.collection}.trash-*"):
            shutil.rmtree(old, ignore_errors=True)
        if self.shard_path.exists():
            # Rename while still holding the lock, so no other process can open the old shard.
            trash = self.folder / f".{self.collection}.trash-{uuid.uuid4().hex}"
            os.replace(self.shard_path, trash)
        else:
            trash = None
        if shard is not None:
            with self._guard("close"):
                shard.close()
        if trash is not None:
            shutil.rmtree(trash, ignore_errors=True)
        self._unflushed = 0

    def _create(self, model_id: str, dim: int) -> None:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the vector store folder {self.folder} "
                             f"(QDRANT_PATH): {exc}") from exc
        self._check_space(0)
        with self._guard("create"):
            shard = qe.EdgeShard.create(str(self.shard_path), self._config(dim, text=True))
        self._text = True
        try:
            self._write_meta(model_id, dim)
        except BaseException:
            shard.close()
            raise
        self._shard = shard


def _sparse(words: dict[int, float]) -> qe.SparseVector:
    return qe.SparseVector(list(words), list(words.values()))


def _point_bytes(dim: int) -> int:
    """Disk bytes of one copy of a point: vector, payload and bookkeeping."""
    return dim * BYTES_PER_VALUE + POINT_OVERHEAD


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
