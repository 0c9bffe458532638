"""The embedded store of a running service, written through that service: RemoteStore.

An embedded Qdrant Edge shard can be opened by one process only, and while `bentoml serve` runs that
process is the service. So an indexer run then sends each VectorStore call to the service's internal
write path (api/internal_store.py: POST /internal/store/<op>), which applies it on the service's own
store thread, between searches. The indexer keeps its own process and CLIP model; only store calls
cross over, in the same order as against a local store. Every call is one generic RPC: the method's
name in the path (the service runs only the names in REMOTE_METHODS), its arguments by name in a JSON
body, its result as {"result": ...}; both sides encode with to_wire() and decode with from_wire(),
which checks each value against the VectorStore method's type hints (so a malformed call is a 400).

How the indexer finds the service: at start-up the service writes `<QDRANT_PATH>/.<collection>.service.json`
(mode 0600: only the service's user can read it) with its URL, a random token made at start-up, its
pid and the collection. The write path answers only callers on the loopback interface that send that
token (header X-Indexer-Token); the public API key is not enough.

Wire format: JSON; arrays travel as base64 of their float32 bytes (a 512-d vector is 2,732 characters,
about a third of its JSON list), dataclasses (Hit, SearchFilter...) as objects of their fields. A batch
of points (upsert, the bulk of the traffic) travels as columns in the body: `ids`, `payloads`, and the
vectors as one block (`vectors`, `dim`).
"""

from __future__ import annotations

import base64
import dataclasses
import inspect
import json
import os
import stat
import time
import typing
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from store.interface import (
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
    VectorStore,
    clean_payload,
)

TOKEN_HEADER = "X-Indexer-Token"
UPSERT_CHUNK = 256  # points per request: small, so searches wait at most one short write
IDS_CHUNK = 1024  # ids per delete / vectors request
PAYLOAD_CHUNK = 512  # points per set_payloads request and per payloads page
BUSY_RETRIES = 30  # a 429/503 from the service (busy, or its store briefly unable) is retried this often
# A call waits this much longer than the service's REQUEST_TIMEOUT_S (config.py), so that the service
# answers (a 504) before the indexer gives up on it.
TIMEOUT_MARGIN_S = 20.0
# The VectorStore methods an indexer may run in the service (the service refuses every other name).
# An indexer's finish() only flushes there: the index build holds the GIL (the whole service) for seconds.
REMOTE_METHODS = frozenset({
    "info", "ensure_collection", "upsert", "delete", "payload_page", "vectors", "payloads_of", "search", "set_payloads",
    "set_descriptions", "described_counts", "read_counts", "count", "flush", "unindexed_points", "records_page",
    "restore",
})

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


class UntrustedServiceFile(StoreLockedError):
    """The service file could have been written by another user: it is not followed."""


MAX_SERVICE_FILE_BYTES = 64 * 1024


def trust_problem(file: os.stat_result, folder: os.stat_result) -> str | None:
    """Why a service file with these fstat / folder stat figures may have been written by someone other
    than this user, or None: the indexer sends every path and vector of its run where the file says."""
    me = os.geteuid()
    if not stat.S_ISREG(file.st_mode):
        return "it is not a regular file"
    if file.st_uid != me:
        return f"it belongs to user id {file.st_uid}, not to this user ({me})"
    if file.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return "it is writable by other users"
    if folder.st_uid != me:
        return f"its folder belongs to user id {folder.st_uid}, not to this user ({me})"
    if folder.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return "its folder is writable by other users, who could have put it there"
    return None


def read_service_file(path: Path) -> ServiceFile | None:
    """The service file, or None when there is none (or it is damaged: a service being replaced).
    Raise StoreLockedError when it exists but this user may not read it, and UntrustedServiceFile when it
    (opened without following a link, checked on that descriptor) or its folder is not this user's
    alone: a file another user planted would receive the whole run (docs/security.md)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except PermissionError as exc:
        raise StoreLockedError(
            f"a service holds the vector store, but its address file {path} cannot be read by this user "
            "(it is readable by the service's user only): run the indexer as that user") from exc
    except OSError as exc:  # ELOOP: a symbolic link where the file should be
        raise untrusted(path, f"it cannot be opened as a plain file ({exc.strerror or exc})") from exc
    try:
        problem = trust_problem(os.fstat(fd), os.stat(path.parent))
        if problem:
            raise untrusted(path, problem)
        data = json.loads(os.read(fd, MAX_SERVICE_FILE_BYTES).decode("utf-8"))
        return ServiceFile(str(data["url"]), str(data["token"]), int(data["pid"]), str(data["collection"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    finally:
        os.close(fd)


def untrusted(path: Path, problem: str) -> UntrustedServiceFile:
    return UntrustedServiceFile(
        f"refusing the service address file {path}: {problem}. The indexer would send every path and vector "
        f"of this run to the address it names. Make QDRANT_PATH ({path.parent}) belong to the user that runs "
        f"the service and the indexer and not writable by others (chmod go-w {path.parent}), and remove "
        "the file if no service of yours wrote it.")


# --- the wire format -----------------------------------------------------------------------------


def to_wire(value: Any) -> Any:
    """`value` as JSON values: arrays as {"$array": base64 of float32, "shape"}, dataclasses as their fields,
    UUIDs as strings."""
    if isinstance(value, np.ndarray):
        arr = np.ascontiguousarray(value, dtype="<f4")
        return {"$array": base64.b64encode(arr.tobytes()).decode("ascii"), "shape": list(arr.shape)}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_wire(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): to_wire(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_wire(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, uuid.UUID):  # an engine's page offset
        return str(value)
    return value


def from_wire(data: Any, hint: Any) -> Any:
    """to_wire()'s JSON back as the type `hint` (a VectorStore method's type hint); ValueError
    (pydantic's ValidationError) when it is not one."""
    return _adapter(hint).validate_python(_arrays(data))


def _arrays(data: Any) -> Any:
    if isinstance(data, dict):
        if "$array" in data:
            return decode_array(data["$array"], [int(n) for n in data["shape"]])
        return {k: _arrays(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_arrays(v) for v in data]
    return data


@cache
def _adapter(hint: Any) -> Any:
    from pydantic import ConfigDict, TypeAdapter

    return TypeAdapter(hint, config=None if dataclasses.is_dataclass(hint) else
                       ConfigDict(arbitrary_types_allowed=True))


@cache
def hints_of(method: str) -> dict[str, Any]:
    """The type hints of VectorStore.<method>: its parameters' and, as "return", its result's."""
    return typing.get_type_hints(getattr(VectorStore, method))


def encode_call(arguments: dict[str, Any]) -> dict[str, Any]:
    """A call's JSON body: its arguments by name; a batch of `points` as columns."""
    body = {name: to_wire(value) for name, value in arguments.items() if name != "points"}
    if "points" in arguments:
        points = arguments["points"]
        body.update(ids=[p.id for p in points], payloads=[clean_payload(p.payload) for p in points],
                    **encode_vectors([p.vector for p in points]))
    return body


def decode_call(method: str, body: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments of VectorStore.<method> from encode_call()'s body, each checked against its
    type; ValueError / TypeError (a missing or unknown argument) when the body does not fit."""
    hints = {name: hint for name, hint in hints_of(method).items() if name != "return"}
    body = dict(body)
    if "points" in hints and "points" not in body:
        ids, payloads = list(body.pop("ids")), list(body.pop("payloads"))
        vectors = decode_array(body.pop("vectors"), [len(ids), int(body.pop("dim"))])
        body["points"] = [{"id": i, "vector": v, "payload": p} for i, v, p in zip(ids, vectors, payloads, strict=True)]
    unknown = set(body) - set(hints)
    if unknown:
        raise TypeError(f"{method}() has no argument {sorted(unknown)[0]!r}")
    arguments = {name: from_wire(value, hints[name]) for name, value in body.items()}
    inspect.signature(getattr(VectorStore, method)).bind(None, **arguments)  # TypeError: one is missing
    return arguments


def encode_vectors(vectors: Sequence[np.ndarray] | np.ndarray) -> dict[str, Any]:
    arr = np.ascontiguousarray(np.asarray(vectors, dtype="<f4"))
    if arr.ndim != 2:
        raise StoreError(f"vectors must be a list of one-dimensional vectors, got shape {arr.shape}")
    return {"vectors": base64.b64encode(arr.tobytes()).decode("ascii"), "dim": int(arr.shape[1])}


def decode_array(text: Any, shape: list[int]) -> np.ndarray:
    """A float32 array of `shape` from the base64 of its bytes; ValueError when the sizes do not add up."""
    raw = base64.b64decode(str(text), validate=True)
    if any(size < 0 for size in shape) or len(raw) != int(np.prod(shape)) * 4:
        raise ValueError(f"{len(raw)} bytes of float32 values for an array of shape {shape}")
    return np.frombuffer(raw, dtype="<f4").astype(np.float32).reshape(shape)


# --- the client ----------------------------------------------------------------------------------


class RemoteStore:
    """VectorStore whose calls run in the service that holds the embedded store (see the module docstring)."""

    def __init__(self, url: str, token: str, client: httpx.Client | None = None,
                 request_timeout_s: float | None = None) -> None:
        """`request_timeout_s`: the service's REQUEST_TIMEOUT_S (by default, that setting's default)."""
        if request_timeout_s is None:
            from config import Settings

            request_timeout_s = float(Settings.model_fields["request_timeout_s"].default)
        self.url = url.rstrip("/")
        self.timeout_s = request_timeout_s + TIMEOUT_MARGIN_S
        self.client = client or httpx.Client(timeout=self.timeout_s, trust_env=False)  # loopback: no proxy
        self.client.headers[TOKEN_HEADER] = token

    @classmethod
    def from_file(cls, found: ServiceFile, request_timeout_s: float | None = None) -> RemoteStore:
        return cls(found.url, found.token, request_timeout_s=request_timeout_s)

    def info(self) -> CollectionInfo | None:
        return self.call("info")  # type: ignore[no-any-return]

    def ensure_collection(self, model_id: str, dim: int, recreate: bool = False) -> None:
        self.call("ensure_collection", model_id=model_id, dim=dim, recreate=recreate)

    def upsert(self, points: Sequence[Point]) -> None:
        for start in range(0, len(points), UPSERT_CHUNK):
            self.call("upsert", points=points[start:start + UPSERT_CHUNK])

    def delete(self, ids: Sequence[str]) -> None:
        for start in range(0, len(ids), IDS_CHUNK):
            self.call("delete", ids=list(ids[start:start + IDS_CHUNK]))

    def payloads(self) -> Iterator[tuple[str, dict[str, Any]]]:
        offset: Any = None
        while True:
            page, offset = self.payload_page(offset, PAYLOAD_CHUNK)
            yield from page
            if offset is None or not page:
                return

    def payload_page(self, offset: Any, limit: int) -> tuple[list[tuple[str, dict[str, Any]]], Any]:
        return self.call("payload_page", offset=offset, limit=limit)  # type: ignore[no-any-return]

    def records_page(self, offset: Any, limit: int) -> tuple[list[Record], Any]:
        return self.call("records_page", offset=offset, limit=limit)  # type: ignore[no-any-return]

    def restore(self, records: Sequence[Record]) -> None:
        for start in range(0, len(records), UPSERT_CHUNK):
            self.call("restore", records=[Record(r.id, r.vector, r.text, clean_payload(r.payload))
                                          for r in records[start:start + UPSERT_CHUNK]])

    def vectors(self, ids: Sequence[str]) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for start in range(0, len(ids), IDS_CHUNK):
            out.update(self.call("vectors", ids=list(ids[start:start + IDS_CHUNK])))
        return out

    def payloads_of(self, ids: Sequence[str], keys: Sequence[str]) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for start in range(0, len(ids), IDS_CHUNK):
            out.update(self.call("payloads_of", ids=list(ids[start:start + IDS_CHUNK]), keys=list(keys)))
        return out

    def search(self, vector: np.ndarray | None, limit: int, where: SearchFilter | None = None, offset: int = 0,
               dedup: bool = False, text: str | None = None) -> list[Hit]:
        return self.call("search", vector=vector, limit=limit,  # type: ignore[no-any-return]
                         where=where, offset=offset, dedup=dedup, text=text)

    def set_payloads(self, payloads: dict[str, dict[str, Any]]) -> None:
        for chunk in _chunks(payloads, PAYLOAD_CHUNK):
            self.call("set_payloads", payloads=chunk)

    def set_descriptions(self, described: dict[str, dict[str, Any]]) -> None:
        for chunk in _chunks(described, PAYLOAD_CHUNK):
            self.call("set_descriptions", described=chunk)

    def described_counts(self) -> dict[str, int]:
        return self.call("described_counts")  # type: ignore[no-any-return]

    def read_counts(self) -> dict[str, int]:
        return self.call("read_counts")  # type: ignore[no-any-return]

    def count(self) -> int:
        return self.call("count")  # type: ignore[no-any-return]

    def finish(self) -> None:
        """Only flushes: the service builds the index at its next start (store/qdrant_edge.py, unindexed_points)."""
        self.flush()

    def flush(self) -> None:
        self.call("flush")

    def unindexed_points(self) -> int:
        return self.call("unindexed_points")  # type: ignore[no-any-return]

    def close(self) -> None:
        """Closes the connection only: the service's store stays open."""
        self.client.close()

    # --- the HTTP call ---------------------------------------------------------------------------

    def call(self, method: str, **arguments: Any) -> Any:
        """Run VectorStore.<method>(**arguments) in the service and return its result; the service's
        refusal comes back as the StoreError it was there."""
        body = encode_call(arguments)
        for attempt in range(BUSY_RETRIES + 1):
            try:
                response = self.client.post(f"{self.url}/internal/store/{method}", json=body)
            except httpx.HTTPError as exc:
                raise ServiceGoneError(
                    f"the service at {self.url}, which holds the vector store, stopped answering "
                    f"({type(exc).__name__}: {exc}). Start it again (or stop it for good) and run the "
                    "indexer again: it goes on where it stopped.") from exc
            if response.status_code in (429, 503) and attempt < BUSY_RETRIES:
                time.sleep(min(float(response.headers.get("Retry-After", "1") or 1), 5.0))
                continue
            return from_wire(self.answer(method, response)["result"], hints_of(method)["return"])
        raise AssertionError("unreachable")

    def answer(self, method: str, response: httpx.Response) -> dict[str, Any]:
        try:
            data = response.json()
        except ValueError:
            data = None
        if response.status_code == 200 and isinstance(data, dict) and "result" in data:
            return data
        error = data.get("error") if isinstance(data, dict) else None
        code = str(error.get("code")) if isinstance(error, dict) else ""
        message = str(error.get("message")) if isinstance(error, dict) else response.text[:200]
        if response.status_code in (401, 403, 404) and code not in ERRORS:
            raise StoreLockedError(
                f"the service at {self.url} refused the indexer's {method} ({response.status_code}: {message}); "
                "it holds the vector store, so the indexer cannot open it itself. Restart the service "
                "(it writes a new address file), or stop it and index on its own.")
        raise ERRORS.get(code, StoreError)(message)


def _chunks(fields: dict[str, dict[str, Any]], size: int) -> Iterator[dict[str, dict[str, Any]]]:
    """`fields` (id -> payload fields) in chunks of `size` ids, the fields as plain JSON values."""
    items = list(fields.items())
    for start in range(0, len(items), size):
        yield {pid: clean_payload(values) for pid, values in items[start:start + size]}
