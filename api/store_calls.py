"""The vector store as the API uses it: each call on the store's own thread (the embedded store is not
for concurrent use and must not block the event loop); a store that cannot answer is a 503, a damaged
one (StoreDamagedError) a 503 "store_damaged" that also marks the service degraded (/health) and not
ready (/readyz). What a client reads never carries a server path: the full message goes to the log."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from api.errors import ApiError, unavailable
from store.interface import StoreDamagedError, StoreError, StoreFullError, VectorStore

log = logging.getLogger("service")
# An absolute path (not the path part of a URL: "host:6333/x" and "//" are left alone).
ABSOLUTE_PATH = re.compile(r"(?<![\w:/.~-])/[^\s'\"()<>,;]+")
DAMAGED = ("the vector store is damaged: searches are refused until it is repaired. The administrator can see "
           "what is damaged with `python -m indexer --verify` (the service log says more).")


class StoreCalls:
    def __init__(self, store: VectorStore, retry_after_s: int) -> None:
        self.store = store
        self.retry_after_s = retry_after_s
        self.thread = ThreadPoolExecutor(1, thread_name_prefix="store")
        self.damaged: str | None = None  # why the store is damaged (server side), once it was found so

    def mark_damaged(self, exc: StoreDamagedError) -> None:
        if self.damaged is None:
            log.error("%s", exc)
        self.damaged = str(exc)

    async def call(self, func: Callable[..., Any], *args: Any) -> Any:
        """`func(*args)` on the store's thread, its errors as they are (the indexer's write path,
        api/internal_store.py, shares this thread, so its writes and the searches run one at a time)."""
        return await asyncio.get_running_loop().run_in_executor(self.thread, func, *args)

    async def run(self, func: Callable[..., Any], *args: Any) -> Any:
        """`func(*args)` (a method of `self.store`) on the store's thread; StoreError -> 503."""
        try:
            return await self.call(func, *args)
        except StoreDamagedError as exc:
            self.mark_damaged(exc)
            raise unavailable("store_damaged", DAMAGED, self.retry_after_s) from exc
        except StoreFullError as exc:
            log.warning("store error: %s", exc)
            raise ApiError(507, "insufficient_storage", "the vector store's disk is full: nothing was written; "
                           "free some space and try again") from exc
        except StoreError as exc:
            log.warning("store error: %s", exc)
            raise unavailable("store_unavailable", self.public(str(exc)), self.retry_after_s) from exc

    def public(self, message: str) -> str:
        """`message` for a client: the store folder and any other absolute path replaced by a name."""
        folder = getattr(self.store, "folder", None)
        if folder is not None:
            for form in {str(folder.resolve()), str(folder)}:
                message = message.replace(form, "QDRANT_PATH")
        return ABSOLUTE_PATH.sub("<server path>", message)
