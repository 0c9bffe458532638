"""Requests refused before anything reads them, and redirects that never echo the Host header.

`RequestGuard` sits inside the request log and counters (its refusals are logged and counted) and outside
the limits (docs/security.md):

- a request carrying both Content-Length and Transfer-Encoding answers 400 with `Connection: close`, and
  the connection is closed (RFC 9112 §6.3: the framing is ambiguous, a proxy in front may have read it
  the other way, so nothing more is read from that connection);
- the Host header must name an allowed host: ALLOWED_HOSTS when set ("*" allows any); when unset and
  without API_KEY, a request that arrives at a loopback address (a service bound to 127.0.0.1, or one
  bound to 0.0.0.0 reached through localhost) must name a loopback host (localhost, *.localhost,
  127.0.0.1, [::1]) or none, so a web page cannot read it through DNS rebinding (its Host is the
  attacker's name); otherwise any. Probes (/livez, /readyz, /healthz) hold no data and are not checked.
  A refusal is 400 `host_not_allowed`;
- an absolute `Location` of a redirect (Starlette's /health/ -> /health, /ui -> /ui/) becomes a path
  (RFC 9110 allows a relative reference), so an attacker's Host never comes back in a response.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit, urlunsplit

from api.errors import ApiError
from api.http.asgi_types import PROBES, App, Message, Receive, Scope, Send

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


def parse_allowed_hosts(value: str | None) -> frozenset[str] | None:
    """ALLOWED_HOSTS as a set of lower-case names (ports dropped); None when unset or empty."""
    names = frozenset(host_name(item) for item in (value or "").split(",") if item.strip())
    return names or None


def host_name(value: str) -> str:
    """The name of a Host header value, lower-case, without port or trailing dot ("[::1]:3000" -> "::1")."""
    text = value.strip().lower()
    if text.startswith("["):  # an IPv6 literal
        return text[1:].split("]", 1)[0]
    if text.count(":") == 1:
        text = text.split(":", 1)[0]
    return text.rstrip(".")


def is_loopback_name(name: str) -> bool:
    if name in LOOPBACK_NAMES or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def is_loopback_address(address: str | None) -> bool:
    if not address:
        return False
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    return bool(ip.is_loopback or (mapped is not None and mapped.is_loopback))


def header_values(scope: Scope, name: bytes) -> list[bytes]:
    return [value for key, value in scope.get("headers", []) if key.lower() == name]


def relative_location(value: bytes) -> bytes:
    """An absolute redirect target as a path (with query and fragment); anything else unchanged."""
    try:
        parts = urlsplit(value.decode("latin-1"))
    except ValueError:
        return value
    if not parts.scheme and not parts.netloc:
        return value
    path = parts.path or "/"
    if path.startswith("//"):  # never a scheme-relative URL, which names a host
        path = "/" + path.lstrip("/")
    return urlunsplit(("", "", path, parts.query, parts.fragment)).encode("latin-1")


class RequestGuard:
    def __init__(self, app: App, *, allowed_hosts: str | None, api_key_set: bool) -> None:
        self.app = app
        self.allowed = parse_allowed_hosts(allowed_hosts)
        self.api_key_set = api_key_set

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if header_values(scope, b"content-length") and header_values(scope, b"transfer-encoding"):
            refusal = ApiError(400, "invalid_framing", "a request may not carry both Content-Length and "
                               "Transfer-Encoding (RFC 9112); the connection is closed",
                               {"Connection": "close"})
            return await refusal.response()(scope, receive, send)
        if scope.get("path") not in PROBES and not self.host_allowed(scope):
            refusal = ApiError(400, "host_not_allowed", "this server does not answer to that Host name: "
                               "add it to ALLOWED_HOSTS (docs/security.md)")
            return await refusal.response()(scope, receive, send)

        async def without_host(message: Message) -> None:
            if message["type"] == "http.response.start" and 300 <= int(message["status"]) < 400:
                message["headers"] = [(k, relative_location(v) if k.lower() == b"location" else v)
                                      for k, v in message.get("headers", [])]
            await send(message)

        await self.app(scope, receive, without_host)

    def host_allowed(self, scope: Scope) -> bool:
        hosts = header_values(scope, b"host")
        if len(hosts) > 1:
            return False
        name = host_name(hosts[0].decode("latin-1")) if hosts else ""
        if self.allowed is not None:
            return "*" in self.allowed or name in self.allowed
        server = scope.get("server")
        if self.api_key_set or not is_loopback_address(server[0] if server else None):
            return True
        return not name or is_loopback_name(name)
