"""Bounded caches for follow-up questions: an LRU by bytes, and the content keys its entries are found by.

A second question about a photo, the next turn of a chat that resends its image, `/ask` asked again over the
same photos, or `/vqa` after `--describe`: each would pay the vision tower and the prompt's prefill again.
runners/vlm/torch_reuse.py keeps both outputs here, keyed by what the model saw (the resized pixels, their grid,
the prompt's tokens), never by a name or a placeholder: Qwen's image placeholder tokens are the same for every
image of a size, so a key without the pixels would give one photo another's answer.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from core.telemetry import count_cache

MIB = 1024 * 1024


@dataclass
class Entry:
    value: Any
    size: int  # bytes


class ByteLRU:
    """Least-recently-used entries whose sizes together stay within `limit` bytes (0: keeps nothing).

    Thread-safe. A value larger than the whole limit is not kept (the request still gets it: only reuse is
    lost); evicting never raises. Hits, misses and evictions go to /metrics (`mms_vqa_cache_total`) under
    `name`, and `info()` is what /health shows.
    """

    def __init__(self, name: str, limit: int) -> None:
        self.name = name
        self.limit = limit
        self.entries: OrderedDict[str, Entry] = OrderedDict()
        self.size = 0
        self.hits = self.misses = self.evictions = 0
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.limit > 0

    def get(self, key: str) -> Any | None:
        with self._lock:
            entry = self.entries.get(key)
            if entry is not None:
                self.entries.move_to_end(key)
                self.hits += 1
            else:
                self.misses += 1
        count_cache(self.name, "hit" if entry is not None else "miss")
        return entry.value if entry is not None else None

    def put(self, key: str, value: Any, size: int) -> None:
        if size > self.limit:
            return
        with self._lock:
            old = self.entries.pop(key, None)
            if old is not None:
                self.size -= old.size
            self.entries[key] = Entry(value, size)
            self.size += size
            evicted = self.evict()
        for _ in range(evicted):
            count_cache(self.name, "eviction")

    def evict(self) -> int:
        """Drop the least recently used entries until the rest fit (called under the lock)."""
        evicted = 0
        while self.size > self.limit and self.entries:
            _, entry = self.entries.popitem(last=False)
            self.size -= entry.size
            evicted += 1
        self.evictions += evicted
        return evicted

    def info(self) -> dict[str, int]:
        with self._lock:
            return {"entries": len(self.entries), "bytes": self.size, "limit_bytes": self.limit,
                    "hits": self.hits, "misses": self.misses, "evictions": self.evictions}


def content_key(*parts: bytes | str | int | Iterable[int]) -> str:
    """A SHA-256 over every part, each length-prefixed so that no two different part lists read the same."""
    digest = hashlib.sha256()
    for part in parts:
        if isinstance(part, str):
            data = part.encode()
        elif isinstance(part, int):
            data = str(part).encode()
        elif isinstance(part, bytes):
            data = part
        else:
            data = ",".join(str(int(value)) for value in part).encode()
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.hexdigest()
