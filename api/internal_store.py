"""The indexer's write path into a running service: POST /internal/store/<op>.

With the embedded store (no QDRANT_URL) the store folder is locked to the service's process, so an
indexer run while the service serves sends its VectorStore calls here (store/via_service.py, RemoteStore)
and they run on the service's own store thread (api/store_calls.py), one at a time between searches.
One generic call: <op> is a VectorStore method named in REMOTE_METHODS (any other name: 404), the body
its arguments (store/via_service.py, decode_call: a malformed call is a 400), the answer {"result": ...}.
An indexer's finish() only flushes here (the HNSW build holds the GIL for seconds, so it waits for the
service's next start: store/qdrant_edge.py, unindexed_points).

Who may call (every refusal in the error shape; none of it is in /docs.json):
- only a client on this machine (loopback, or the service's own listening address), with no
  X-Forwarded-* / Forwarded header (a reverse proxy on this machine forwarding an outside request):
  else 404, as for a path that does not exist;
- only with the token the service made at start-up and wrote, with its URL, to the address file
  `<QDRANT_PATH>/.<collection>.service.json`, mode 0600 (readable by the service's user only), sent
  as `X-Indexer-Token`: else 403. The public API_KEY is not enough (api/http/limits.py lets these paths
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
from functools import partial
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from api.errors import ApiError, bad_request, handles_errors, not_found
from api.http.paths import INTERNAL_PREFIX
from api.store_calls import StoreCalls
from core.files import write_atomically
from store.interface import StoreError, VectorStore
from store.via_service import REMOTE_METHODS, TOKEN_HEADER, decode_call, error_code, to_wire, trust_problem

log = logging.getLogger("service")

PREFIX = INTERNAL_PREFIX
FORWARDED = (b"x-forwarded-for", b"x-forwarded-host", b"x-real-ip", b"forwarded")
STATUS = {"model_mismatch": 409, "collection_missing": 404, "store_locked": 423, "store_full": 507,
          "store_damaged": 503, "store_error": 500}


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
        problem = trust_problem(os.stat(path), os.stat(path.parent))
        if problem:  # e.g. a group-writable QDRANT_PATH (umask 002): say so now, not at the first indexer run
            log.warning("an indexer will refuse the address file %s: %s (chmod go-w %s; docs/security.md)",
                        path, problem, path.parent)

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
        method = request.path_params.get("op", "")
        if method not in REMOTE_METHODS:
            raise not_found("no such store operation")
        try:
            body = json.loads(await request.body() or b"{}")
        except ValueError as exc:
            raise bad_request(f"the body is not valid JSON: {exc}") from exc
        if not isinstance(body, dict):
            raise bad_request("the body must be a JSON object")
        try:
            result = await self.calls.call(partial(self.run, method, body))
            if method == "flush" and self.calls.damaged:  # the end of an indexer run: repaired it?
                await self.calls.call(self.recheck)
        except StoreError as exc:
            code = error_code(exc)
            raise ApiError(STATUS[code], code, str(exc)) from exc
        except (ValueError, KeyError, TypeError) as exc:
            raise bad_request(f"malformed {method} call: {exc}") from exc
        return JSONResponse({"result": to_wire(result)})

    def run(self, method: str, body: dict[str, Any]) -> Any:
        """VectorStore.<method> of the service's store with the call's arguments (on the store thread)."""
        return getattr(self.store, method)(**decode_call(method, body))

    def recheck(self) -> None:
        """Clear the service's "damaged" mark when the store passes its probe again (--recreate, --import)."""
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
