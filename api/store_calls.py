"""The vector store as the API uses it: each call on the store's own thread (the embedded store is not
for concurrent use and must not block the event loop); a store that cannot answer is a 503."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from api.errors import unavailable
from store.base import StoreError, VectorStore

log = logging.getLogger("service")


class StoreCalls:
    def __init__(self, store: VectorStore, retry_after_s: int) -> None:
        self.store = store
        self.retry_after_s = retry_after_s
        self.thread = ThreadPoolExecutor(1, thread_name_prefix="store")

    async def call(self, func: Callable[..., Any], *args: Any) -> Any:
        """`func(*args)` on the store's thread, its errors as they are (the indexer's write path,
        api/internal_store.py, shares this thread, so its writes and the searches run one at a time)."""
        return await asyncio.get_running_loop().run_in_executor(self.thread, func, *args)

    async def run(self, func: Callable[..., Any], *args: Any) -> Any:
        """`func(*args)` (a method of `self.store`) on the store's thread; StoreError -> 503."""
        try:
            return await self.call(func, *args)
        except StoreError as exc:
            log.warning("store error: %s", exc)
            raise unavailable("store_unavailable", str(exc), self.retry_after_s) from exc
