"""The indexer's write path into a running service: POST /internal/store/<op>.

With the embedded store (no QDRANT_URL) the store folder is locked to the service's process, so an
indexer run while the service serves sends its VectorStore calls here (store/remote.py, RemoteStore)
and they run on the service's own store thread (api/store_calls.py), one at a time between searches.
The ops are exactly the VectorStore methods the indexer uses; `finish` only flushes (the HNSW build
holds the GIL for seconds, so it waits for the service's next start: store/edge.py, unindexed_points).

Who may call (every refusal in the error shape; none of it is in /docs.json):
- only a client on this machine (loopback, or the service's own listening address), with no
  X-Forwarded-* / Forwarded header (a reverse proxy on this machine forwarding an outside request):
  else 404, as for a path that does not exist;
- only with the token the service made at start-up and wrote, with its URL, to the address file
  `<QDRANT_PATH>/.<collection>.service.json`, mode 0600 (readable by the service's user only), sent
  as `X-Indexer-Token`: else 403. The public API_KEY is not enough (api/limits.py lets these paths
  through without it, to this check);
- with QDRANT_URL (a server, which the indexer reaches itself) the path is off: 404.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import os
import secrets
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from api.errors import ApiError, bad_request, handles_errors, not_found
from api.store_calls import StoreCalls
from core.files import write_atomically
from store.base import CollectionInfo, Point, StoreError, VectorStore
from store.remote import (
    TOKEN_HEADER,
    decode_records,
    decode_vectors,
    encode_records,
    encode_vectors,
    error_code,
    filter_from_json,
)

log = logging.getLogger("service")

PREFIX = "/internal/"
FORWARDED = (b"x-forwarded-for", b"x-forwarded-host", b"x-real-ip", b"forwarded")
STATUS = {"model_mismatch": 409, "collection_missing": 404, "store_locked": 423, "store_full": 507,
          "store_damaged": 503, "store_error": 500}


def is_internal_path(path: str) -> bool:
    return path.startswith(PREFIX)


# --- the ops: plain functions of the store and the JSON body, run on the store thread ----------------


def op_info(store: VectorStore, body: dict[str, Any]) -> dict[str, Any]:
    info: CollectionInfo | None = store.info()
    return {"info": None if info is None else {"model_id": info.model_id, "dim": info.dim}}


def op_ensure_collection(store: VectorStore, body: dict[str, Any]) -> dict[str, Any]:
    store.ensure_collection(str(body["model_id"]), int(body["dim"]), recreate=bool(body.get("recreate", False)))
    return {}


def op_upsert(store: VectorStore, body: dict[str, Any]) -> dict[str, Any]:
    ids, payloads = list(body["ids"]), list(body["payloads"])
    if len(ids) != len(payloads) or not all(isinstance(p, dict) for p in payloads):
        raise ValueError("ids and payloads must be lists of the same length, payloads objects")
    vectors = decode_vectors(body, len(ids))
    store.upsert([Point(str(i), v, p) for i, v, p in zip(ids, vectors, payloads, strict=True)])
    return {}


def op_delete(store: VectorStore, body: dict[str, Any]) -> dict[str, Any]:
    store.delete([str(i) for i in body["ids"]])
    return {}


def op_payloads(store: VectorStore, body: dict[str, Any]) -> dict[str, Any]:
    page = getattr(store, "payload_page", None)
    if page is None:
        raise StoreError("this store cannot be read page by page")
    items, next_offset = page(body.get("offset"), max(1, min(int(body.get("limit", 512)), 4096)))
    return {"items": items, "next": None if next_offset is None else str(next_offset)}


def op_records(store: VectorStore, body: dict[str, Any]) -> dict[str, Any]:
    """A page of whole points (python -m indexer --export / --verify through the service)."""
    records, next_offset = store.records_page(body.get("offset"), max(1, min(int(body.get("limit", 256)), 4096)))
    dim = next((len(r.vector) for r in records if r.vector is not None), 0)
    return {**encode_records(records, dim), "next": None if next_offset is None else str(next_offset)}


def op_restore(store: VectorStore, body: dict[str, Any]) -> dict[str, Any]:
    """Write whole points as they are (python -m indexer --import through the service)."""
    store.restore(decode_records(body))
    return {}


def op_vectors(store: VectorStore, body: dict[str, Any]) -> dict[str, Any]:
    found = store.vectors([str(i) for i in body["ids"]])
    ids = list(found)
    if not ids:
        return {"ids": [], "vectors": "", "dim": 0}
    return {"ids": ids, **encode_vectors([found[i] for i in ids])}


def op_search(store: VectorStore, body: dict[str, Any]) -> dict[str, Any]:
    """A vector (`vectors` + `dim`), a `text`, or both (hybrid)."""
    vector = decode_vectors(body, 1)[0] if "vectors" in body else None
    text = body.get("text")
    if vector is None and text is None:
        raise ValueError("a search needs a vector, a text or both")
    hits = store.search(vector, int(body["limit"]), filter_from_json(body.get("where")),
                        offset=int(body.get("offset", 0)), dedup=bool(body.get("dedup", False)),
                        text=None if text is None else str(text))
    return {"hits": [[h.id, h.score, h.payload] for h in hits]}


def op_set_payloads(store: VectorStore, body: dict[str, Any]) -> dict[str, Any]:
    store.set_payloads(fields_by_id(body["payloads"]))
    return {}


def op_set_descriptions(store: VectorStore, body: dict[str, Any]) -> dict[str, Any]:
    store.set_descriptions(fields_by_id(body["described"]))
    return {}


def op_described_counts(store: VectorStore, body: dict[str, Any]) -> dict[str, Any]:
    return {"counts": store.described_counts()}


def fields_by_id(value: Any) -> dict[str, dict[str, Any]]:
    if not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
        raise ValueError("expected an object of id -> fields")
    return {str(k): v for k, v in value.items()}


def op_count(store: VectorStore, body: dict[str, Any]) -> dict[str, Any]:
    return {"count": store.count()}


def op_finish(store: VectorStore, body: dict[str, Any]) -> dict[str, Any]:
    """Durable writes, no HNSW build: that holds the GIL (the whole service) for seconds."""
    flush = getattr(store, "flush", None)
    flush() if flush is not None else store.finish()
    return {}


OPS: dict[str, Callable[[VectorStore, dict[str, Any]], dict[str, Any]]] = {
    "info": op_info,
    "ensure_collection": op_ensure_collection,
    "upsert": op_upsert,
    "delete": op_delete,
    "payloads": op_payloads,
    "vectors": op_vectors,
    "records": op_records,
    "restore": op_restore,
    "search": op_search,
    "set_payloads": op_set_payloads,
    "set_descriptions": op_set_descriptions,
    "described_counts": op_described_counts,
    "count": op_count,
    "finish": op_finish,
}


# --- the route -----------------------------------------------------------------------------------


class InternalStore:
    """The write path of one service: its store, its store thread and (once advertised) its token."""

    def __init__(self, store: VectorStore, calls: StoreCalls) -> None:
        self.store = store
        self.calls = calls
        self.token: str | None = None  # None: the path is off (QDRANT_URL, or no address file)
        self.file: Path | None = None

    def advertise(self, path: Path, url: str, collection: str) -> None:
        """Make the token and write the address file (0600). On failure the path stays off (logged)."""
        token = secrets.token_urlsafe(32)
        try:
            write_private_json(path, {"url": url, "token": token, "pid": os.getpid(), "collection": collection})
        except OSError as exc:
            log.warning("cannot write %s (%s): `python -m indexer` cannot run while the service does", path, exc)
            return
        self.token, self.file = token, path

    def withdraw(self) -> None:
        """Remove the address file at shutdown, unless another service has replaced it since."""
        if self.file is None or self.token is None:
            return
        try:
            if json.loads(self.file.read_text(encoding="utf-8")).get("token") == self.token:
                self.file.unlink()
        except (OSError, ValueError):
            pass

    @handles_errors
    async def handle(self, request: Request) -> Response:
        self.check_caller(request)
        op = OPS.get(request.path_params.get("op", ""))
        if op is None:
            raise not_found("no such store operation")
        try:
            body = json.loads(await request.body() or b"{}")
        except ValueError as exc:
            raise bad_request(f"the body is not valid JSON: {exc}") from exc
        if not isinstance(body, dict):
            raise bad_request("the body must be a JSON object")
        try:
            result = await self.calls.call(op, self.store, body)
            if op is op_finish and self.calls.damaged:  # an indexer repaired it (--recreate, --import)?
                await self.calls.call(self.recheck)
        except StoreError as exc:
            code = error_code(exc)
            raise ApiError(STATUS[code], code, str(exc)) from exc
        except (ValueError, KeyError, TypeError) as exc:
            raise bad_request(f"malformed {request.path_params['op']} call: {exc}") from exc
        return JSONResponse(result)

    def recheck(self) -> None:
        """Clear the service's "damaged" mark when the store passes its probe again."""
        check = getattr(self.store, "check", None)
        if check is not None:
            try:
                check()
            except StoreError:
                return
        log.warning("the vector store passes its check again: the service is no longer degraded")
        self.calls.damaged = None

    def check_caller(self, request: Request) -> None:
        """404 off loopback, behind a proxy or while the path is off; 403 without the right token."""
        scope = request.scope
        if (self.token is None or not is_local(scope.get("client"), scope.get("server"))
                or any(key.lower() in FORWARDED for key, _ in scope.get("headers", []))):
            raise not_found("not found")
        sent = request.headers.get(TOKEN_HEADER, "")
        if not hmac.compare_digest(sent.encode(), self.token.encode()):
            raise ApiError(403, "permission_denied", "the indexer's write path needs the service's token "
                           "(from its address file in QDRANT_PATH); the API key is not enough")


def is_local(client: Any, server: Any) -> bool:
    """The caller is on this machine: a loopback address, or the very address the service listens on
    (a service bound to one LAN address is reached on it; no other machine can have that address)."""
    caller = ip_of(client)
    if caller is None:
        return False
    return caller.is_loopback or caller == ip_of(server)


def ip_of(endpoint: Any) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address of an ASGI (host, port) pair, IPv4-mapped IPv6 as IPv4; None when there is none."""
    if not endpoint:
        return None
    try:
        address = ipaddress.ip_address(str(endpoint[0]))
    except ValueError:
        return None
    mapped = getattr(address, "ipv4_mapped", None)
    return mapped or address


def write_private_json(path: Path, data: dict[str, Any]) -> None:
    """Write `data` to `path` atomically, readable and writable by this user only (core/files.py)."""
    write_atomically(path, json.dumps(data).encode("utf-8"))


# --- the service's own address -------------------------------------------------------------------


def listening_url(fallback: str) -> str:
    """http://host:port of the socket this API worker serves on: `bentoml serve` hands the worker
    the listening socket as `--fd N` (see _bentoml_impl/worker/service.py); a wildcard address
    (0.0.0.0 / ::) is reached on loopback. `fallback` (SERVICE_URL) when there is no such socket."""
    argv = sys.argv
    if "--fd" not in argv[:-1]:
        return fallback
    try:
        fd = int(argv[argv.index("--fd") + 1])
        with socket.socket(fileno=os.dup(fd)) as sock:
            if sock.family not in (socket.AF_INET, socket.AF_INET6):
                return fallback
            host, port = sock.getsockname()[:2]
    except (ValueError, OSError):
        return fallback
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
