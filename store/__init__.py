"""Vector store: a Qdrant server when QDRANT_URL is set, else an embedded Qdrant Edge shard in QDRANT_PATH.

memory_store() is the test / in-memory store: qdrant-client's local mode, for fast unit tests of the
layers above the store (no folder, no server, nothing kept).

The backends are imported on demand: qdrant-client takes ~2 s to import, the embedded store
does not need it. What both backends share is in store/qdrant_base.py.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from store.interface import (
    PAYLOAD_FIELDS,
    POINT_NAMESPACE,
    CollectionInfo,
    CollectionMissingError,
    Hit,
    IndexTuning,
    ModelMismatchError,
    Point,
    StoreError,
    StoreLockedError,
    VectorStore,
    point_id,
)

if TYPE_CHECKING:
    from config import Settings
    from store.qdrant_server import ServerStore

__all__ = [
    "PAYLOAD_FIELDS",
    "POINT_NAMESPACE",
    "CollectionInfo",
    "CollectionMissingError",
    "Hit",
    "IndexTuning",
    "ModelMismatchError",
    "Point",
    "StoreError",
    "StoreLockedError",
    "VectorStore",
    "memory_store",
    "open_store",
    "open_store_for_writing",
    "point_id",
]


def open_store(settings: Settings) -> VectorStore:
    """The store the settings name. Opens nothing yet: the first operation connects / opens."""
    if settings.qdrant_url:
        from store.qdrant_server import ServerStore

        return ServerStore.from_url(
            settings.qdrant_url,
            settings.qdrant_api_key,
            settings.qdrant_collection,
            shards=settings.qdrant_shards,
            replication_factor=settings.qdrant_replication_factor,
            tuning=tuning_of(settings),
        )
    from store.qdrant_edge import EdgeStore

    return EdgeStore(settings.qdrant_path, settings.qdrant_collection, tuning_of(settings))


def open_store_for_writing(settings: Settings) -> VectorStore:
    """The store an indexer writes to. With QDRANT_URL: the server. With the embedded store: while a
    service runs on it (its address file is there and it answers), that service, through its internal
    write path (store/via_service.py), since the folder is locked to the service's process; else the folder
    itself, as open_store(). Raise StoreLockedError when the service's address file cannot be read."""
    if settings.qdrant_url:
        return open_store(settings)
    from store.via_service import RemoteStore, ServiceGoneError, read_service_file, service_file_path

    found = read_service_file(service_file_path(settings.qdrant_path, settings.qdrant_collection))
    if found is not None and found.collection == settings.qdrant_collection:
        remote = RemoteStore.from_file(found, settings.request_timeout_s)  # waits past the service's own
        try:
            remote.info()  # the service answers: write through it
            return remote
        except ServiceGoneError:  # nothing answers there: a service that was killed left its file behind
            remote.close()
        except BaseException:
            remote.close()
            raise
    return open_store(settings)


def tuning_of(settings: Settings) -> IndexTuning:
    tuning = IndexTuning(quantization=settings.qdrant_quantization != "none", hnsw_ef=settings.qdrant_hnsw_ef,
                         quantization_type=settings.qdrant_quantization, on_disk=settings.qdrant_on_disk)
    if settings.qdrant_oversampling:
        return replace(tuning, oversampling=settings.qdrant_oversampling, oversampling_set=True)
    return tuning


def memory_store(collection: str = "images", tuning: IndexTuning | None = None) -> ServerStore:
    """The test / in-memory store: a ServerStore over QdrantClient(location=":memory:"), qdrant-client's
    local mode. It behaves as the other stores do (filters, paging, dedup, model check) but searches
    exactly, accepts payload indexes without using them, and keeps nothing after close(). For unit
    tests of the upper layers; the service and the indexer use open_store()."""
    from qdrant_client import QdrantClient

    from store.qdrant_server import ServerStore

    return ServerStore(QdrantClient(location=":memory:"), collection, tuning=tuning)
