"""Turns for streaming base64 files: at most SEARCH_STREAM_SLOTS files of search answers are encoded and sent
at once by the API process; the others wait for a turn, which costs nothing while waiting.

Why: the event loop runs every ready stream a little on each pass, so eight answers of 12-MP photos streaming
side by side make each pass long, and a light request (/livez, a search without images) waits several passes
(bench/event_loop.py on 2 cores: a light search 5.7x its idle time with 8 such clients and no limit, 2.9x with 2
slots, 2.6x with 1, which also sent the most: 406 MB/s). A client that stops reading must not keep its turn: a
holder whose piece is not taken within `patience_s` gives its slot up and queues again (at the back: the
semaphore wakes in order) when its client reads on.
"""

from __future__ import annotations

import asyncio


class StreamSlots:
    """At most `count` holders at once (count 0: no limit)."""

    def __init__(self, count: int, patience_s: float = 0.25) -> None:
        self.count = count
        self.patience_s = patience_s
        self._free: asyncio.Semaphore | None = None  # made on first use, inside the serving event loop

    def turn(self) -> Turn:
        if self._free is None and self.count:
            self._free = asyncio.Semaphore(self.count)
        return Turn(self._free, self.patience_s)


class Turn:
    """One stream's turn: `await take()` before producing a piece, `lend()` before yielding it (the slot goes
    back if the client takes longer than patience), `release()` when done (also after an error)."""

    def __init__(self, free: asyncio.Semaphore | None, patience_s: float) -> None:
        self.free = free
        self.patience_s = patience_s
        self.held = False
        self.timer: asyncio.TimerHandle | None = None

    async def take(self) -> None:
        self._cancel_timer()
        if self.free is not None and not self.held:
            await self.free.acquire()
            self.held = True

    def lend(self) -> None:
        """The piece is about to wait for the client: keep the slot only `patience_s` longer."""
        if self.held:
            self.timer = asyncio.get_running_loop().call_later(self.patience_s, self.release)

    def release(self) -> None:
        self._cancel_timer()
        if self.held and self.free is not None:
            self.held = False
            self.free.release()

    def _cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
