"""The ASGI pieces every middleware of the service shares: the types, the probe paths, the one `send`
wrapper that notes a response's status, and the route (path template) the app matched a request to."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any

from starlette.routing import Match

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

# BentoML's health probes: always open (no API key), never logged, counted or reshaped.
PROBES = frozenset({"/livez", "/readyz", "/healthz"})
METRICS_PATH = "/metrics"


class StatusWatch:
    """A `send` that notes the response's status (500 until one starts: an app that raised) and whether
    anything went out; `on_start` may change the http.response.start message (to add headers)."""

    def __init__(self, send: Send, on_start: Callable[[Message], Message] | None = None) -> None:
        self.send = send
        self.on_start = on_start
        self.status = 500
        self.started = False  # a message went out: the response has begun

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = int(message["status"])
            if self.on_start is not None:
                message = self.on_start(message)
        self.started = True
        await self.send(message)


def route_of(scope: Scope) -> str | None:
    """The path template of the route the app matched (e.g. "/images/{path:path}"), read after the app ran:
    Starlette's router notes it in the request's scope (the innermost router's, for a mounted app); None
    when no route matched (a 404)."""
    path = getattr(scope.get("route"), "path", None)
    return None if path is None else str(path)


def routes_of(app: Any) -> Sequence[Any]:
    """The routes of the Starlette app or router inside `app`, found through the middlewares' `.app`
    (every middleware keeps the app it wraps there); () when there is none."""
    seen: set[int] = set()
    while app is not None and id(app) not in seen:
        seen.add(id(app))
        routes = getattr(app, "routes", None)
        if isinstance(routes, list):
            return routes
        app = getattr(app, "app", None)
    return ()


def match_route(routes: Sequence[Any], scope: Scope) -> str | None:
    """The path template of the route in `routes` (a mounted app's routes included) that `scope` would
    reach, without running it: for a request refused before the app routed it; None when none would.
    As Starlette's router: the first full match, else the first partial one (a wrong method: 405)."""
    found: dict[Match, list[tuple[Any, Scope]]] = {Match.FULL: [], Match.PARTIAL: [], Match.NONE: []}
    for route in routes:
        match, child = route.matches(scope)
        found[match].append((route, child))
    for route, child in (found[Match.FULL] + found[Match.PARTIAL])[:1]:
        inner = routes_of(getattr(route, "app", None)) if hasattr(route, "routes") else ()
        return match_route(inner, {**scope, **child}) if inner else str(route.path)
    return None
