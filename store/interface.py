"""The vector store interface shared by the embedded (qdrant-edge-py) and server (qdrant-client) backends."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

# Point ids are UUID5 of the library-relative path (posix form): re-running the indexer
# writes the same ids, so an interrupted run converges on the clean run's collection.
POINT_NAMESPACE = uuid.UUID("6f9c3d2e-8a41-5b7c-9e0d-2a1b3c4d5e6f")

PAYLOAD_FIELDS = ("path", "content_hash", "size", "mtime", "width", "height", "indexed_at", "model_id", "folders",
                  "media")
# A video's moment (indexer/moments.py) has these too: its index in the clip, the best frame's time and the
# moment's span, in seconds, and the clip's duration. Its `media` is "video" (a photo's "image").
MOMENT_FIELDS = ("moment", "t", "start", "end", "duration")
# What the indexer's describe stage writes (set_descriptions): the VLM's description of the photo, the
# text visible in it, its tags (a string or a list of strings) and which model + prompt wrote them.
DESCRIPTION_FIELDS = ("description", "visible_text", "tags", "described_by")
# What the indexer's OCR stage writes (indexer/ocr_stage.py, also through set_descriptions): the lines read in the
# photo (`ocr_lines`: a list of {text, confidence, box, angle}), their text (`ocr_text`, one line each), that text
# normalized for the exact test of quoted phrases (`ocr_norm`: runners/ocr/text.py) and which models and rules read
# them (`ocr_by`).
OCR_FIELDS = ("ocr_text", "ocr_lines", "ocr_norm", "ocr_by")
# The fields whose words make a point's "text" sparse vector (store/text_terms.py), in this order: the VLM's
# description and the text read by OCR, where a photo has both.
TEXT_FIELDS = ("description", "visible_text", "tags", "ocr_text")
TEXT_VECTOR = "text"  # the named sparse vector (Modifier.IDF) beside the unnamed dense CLIP vector
RRF_K = 60  # Reciprocal Rank Fusion constant of hybrid search: score = sum of 1 / (RRF_K + rank)
# Hybrid search fuses the first max(HYBRID_DEPTH, offset + limit) points of each ranking: a point that
# one ranking puts first and the other at rank 40 still gets both shares (with only offset + limit,
# a top-10 query would fuse two lists of 10 and mostly just interleave them). Pages within the first
# HYBRID_DEPTH points are cut from the same fused list, so they never overlap or skip.
HYBRID_DEPTH = 100
# Payload fields that hold a list of strings (every other field is a flat value, but LINES_FIELDS).
LIST_FIELDS = frozenset({"folders", "tags"})
# Payload fields that hold a list of objects of flat values and lists of numbers (the OCR stage's lines).
LINES_FIELDS = frozenset({"ocr_lines"})
DEDUP_FETCH_FACTOR = 4  # with dedup, ask the engine for this many times the hits needed, then more


def point_id(rel_path: str) -> str:
    return str(uuid.uuid5(POINT_NAMESPACE, rel_path))


@dataclass(frozen=True)
class IndexTuning:
    """How the collection is indexed and searched (both backends; chosen in BENCHMARKS.md, "Search at scale").

    HNSW m=32 / ef_construct=200 (Qdrant's defaults are 16 / 100; at 100k points recall 0.996 vs 0.924).
    Vectors are also kept as int8 (scalar
    quantization, in RAM): the graph is built and searched on them (~3x faster build, ~2x faster
    queries) and the best `oversampling * limit` candidates are rescored with the float vectors, so
    the final order and scores are exact cosines. `hnsw_ef` is the search-time beam width; segments
    under `full_scan_kb` of vectors (~5,000 512-d points) are searched exactly."""

    m: int = 32
    ef_construct: int = 200
    full_scan_kb: int = 10_000
    quantization: bool = True
    hnsw_ef: int = 512
    oversampling: float = 2.0
    # "int8" (scalar: 4x smaller than float32) or "binary" (1 bit a dimension: 32x smaller, coarser, so more
    # candidates are rescored: BINARY_OVERSAMPLING). Both kept in RAM; the float vectors rescore.
    quantization_type: str = "int8"
    on_disk: bool = False  # float vectors memory-mapped from disk (collections larger than RAM)

    oversampling_set: bool = False  # QDRANT_OVERSAMPLING given: used as it is, for binary too

    def rescore_oversampling(self) -> float:
        if self.quantization_type == "binary" and not self.oversampling_set:
            return max(self.oversampling, BINARY_OVERSAMPLING)
        return self.oversampling


# Binary codes keep the sign of each dimension only: the best limit * this many candidates are rescored with
# the float vectors. Measured (bench/quantization.py, BENCHMARKS "Quantization at 100,000 points"): recall@10
# 0.738 at 4x, 0.863 at 8x, 0.951 at 16x for 2.64 ms a query, so 16x (Qdrant's own guidance of 2-4x is too few).
BINARY_OVERSAMPLING = 16.0


def folders_of(rel_path: str) -> list[str]:
    """Every ancestor folder of a library-relative path: "a/b/c.jpg" -> ["a", "a/b"]; top level -> []."""
    parts = rel_path.split("/")[:-1]
    return ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]


class StoreError(RuntimeError):
    """A store operation failed (server unreachable, disk error...). The message says what to do."""


class StoreLockedError(StoreError):
    """The embedded store folder is held by another process."""


class ModelMismatchError(StoreError):
    """The collection's vectors were made by another model (or another dimension)."""


class StoreFullError(StoreError):
    """The store's disk is full (or would be after this write): nothing was written; free space and rerun."""


class StoreDamagedError(StoreError):
    """The store's files are damaged: it cannot be opened or read, or it answers what it cannot hold (a
    score a cosine cannot give). The message names the store and RECOVERY."""


# How to get a damaged collection back (docs/backup-and-migration.md), said by every damage message.
RECOVERY = (
    "The way back: restore the collection from an archive (`python -m indexer --import FILE` into an empty "
    "QDRANT_PATH or a new QDRANT_COLLECTION), or index again: `python -m indexer --recreate` re-embeds the "
    "library, and `python -m indexer --import FILE --drop-vectors` then puts an archive's descriptions back "
    "(without an archive, `--describe` makes them again). See docs/backup-and-migration.md.")


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
class Record:
    """A point whole, as an archive holds it (indexer/archive.py): its dense CLIP vector (None when the
    store lacks it), its text sparse vector (term -> weight; None when it has none) and its payload."""

    id: str
    vector: np.ndarray | None
    text: dict[int, float] | None
    payload: dict[str, Any] = field(default_factory=dict)


@dataclass
class Hit:
    id: str
    # Vector search: the cosine similarity. Text search: the BM25 score. Hybrid: the RRF score, the
    # sum over the two rankings of 1 / (RRF_K + position), the best at position 0 (as Qdrant counts).
    score: float
    payload: dict[str, Any]


# How a SearchFilter field tests the payload key it names (see on_payload).
MATCH = "match"  # the key's value, or one of its list of values, equals the field
AT_LEAST = "at_least"  # the key's number is >= the field
AT_MOST = "at_most"  # the key's number is <= the field
CONTAINS = "contains"  # the key's text holds each of the field's strings (exact substrings; the key has no index)


def on_payload(key: str, test: str, index: str, default: Any = None) -> Any:
    """Declare a SearchFilter field: the payload `key` it tests, how (MATCH, AT_LEAST or AT_MOST), and
    the Qdrant payload index type ("keyword", "integer", "float", "bool", "datetime"...) that `key`
    gets so the test is fast. The store builds its filters and payload indexes from these alone."""
    return field(default=default, metadata={"key": key, "test": test, "index": index})


@dataclass(frozen=True)
class SearchFilter:
    """Conditions on the payload; None means "any". Bounds are inclusive.

    Each field declares, with on_payload(), the payload key it tests, how, and that key's index:
    this class is the one place to add a search filter field in store/ (see store/qdrant_base.py)."""

    # A library-relative folder: the files in it and in its subfolders ("" is any folder).
    folder: str | None = on_payload("folders", MATCH, "keyword")
    modified_after: float | None = on_payload("mtime", AT_LEAST, "float")  # mtime, unix seconds
    modified_before: float | None = on_payload("mtime", AT_MOST, "float")
    min_width: int | None = on_payload("width", AT_LEAST, "integer")
    min_height: int | None = on_payload("height", AT_LEAST, "integer")
    min_bytes: int | None = on_payload("size", AT_LEAST, "integer")
    media: str | None = on_payload("media", MATCH, "keyword")  # "image" or "video" (a video's moments)
    exclude_ids: tuple[str, ...] = ()  # points left out (image-to-image: the query image itself)
    # Quoted phrases of a text query (runners/ocr/text.py normalizes them): the photo's normalized read text must
    # hold each one, an exact substring (Qdrant's MatchSubstring, reading the payload: the key has no index).
    phrases: tuple[str, ...] = on_payload("ocr_norm", CONTAINS, "", default=())

    def matches(self) -> dict[str, Any]:
        """payload key -> the value it must hold (or contain), for the MATCH fields that are set."""
        return {key: value for key, test, value in self._conditions() if test == MATCH and value != ""}

    def contains(self) -> list[tuple[str, str]]:
        """(payload key, text) for each string a CONTAINS field asks its key to hold."""
        return [(key, text) for key, test, value in self._conditions() if test == CONTAINS for text in value if text]

    def ranges(self) -> dict[str, tuple[float | None, float | None]]:
        """payload key -> (lowest, highest) for the bounded numeric fields."""
        bounds: dict[str, tuple[float | None, float | None]] = {}
        for key, test, value in self._conditions():
            low, high = bounds.get(key, (None, None))
            if test == AT_LEAST:
                bounds[key] = (value, high)
            elif test == AT_MOST:
                bounds[key] = (low, value)
        return bounds

    def _conditions(self) -> Iterator[tuple[str, str, Any]]:
        """(payload key, test, value) of each declared field that is set."""
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if "key" in f.metadata and value is not None:
                yield f.metadata["key"], f.metadata["test"], value


def filter_indexes() -> dict[str, str]:
    """payload key -> index type, of the keys the SearchFilter fields test."""
    return {f.metadata["key"]: f.metadata["index"] for f in dataclasses.fields(SearchFilter)
            if "key" in f.metadata and f.metadata["index"]}


# Payload indexes: created with the collection and, idempotently, on every ensure_collection() of an
# existing one: those the search filters need, plus content_hash, the key dedup groups by (no filter
# tests it today; it has been indexed since the filters came, so existing collections keep it).
# described_by is indexed for described_counts() (a facet needs a keyword index), ocr_by for read_counts().
INDEXED_FIELDS = {**filter_indexes(), "content_hash": "keyword", "described_by": "keyword", "ocr_by": "keyword"}


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

    def payload_page(self, offset: Any, limit: int) -> tuple[list[tuple[str, dict[str, Any]]], Any]:
        """One page of payloads() from `offset` (None: the start) and the next page's offset (None after
        the last): how an indexer writing through a service reads them (store/via_service.py)."""

    def vectors(self, ids: Sequence[str]) -> dict[str, np.ndarray]:
        """Stored vectors of the given ids (missing ids are left out)."""

    def payloads_of(self, ids: Sequence[str], keys: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The payload keys `keys` of the given ids (missing ids are left out; a key a point lacks is absent)."""

    def search(self, vector: np.ndarray | None, limit: int, where: SearchFilter | None = None, offset: int = 0,
               dedup: bool = False, text: str | None = None) -> list[Hit]:
        """Points that match `where`, best first, skipping the first `offset`. `dedup`: only the best
        point of each content_hash counts (paging counts the collapsed list). Empty list if the
        collection is missing. What ranks them:
        - `vector` only: cosine similarity to it (Hit.score is the cosine);
        - `text` only: BM25 of the query's words in the points' descriptions (TEXT_FIELDS); points with
          none of its words (undescribed ones included) are left out;
        - both: one query, the vector ranking and the text ranking fused by Reciprocal Rank Fusion
          (RRF_K); `where` applies to both rankings. A text with no words (or a collection without
          the text vector) leaves the vector ranking as it is.
        Raise StoreError when neither is given."""

    def set_payloads(self, payloads: dict[str, dict[str, Any]]) -> None:
        """Add or replace these payload fields of existing points (id -> fields), keeping their vectors."""

    def set_descriptions(self, described: dict[str, dict[str, Any]]) -> None:
        """Write these description fields (DESCRIPTION_FIELDS, or the OCR stage's OCR_FIELDS; id -> fields) of
        existing points, keeping their other payload and their dense vector, and make each point's text vector
        from its TEXT_FIELDS, the given ones over those it holds (so a description and the read text both count;
        it replaces the point's earlier one). Ids that no longer exist are skipped. Adds
        the text vector to a collection made before it existed."""

    def described_counts(self) -> dict[str, int]:
        """Number of points per `described_by` value ({} when none is described or the collection is missing)."""

    def read_counts(self) -> dict[str, int]:
        """Number of points per `ocr_by` value (photos the OCR stage read, with or without text; {} when none)."""

    def count(self) -> int:
        """Number of points; 0 when the collection is missing."""

    def records_page(self, offset: Any, limit: int) -> tuple[list[Record], Any]:
        """One page of whole points (vectors and payload) from `offset` (None: the start), and the next
        page's offset (None after the last); ([], None) when the collection is missing. For export/verify."""

    def restore(self, records: Sequence[Record]) -> None:
        """Write these whole points as they are (dense vector, text vector, payload), replacing any
        point with the same id: the import of an archive. Records without a dense vector are refused."""

    def finish(self) -> None:
        """Make writes durable and build the search index (end of an indexer run)."""

    def flush(self) -> None:
        """Make writes durable without building the search index: the end of an indexer run written
        through a service, whose store must not hold the GIL for seconds (store/qdrant_edge.py, finish)."""

    def unindexed_points(self) -> int:
        """Points outside the search index (written since the last finish()); 0 where the engine
        indexes in the background (a Qdrant server)."""

    def close(self) -> None: ...


# --- payload helpers (the backends and the indexer's write path) ---------------------------------


def clean_payload(payload: dict[str, Any]) -> dict[str, Any]:
    """The payload as plain JSON values: numpy scalars become Python numbers, paths become strings.
    Raise StoreError for values that are not str/int/float/bool/None (the store keeps flat payloads),
    except the LIST_FIELDS, which hold a list of strings."""
    out: dict[str, Any] = {}
    for key, value in payload.items():
        if key in LIST_FIELDS and isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
            out[key] = list(value)
            continue
        if key in LINES_FIELDS and isinstance(value, (list, tuple)):
            out[key] = [clean_line(key, line) for line in value]
            continue
        if isinstance(value, np.generic):
            value = value.item()
        elif hasattr(value, "__fspath__"):
            value = str(value)
        if value is not None and not isinstance(value, (str, int, float)):
            raise StoreError(f"payload field {key!r} has a {type(value).__name__} value; "
                             "only str, int and float are stored")
        out[str(key)] = value
    return out


def clean_line(key: str, line: Any) -> dict[str, Any]:
    """One entry of a LINES_FIELDS list as plain JSON: an object of str / number values and lists of numbers."""
    if not isinstance(line, dict):
        raise StoreError(f"payload field {key!r} holds a {type(line).__name__}; only objects are stored")
    out: dict[str, Any] = {}
    for name, value in line.items():
        if isinstance(value, (list, tuple)) and all(isinstance(v, (int, float, np.generic)) for v in value):
            out[str(name)] = [v.item() if isinstance(v, np.generic) else v for v in value]
        elif isinstance(value, np.generic):
            out[str(name)] = value.item()
        elif value is None or isinstance(value, (str, int, float)):
            out[str(name)] = value
        else:
            raise StoreError(f"payload field {key!r} has a line whose {name!r} is a {type(value).__name__}")
    return out


def ocr_of(payload: dict[str, Any]) -> dict[str, Any]:
    """A point's OCR_FIELDS, as set_descriptions takes them (to copy one point's read text to another)."""
    return {key: payload.get(key) for key in OCR_FIELDS}


def description_of(payload: dict[str, Any]) -> dict[str, Any]:
    """A point's DESCRIPTION_FIELDS, as set_descriptions takes them (to copy one point's description to another)."""
    return {key: payload.get(key) for key in DESCRIPTION_FIELDS}


def description_text(fields: dict[str, Any]) -> str:
    """The words of a point's description: its TEXT_FIELDS joined (tags may be a list of strings)."""
    parts: list[str] = []
    for key in TEXT_FIELDS:
        value = fields.get(key)
        if isinstance(value, (list, tuple)):
            parts.extend(str(v) for v in value)
        elif value is not None:
            parts.append(str(value))
    return "\n".join(parts)
