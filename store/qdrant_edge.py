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

import fcntl
import json
import logging
import os
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import qdrant_edge as qe

from core.files import write_atomically
from store.interface import (
    RECOVERY,
    RRF_K,
    TEXT_VECTOR,
    CollectionInfo,
    IndexTuning,
    Point,
    Record,
    StoreDamagedError,
    StoreError,
    StoreFullError,
    StoreLockedError,
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


def free_space_problem(folder: Path) -> str | None:
    """Why the embedded store in `folder` (or the disk it will be created on) must not be opened now, or
    None: less than MIN_FREE_BYTES free. The engine maps its files into memory, and a write into a mapped
    file on a full disk kills the process with SIGBUS, with nothing in the log; the service checks this at
    start, as the indexer checks before its writes."""
    probe = Path(folder)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        free = shutil.disk_usage(probe).free
    except OSError:
        return None  # opening will tell
    if free >= MIN_FREE_BYTES:
        return None
    return (f"not enough free disk space for the vector store in {folder} (QDRANT_PATH): {free / 2**20:.0f} MiB "
            f"free, at least {MIN_FREE_BYTES / 2**20:.0f} MiB needed to open it safely. Free some space (or move "
            "QDRANT_PATH) and start the service again")
BYTES_PER_VALUE = 4  # float32
POINT_OVERHEAD = 1024  # payload, id tracker, WAL record framing (generous)
# What the engine says when a file of the shard is damaged (truncated or garbled): seen by damaging each
# kind of file (tests/integration/test_damaged_store.py). Any failure to open an existing shard that is
# neither "in use" nor "disk full" counts as damage too.
DAMAGE_SIGNS = ("is not readable", "out of bounds", "Gridstore", "InvalidData", "Failed to deserialize",
                "Failed to read segment", "Illegal segment", "corrupt", "unexpected end of file")


class EdgeStore(QdrantStore):
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
                with self._creation_lock():
                    # Another process may have made it while this one waited for the lock: use it.
                    current = self.info()
                    if current is not None and not recreate:
                        require_same_model(current, model_id, dim, self._where())
                        self._open()
                    else:
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
            if self._open_if_exists() is None:
                return
            self.flush()
            info = self.info()
            self._check_space(self.count() * _point_bytes(info.dim if info else 0))  # the optimizer copies them
            with self._guard("optimize"):
                self._require_open().optimize()

    def flush(self) -> None:
        """Make the writes so far durable (no index build; nothing when the collection does not exist).
        This is the end of an indexer run written through a service (store/via_service.py): the new points
        are searched exactly until the index is built (see unindexed_points)."""
        with self._lock:
            shard = self._open_if_exists()
            if shard is None:
                return
            with self._guard("flush"):
                shard.flush()
            self._unflushed = 0

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
                self._release()
                with self._guard("close"):
                    shard.close()
            self._unflushed = 0

    # --- the engine's primitives (see store/qdrant_base.py) ---------------------------------------------

    def _scroll(self, offset: Any, limit: int, vectors: bool = False) -> tuple[Sequence[Any], Any]:
        shard = self._require_open()
        with self._guard("scroll"):
            return shard.scroll(qe.ScrollRequest(offset=offset, limit=limit, with_payload=True, with_vector=vectors))

    def _restore(self, records: Sequence[Record]) -> None:
        shard = self._require_open()
        self._check_space(2 * len(records) * _point_bytes(len(records[0].vector)))  # type: ignore[arg-type]
        with self._guard("restore points"):
            batch = [qe.Point(r.id, _vectors_of(r), clean_payload(r.payload)) for r in records]
            shard.update(qe.UpdateOperation.upsert_points(batch))
        self._written(len(batch))

    def _retrieve(self, ids: list[str], vectors: bool = True, payload: list[str] | None = None) -> Sequence[Any]:
        shard = self._require_open()
        wanted: list[int | uuid.UUID | str] = list(ids)
        keys = False if payload is None else qe.PayloadSelector.Include(payload)
        with self._guard("retrieve"):
            # with_vector=True would also return the text vector: name the dense one.
            return shard.retrieve(wanted, with_payload=keys, with_vector=[""] if vectors else False)

    def _query(self, plan: Query, condition: Any, limit: int, offset: int) -> Sequence[Any]:
        shard = self._require_open()
        dense = None if plan.dense is None else qe.Query.Nearest(plan.dense)
        text = None if plan.words is None else qe.Query.Nearest(_sparse(plan.words), using=TEXT_VECTOR)
        params = search_params(qe, self.tuning, plan.exact)
        if plan.fused:
            depth = plan.depth(limit, offset)
            prefetches = [qe.Prefetch(limit=depth, query=dense, filter=condition, params=params)]
            if text is not None:
                prefetches.append(qe.Prefetch(limit=depth, query=text, filter=condition))
            request = qe.QueryRequest(limit=limit, offset=offset or None, prefetches=prefetches,
                                      query=qe.Fusion.Rrf(k=RRF_K),  # type: ignore[arg-type]  # stubs: Fusion only
                                      filter=condition, with_payload=True, with_vector=False)
        else:
            request = qe.QueryRequest(limit=limit, offset=offset or None, query=dense if dense is not None else text,
                                      filter=condition, with_payload=True, with_vector=False,
                                      params=None if dense is None else params)
        with self._guard("hybrid search" if plan.fused else "search" if dense is not None else "text search"):
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

    def _contains(self, key: str, text: str) -> Any:
        return qe.FieldCondition(key, match=qe.MatchSubstring(text))

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
            holder = self._holder()
            return StoreLockedError(
                f"the vector store folder {self.folder} is in use: {holder or 'another process'} has the "
                f"{self.collection!r} collection open (an embedded Qdrant store allows one process "
                "at a time). A running service (bentoml serve) takes the indexer's writes itself "
                "when its address file (.<collection>.service.json) is there; otherwise stop the "
                "process that holds the folder, or use a Qdrant server via QDRANT_URL.")
        if any(s in text for s in ("No space left", "os error 28", "File too large", "os error 27")):
            return StoreFullError(
                f"Qdrant Edge {what} failed on {self.shard_path}: the disk is full (or a file size limit "
                f"was reached): {text}. Free some space (or move QDRANT_PATH) and run the indexer again: "
                "it goes on where it stopped.")
        if what == "open" or any(s in text for s in DAMAGE_SIGNS):
            return StoreDamagedError(
                f"the vector store folder {self.folder} (QDRANT_PATH) is damaged: its collection "
                f"{self.collection!r} cannot be {'opened' if what == 'open' else 'read'} ({text}). {RECOVERY}")
        return StoreError(f"Qdrant Edge {what} failed on {self.shard_path}: {text}")

    def _make_folder(self) -> None:
        try:
            # never group-writable, whatever the umask: an indexer trusts the service file in it only then
            self.folder.mkdir(mode=0o755, parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the vector store folder {self.folder} (QDRANT_PATH): {exc}") from exc

    @contextmanager
    def _creation_lock(self) -> Iterator[None]:
        """Hold `.<collection>.create.lock` (an flock) while the collection is dropped or created: two
        processes creating it on an empty folder at once would otherwise each take the other's fresh
        shard for an unfinished one and drop it, losing its points. The second waits (creation takes
        well under a second), then finds the collection made and opens it (or is told who holds it)."""
        self._make_folder()
        fd = os.open(self.folder / f".{self.collection}.create.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    @property
    def holder_path(self) -> Path:
        """Who has the shard open: {"pid", "command", "since"}, written when this process opens it."""
        return self.folder / f".{self.collection}.holder.json"

    def _claim(self) -> None:
        record = {"pid": os.getpid(), "command": " ".join(sys.argv)[:300] or "python",
                  "since": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
        try:
            write_atomically(self.holder_path, json.dumps(record).encode("utf-8"))
        except OSError:
            pass  # only the "in use" message is less precise

    def _release(self) -> None:
        try:
            if json.loads(self.holder_path.read_text(encoding="utf-8")).get("pid") == os.getpid():
                self.holder_path.unlink()
        except (OSError, ValueError, AttributeError):
            pass

    def _holder(self) -> str:
        """ "process 1234 (python -m indexer), since ..." from the holder file, or "" when it says nothing."""
        try:
            record = json.loads(self.holder_path.read_text(encoding="utf-8"))
            return f"process {int(record['pid'])} ({record['command']}, since {record['since']})"
        except (OSError, ValueError, KeyError, TypeError):
            return ""

    def space_problem(self, points: int) -> str | None:
        """Why writing `points` new points, and the index build after them, will not fit on the disk
        (None when it will): the indexer warns before its run, so a long run does not stop midway."""
        info = self.info()
        dim = info.dim if info else 512
        need = MIN_FREE_BYTES + 2 * points * _point_bytes(dim) + (self.count() + points) * _point_bytes(dim)
        try:
            free = shutil.disk_usage(self.folder if self.folder.exists() else self.folder.parent).free
        except OSError:
            return None
        if free >= need:
            return None
        return (f"the disk of the vector store ({self.folder}, QDRANT_PATH) has {free / 2**20:.0f} MiB free; "
                f"writing {points} points and building their index needs about {need / 2**20:.0f} MiB. The run "
                "stops cleanly when the disk fills (run it again once space is freed: it goes on where it stopped).")

    def _check_space(self, need: int) -> None:
        """Raise StoreError when a write of about `need` bytes could fill the disk (see MIN_FREE_BYTES)."""
        try:
            free = shutil.disk_usage(self.folder).free
        except OSError:
            return  # the write itself will tell
        if free < MIN_FREE_BYTES + need:
            raise StoreFullError(
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
        quantization = quantization_config(qe, t, qe.ScalarType.Int8) if t.quantization else None
        return qe.EdgeConfig(
            vectors=qe.EdgeVectorParams(size=dim, distance=qe.Distance.Cosine, on_disk=t.on_disk or None),
            hnsw_config=qe.HnswIndexConfig(m=t.m, ef_construct=t.ef_construct, full_scan_threshold=t.full_scan_kb),
            quantization_config=quantization,
            sparse_vectors={TEXT_VECTOR: qe.EdgeSparseVectorParams(modifier=qe.Modifier.Idf)} if text else None)

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
                self._claim()
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
            self._release()
            with self._guard("close"):
                shard.close()
        if trash is not None:
            shutil.rmtree(trash, ignore_errors=True)
        self._unflushed = 0

    def _create(self, model_id: str, dim: int) -> None:
        self._make_folder()
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
        self._claim()


def _vectors_of(record: Record) -> dict[str, Any]:
    vectors: dict[str, Any] = {"": as_vector(record.vector)}
    if record.text is not None:
        vectors[TEXT_VECTOR] = _sparse(record.text)
    return vectors


def _sparse(words: dict[int, float]) -> qe.SparseVector:
    return sparse_vector(qe, words)  # type: ignore[no-any-return]


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
