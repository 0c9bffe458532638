"""The vector store interface shared by the embedded (qdrant-edge-py) and server (qdrant-client) backends."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

# Point ids are UUID5 of the library-relative path (posix form): re-running the indexer
# writes the same ids, so an interrupted run converges on the clean run's collection.
POINT_NAMESPACE = uuid.UUID("6f9c3d2e-8a41-5b7c-9e0d-2a1b3c4d5e6f")

PAYLOAD_FIELDS = ("path", "content_hash", "size", "mtime", "width", "height", "indexed_at", "model_id")


def point_id(rel_path: str) -> str:
    return str(uuid.uuid5(POINT_NAMESPACE, rel_path))


@dataclass(frozen=True)
class IndexTuning:
    """How the collection is indexed and searched (both backends; chosen in BENCHMARKS.md, "Search at scale").

    HNSW m=16 / ef_construct=100 is Qdrant's default graph. Vectors are also kept as int8 (scalar
    quantization, in RAM): the graph is built and searched on them (~3x faster build, ~2x faster
    queries) and the best `oversampling * limit` candidates are rescored with the float vectors, so
    the final order and scores are exact cosines. `hnsw_ef` is the search-time beam width; segments
    under `full_scan_kb` of vectors (~5,000 512-d points) are searched exactly."""

    m: int = 16
    ef_construct: int = 100
    full_scan_kb: int = 10_000
    quantization: bool = True
    hnsw_ef: int = 256
    oversampling: float = 2.0


class StoreError(RuntimeError):
    """A store operation failed (server unreachable, disk error...). The message says what to do."""


class StoreLockedError(StoreError):
    """The embedded store folder is held by another process."""


class ModelMismatchError(StoreError):
    """The collection's vectors were made by another model (or another dimension)."""


class CollectionMissingError(StoreError):
    """The collection does not exist yet (the indexer has not run)."""


@dataclass(frozen=True)
class CollectionInfo:
    model_id: str
    dim: int


@dataclass
class Point:
    id: str
    vector: np.ndarray  # float32, L2-normalised, shape (dim,)
    payload: dict[str, Any] = field(default_factory=dict)


@dataclass
class Hit:
    id: str
    score: float  # cosine similarity
    payload: dict[str, Any]


class VectorStore(Protocol):
    def info(self) -> CollectionInfo | None:
        """The model that made this collection's vectors, or None when the collection does not exist."""

    def ensure_collection(self, model_id: str, dim: int, recreate: bool = False) -> None:
        """Create the collection if missing. Raise ModelMismatchError when it exists with another
        model id or dimension, unless `recreate` (then drop it and start empty)."""

    def upsert(self, points: Sequence[Point]) -> None: ...

    def delete(self, ids: Sequence[str]) -> None: ...

    def payloads(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """Every point's id and payload (no vectors)."""

    def vectors(self, ids: Sequence[str]) -> dict[str, np.ndarray]:
        """Stored vectors of the given ids (missing ids are left out)."""

    def search(self, vector: np.ndarray, limit: int) -> list[Hit]:
        """Nearest points by cosine similarity, best first. Empty list if the collection is missing."""

    def count(self) -> int:
        """Number of points; 0 when the collection is missing."""

    def finish(self) -> None:
        """Make writes durable and build the search index (end of an indexer run)."""

    def close(self) -> None: ...


# --- helpers shared by the backends -------------------------------------------------------------


def clean_payload(payload: dict[str, Any]) -> dict[str, Any]:
    """The payload as plain JSON values: numpy scalars become Python numbers, paths become strings.
    Raise StoreError for values that are not str/int/float/bool/None (the store keeps flat payloads)."""
    out: dict[str, Any] = {}
    for key, value in payload.items():
        if isinstance(value, np.generic):
            value = value.item()
        elif hasattr(value, "__fspath__"):
            value = str(value)
        if value is not None and not isinstance(value, (str, int, float)):
            raise StoreError(f"payload field {key!r} has a {type(value).__name__} value; "
                             "only str, int and float are stored")
        out[str(key)] = value
    return out


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
