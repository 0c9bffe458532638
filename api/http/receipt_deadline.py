"""A deadline for receiving each HTTP request: its headers, then its whole body.

uvicorn (which BentoML 1.4.40 runs, with no option to reach this) has no such deadline (upstream
uvicorn #157, open): `timeout_keep_alive` covers only the idle time between requests, so a client that
sends half its headers, or a body one byte a minute, holds a connection (and, once the headers are in,
an ASGI task) for as long as it likes. ASGI middleware cannot help: it runs only after the headers.

`install()` swaps uvicorn's "auto" HTTP protocol for a subclass of the one it would pick, with two timers
per request, armed at its first byte (or when the connection opens): `header_s` for the headers and
`total_s` for headers and body together. On expiry the client gets a 408 in the API's error shape (if
no response has started) and the connection is closed; the app sees `http.disconnect`. A request that
has been fully received is never touched, so long answers and streams are unaffected.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from api.errors import CODES

log = logging.getLogger("service")


class ReceiptDeadline:
    """Mixin over uvicorn's HTTP protocol class (H11Protocol or HttpToolsProtocol)."""

    header_s: float = 10.0
    total_s: float = 60.0

    _timer: asyncio.TimerHandle | None = None
    _started: float = 0.0
    _before: Any = None  # the request cycle that was current when this request began
    _headers_in: bool = False

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self._timer is None and self._receiving_done():
            self._arm()  # the first byte of the next request on a kept-alive connection
        super().data_received(data)  # type: ignore[misc]
        self._progress()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)  # type: ignore[misc]

    def _receiving_done(self) -> bool:
        cycle = getattr(self, "cycle", None)
        return cycle is None or not cycle.more_body

    def _arm(self) -> None:
        loop: asyncio.AbstractEventLoop = self.loop  # type: ignore[attr-defined]
        self._started = loop.time()
        self._before = getattr(self, "cycle", None)
        self._headers_in = False
        self._timer = loop.call_later(self.header_s, self._expired)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _progress(self) -> None:
        """After each read: headers in -> switch to the total deadline; body in -> done."""
        cycle = getattr(self, "cycle", None)
        if self._timer is None or cycle is None or cycle is self._before:
            return  # no request in progress, or its headers are still incomplete
        if not cycle.more_body:
            self._disarm()
        elif not self._headers_in:
            self._headers_in = True
            self._timer.cancel()
            loop: asyncio.AbstractEventLoop = self.loop  # type: ignore[attr-defined]
            remaining = max(0.0, self._started + self.total_s - loop.time())
            self._timer = loop.call_later(remaining, self._expired)

    def _expired(self) -> None:
        self._timer = None
        transport = self.transport  # type: ignore[attr-defined]
        cycle = getattr(self, "cycle", None)
        if cycle is not None and cycle is self._before and not cycle.response_complete:
            return  # a pipelined request waits behind a response still being sent: not the client's fault
        if transport is None or transport.is_closing():
            return
        part = "body" if self._headers_in else "headers"
        limit = self.total_s if self._headers_in else self.header_s
        log.warning("closing a connection from %s: request %s not received within %g s",
                    getattr(self, "client", None), part, limit)
        if not (self._headers_in and cycle is not None and cycle.response_started):
            transport.write(timeout_response(part, limit))
        transport.close()


def timeout_response(part: str, limit: float) -> bytes:
    """A raw HTTP 408 in the API's error shape (written straight to the socket: the request never
    reached, or never finished reaching, the app)."""
    body = json.dumps({"status": "error", "error": {
        "code": CODES[408], "message": f"the request {part} did not arrive within {limit:g} s"}}).encode()
    head = (f"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
            "connection: close\r\nx-content-type-options: nosniff\r\n\r\n").encode("ascii")
    return head + body


def protocol_class(header_s: float, total_s: float) -> type:
    """uvicorn's automatic HTTP protocol class with the receipt deadlines mixed in."""
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    return type("DeadlineHTTPProtocol", (ReceiptDeadline, AutoHTTPProtocol),
                {"header_s": header_s, "total_s": total_s})


def install(header_s: float, total_s: float) -> None:
    """Make every uvicorn server started later in this process use the deadlines (BentoML builds its
    `uvicorn.Config` with the default http="auto", after importing the service module)."""
    import uvicorn.config

    global DeadlineHTTPProtocol
    DeadlineHTTPProtocol = protocol_class(header_s, total_s)
    uvicorn.config.HTTP_PROTOCOLS["auto"] = f"{__name__}:DeadlineHTTPProtocol"


DeadlineHTTPProtocol: type | None = None
