"""The embedded store of a running service, written through that service: RemoteStore.

An embedded Qdrant Edge shard can be opened by one process only, and while `bentoml serve` runs that
process is the service. So an indexer run then sends each VectorStore call to the service's internal
write path (api/internal_store.py: POST /internal/store/<op>), which applies it on the service's own
store thread, between searches. The indexer keeps its own process and CLIP model; only store calls
cross over, in the same order as against a local store.

How the indexer finds the service: at start-up the service writes `<QDRANT_PATH>/.<collection>.service.json`
(mode 0600: only the service's user can read it) with its URL, a random token made at start-up, its
pid and the collection. The write path answers only callers on the loopback interface that send that
token (header X-Indexer-Token); the public API key is not enough.

Wire format: JSON; vectors travel as base64 of their float32 bytes (a 512-d vector is 2,732 characters,
about a third of its JSON list), ids and payloads as JSON.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from store.base import (
    CollectionInfo,
    CollectionMissingError,
    Hit,
    ModelMismatchError,
    Point,
    Record,
    SearchFilter,
    StoreDamagedError,
    StoreError,
    StoreFullError,
    StoreLockedError,
    clean_payload,
)

TOKEN_HEADER = "X-Indexer-Token"
UPSERT_CHUNK = 256  # points per request: small, so searches wait at most one short write
IDS_CHUNK = 1024  # ids per delete / vectors request
PAYLOAD_CHUNK = 512  # points per set_payloads request and per payloads page
BUSY_RETRIES = 30  # a 429/503 from the service (busy, or its store briefly unable) is retried this often
TIMEOUT_S = 130.0  # past the service's own REQUEST_TIMEOUT_S (110 s by default)

# Error codes of the write path -> the StoreError the caller gets (any other code: StoreError).
ERRORS: dict[str, type[StoreError]] = {
    "model_mismatch": ModelMismatchError,
    "collection_missing": CollectionMissingError,
    "store_locked": StoreLockedError,
    "store_full": StoreFullError,
    "store_damaged": StoreDamagedError,
}


class ServiceGoneError(StoreError):
    """Nothing answers at the service's address (it stopped, or was killed, during the run)."""


def error_code(exc: StoreError) -> str:
    """The write path's code for a StoreError (the inverse of ERRORS)."""
    for code, kind in ERRORS.items():
        if isinstance(exc, kind):
            return code
    return "store_error"


# --- the service file ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ServiceFile:
    url: str
    token: str
    pid: int
    collection: str


def service_file_path(folder: Path, collection: str) -> Path:
    """Where a service serving `collection` from the embedded store in `folder` says how to reach it."""
    return Path(folder) / f".{collection}.service.json"


def read_service_file(path: Path) -> ServiceFile | None:
    """The service file, or None when there is none (or it is damaged: a service being replaced).
    Raise StoreLockedError when it exists but this user may not read it."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return ServiceFile(str(data["url"]), str(data["token"]), int(data["pid"]), str(data["collection"]))
    except FileNotFoundError:
        return None
    except PermissionError as exc:
        raise StoreLockedError(
            f"a service holds the vector store, but its address file {path} cannot be read by this user "
            "(it is readable by the service's user only): run the indexer as that user") from exc
    except (OSError, ValueError, KeyError, TypeError):
        return None


# --- the wire format -----------------------------------------------------------------------------


def encode_vectors(vectors: Sequence[np.ndarray] | np.ndarray) -> dict[str, Any]:
    arr = np.ascontiguousarray(np.asarray(vectors, dtype="<f4"))
    if arr.ndim != 2:
        raise StoreError(f"vectors must be a list of one-dimensional vectors, got shape {arr.shape}")
    return {"vectors": base64.b64encode(arr.tobytes()).decode("ascii"), "dim": int(arr.shape[1])}


def decode_vectors(body: dict[str, Any], n: int) -> np.ndarray:
    """`n` float32 vectors from encode_vectors' fields; ValueError when the sizes do not add up."""
    raw = base64.b64decode(str(body["vectors"]), validate=True)
    dim = int(body["dim"])
    if dim < 0 or len(raw) != n * dim * 4:
        raise ValueError(f"{len(raw)} bytes of vectors for {n} vectors of {dim} dimensions")
    return np.frombuffer(raw, dtype="<f4").astype(np.float32).reshape(n, dim)


def encode_records(records: Sequence[Record], dim: int) -> dict[str, Any]:
    """Whole points on the wire: ids, payloads, text vectors as [indices, values] (or null), dense vectors
    as encode_vectors (a record without one travels as zeros, flagged in `no_vector`)."""
    dense = [r.vector if r.vector is not None else np.zeros(dim, np.float32) for r in records]
    return {"ids": [r.id for r in records], "payloads": [r.payload for r in records],
            "texts": [None if r.text is None else [list(r.text), list(r.text.values())] for r in records],
            "no_vector": [i for i, r in enumerate(records) if r.vector is None],
            **(encode_vectors(dense) if records else {"vectors": "", "dim": dim})}


def decode_records(body: dict[str, Any]) -> list[Record]:
    """encode_records' fields back; ValueError (or KeyError/TypeError) when they do not fit together."""
    ids, payloads, texts = list(body["ids"]), list(body["payloads"]), list(body["texts"])
    if not (len(ids) == len(payloads) == len(texts)) or not all(isinstance(p, dict) for p in payloads):
        raise ValueError("ids, payloads and texts must be lists of the same length, payloads objects")
    vectors = decode_vectors(body, len(ids)) if ids else np.zeros((0, 0), np.float32)
    missing = {int(i) for i in body.get("no_vector") or ()}
    return [Record(str(pid), None if n in missing else vectors[n],
                   None if text is None else {int(i): float(v) for i, v in zip(text[0], text[1], strict=True)},
                   dict(payload))
            for n, (pid, payload, text) in enumerate(zip(ids, payloads, texts, strict=True))]


def filter_to_json(where: SearchFilter | None) -> dict[str, Any] | None:
    return None if where is None else {**dataclasses.asdict(where), "exclude_ids": list(where.exclude_ids)}


def filter_from_json(data: dict[str, Any] | None) -> SearchFilter | None:
    if data is None:
        return None
    names = {f.name for f in dataclasses.fields(SearchFilter)}
    fields = {k: v for k, v in data.items() if k in names}
    fields["exclude_ids"] = tuple(str(i) for i in fields.get("exclude_ids") or ())
    return SearchFilter(**fields)


# --- the client ----------------------------------------------------------------------------------


class RemoteStore:
    """VectorStore whose calls run in the service that holds the embedded store (see the module docstring)."""

    def __init__(self, url: str, token: str, client: httpx.Client | None = None) -> None:
        self.url = url.rstrip("/")
        self.client = client or httpx.Client(timeout=TIMEOUT_S, trust_env=False)  # loopback: no proxy
        self.client.headers[TOKEN_HEADER] = token

    @classmethod
    def from_file(cls, found: ServiceFile) -> RemoteStore:
        return cls(found.url, found.token)

    def info(self) -> CollectionInfo | None:
        data = self.call("info")["info"]
        return None if data is None else CollectionInfo(model_id=str(data["model_id"]), dim=int(data["dim"]))

    def ensure_collection(self, model_id: str, dim: int, recreate: bool = False) -> None:
        self.call("ensure_collection", {"model_id": model_id, "dim": dim, "recreate": recreate})

    def upsert(self, points: Sequence[Point]) -> None:
        for start in range(0, len(points), UPSERT_CHUNK):
            chunk = points[start:start + UPSERT_CHUNK]
            self.call("upsert", {"ids": [p.id for p in chunk], "payloads": [clean_payload(p.payload) for p in chunk],
                                 **encode_vectors([p.vector for p in chunk])})

    def delete(self, ids: Sequence[str]) -> None:
        for start in range(0, len(ids), IDS_CHUNK):
            self.call("delete", {"ids": list(ids[start:start + IDS_CHUNK])})

    def payloads(self) -> Iterator[tuple[str, dict[str, Any]]]:
        offset: Any = None
        while True:
            page = self.call("payloads", {"offset": offset, "limit": PAYLOAD_CHUNK})
            for pid, payload in page["items"]:
                yield str(pid), dict(payload)
            offset = page["next"]
            if offset is None or not page["items"]:
                return

    def records_page(self, offset: Any, limit: int) -> tuple[list[Record], Any]:
        page = self.call("records", {"offset": offset, "limit": limit})
        return decode_records(page), page["next"]

    def restore(self, records: Sequence[Record]) -> None:
        for start in range(0, len(records), UPSERT_CHUNK):
            chunk = [Record(r.id, r.vector, r.text, clean_payload(r.payload))
                     for r in records[start:start + UPSERT_CHUNK]]
            dim = next((len(r.vector) for r in chunk if r.vector is not None), 0)
            self.call("restore", encode_records(chunk, dim))

    def vectors(self, ids: Sequence[str]) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for start in range(0, len(ids), IDS_CHUNK):
            body = self.call("vectors", {"ids": list(ids[start:start + IDS_CHUNK])})
            found = [str(i) for i in body["ids"]]
            out.update(zip(found, decode_vectors(body, len(found)), strict=True))
        return out

    def search(self, vector: np.ndarray | None, limit: int, where: SearchFilter | None = None, offset: int = 0,
               dedup: bool = False, text: str | None = None) -> list[Hit]:
        dense = {} if vector is None else encode_vectors([vector])
        body = self.call("search", {**dense, "limit": limit, "offset": offset, "dedup": dedup,
                                    "where": filter_to_json(where), "text": text})
        return [Hit(id=str(pid), score=float(score), payload=dict(payload)) for pid, score, payload in body["hits"]]

    def set_payloads(self, payloads: dict[str, dict[str, Any]]) -> None:
        items = list(payloads.items())
        for start in range(0, len(items), PAYLOAD_CHUNK):
            chunk = items[start:start + PAYLOAD_CHUNK]
            self.call("set_payloads", {"payloads": {pid: clean_payload(fields) for pid, fields in chunk}})

    def set_descriptions(self, described: dict[str, dict[str, Any]]) -> None:
        items = list(described.items())
        for start in range(0, len(items), PAYLOAD_CHUNK):
            chunk = items[start:start + PAYLOAD_CHUNK]
            self.call("set_descriptions", {"described": {pid: clean_payload(fields) for pid, fields in chunk}})

    def described_counts(self) -> dict[str, int]:
        return {str(k): int(v) for k, v in self.call("described_counts")["counts"].items()}

    def count(self) -> int:
        return int(self.call("count")["count"])

    def finish(self) -> None:
        self.call("finish")

    def close(self) -> None:
        """Closes the connection only: the service's store stays open."""
        self.client.close()

    # --- the HTTP call ---------------------------------------------------------------------------

    def call(self, op: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """POST one store call; the service's refusal comes back as the StoreError it was there."""
        for attempt in range(BUSY_RETRIES + 1):
            try:
                response = self.client.post(f"{self.url}/internal/store/{op}", json=body or {})
            except httpx.HTTPError as exc:
                raise ServiceGoneError(
                    f"the service at {self.url}, which holds the vector store, stopped answering "
                    f"({type(exc).__name__}: {exc}). Start it again (or stop it for good) and run the "
                    "indexer again: it goes on where it stopped.") from exc
            if response.status_code in (429, 503) and attempt < BUSY_RETRIES:
                time.sleep(min(float(response.headers.get("Retry-After", "1") or 1), 5.0))
                continue
            return self.answer(op, response)
        raise AssertionError("unreachable")

    def answer(self, op: str, response: httpx.Response) -> dict[str, Any]:
        try:
            data = response.json()
        except ValueError:
            data = None
        if response.status_code == 200 and isinstance(data, dict):
            return data
        error = data.get("error") if isinstance(data, dict) else None
        code = str(error.get("code")) if isinstance(error, dict) else ""
        message = str(error.get("message")) if isinstance(error, dict) else response.text[:200]
        if response.status_code in (401, 403, 404) and code not in ERRORS:
            raise StoreLockedError(
                f"the service at {self.url} refused the indexer's {op} ({response.status_code}: {message}); "
                "it holds the vector store, so the indexer cannot open it itself. Restart the service "
                "(it writes a new address file), or stop it and index on its own.")
        raise ERRORS.get(code, StoreError)(message)
