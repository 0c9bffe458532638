"""A running service's write path over real HTTP for tests that write from other processes (Ray workers):
the embedded store behind api/internal_store.py served by uvicorn in a thread of this process, its address
file written as the service writes it, and how many writes were in flight at once."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from helpers.stores import ServedEdge
from store.via_service import service_file_path


class CountingService:
    """ServedEdge's handler, counting the upserts in flight (each held a moment, so writers overlap)."""

    def __init__(self, served: ServedEdge, hold_s: float = 0.3) -> None:
        self.served = served
        self.hold_s = hold_s
        self.active = 0
        self.peak_upserts = 0

    async def handle(self, request: Any) -> Any:
        upsert = request.path_params.get("op") == "upsert"
        if upsert:
            self.active += 1
            self.peak_upserts = max(self.peak_upserts, self.active)
            await asyncio.sleep(self.hold_s)
        try:
            return await self.served.internal.handle(request)
        finally:
            if upsert:
                self.active -= 1


@contextmanager
def served_edge_over_http(folder: Path, collection: str = "images") -> Iterator[CountingService]:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.routing import Route

    served = ServedEdge(folder, collection)
    service = CountingService(served)
    app = Starlette(routes=[Route("/internal/store/{op}", service.handle, methods=["POST"])])
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    served.internal.advertise(service_file_path(folder, collection), f"http://127.0.0.1:{port}", collection)
    try:
        yield service
    finally:
        served.internal.withdraw()
        server.should_exit = True
        thread.join(timeout=10)
        served.close()
