"""Search over a collection that holds video moments (indexer/moments.py): a clip is listed once, at its best
moment, with its other matching moments beside it (best first), and paging counts that list.

A collection without videos (or a search for images only, or by words only: moments have no description) is
searched exactly as before, one store query with the page's offset. Otherwise the store is asked for the
first hits from the top, several times the page's end, and more while the clips' moments leave the page short.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

from api.search_fields import SearchPage
from api.store_calls import StoreCalls
from api.vqa_moments import frames_near
from core.library import Library, NotInLibrary
from core.videos import BadVideo
from store.interface import Hit, SearchFilter

CHECK_TTL_S = 2.0  # how long "the collection holds videos" is trusted before the store is asked again
FETCH_FACTOR = 3  # hits fetched per result wanted, at first
MAX_FETCH = 10_000  # hits fetched at most for one page
FRAME_BYTES = 256 * 1024  # what a moment's frame is counted as against SEARCH_MAX_RESPONSE_MB (a JPEG, 1024 px)
MOMENTS_KEY = "moments"  # the other moments of a clip, in a grouped hit's payload: [(score, payload), ...]


class MomentSearch:
    def __init__(self, store: StoreCalls) -> None:
        self.store = store
        self.checked_at = -CHECK_TTL_S
        self.any_video = False

    async def has_videos(self, vector: Any) -> bool:
        """Whether the collection holds a moment, re-checked at most every CHECK_TTL_S."""
        if time.monotonic() - self.checked_at >= CHECK_TTL_S:
            found = await self.store.run(self.store.store.search, vector, 1, SearchFilter(media="video"))
            self.any_video, self.checked_at = bool(found), time.monotonic()
        return self.any_video

    async def search(self, vector: Any, top_k: int, page: SearchPage, text: str | None = None) -> list[Hit]:
        """The page's hits, a clip once (see the module docstring)."""
        search = self.store.store.search
        if vector is None or page.where.media == "image" or not await self.has_videos(vector):
            found: list[Hit] = await self.store.run(search, vector, top_k, page.where, page.offset, page.dedup, text)
            return found
        need = page.offset + top_k
        limit = need * FETCH_FACTOR
        while True:
            raw = await self.store.run(search, vector, limit, page.where, 0, page.dedup, text)
            grouped = group_moments(raw)
            if len(grouped) >= need or len(raw) < limit or limit >= MAX_FETCH:
                return grouped[page.offset:need]
            limit = min(limit * 4, MAX_FETCH)


def group_moments(hits: list[Hit]) -> list[Hit]:
    """Hits in order, each clip's moments folded into its best one (the first: hits come best first)."""
    out: list[Hit] = []
    clips: dict[str, Hit] = {}
    for hit in hits:
        if hit.payload.get("media") != "video":
            out.append(hit)
            continue
        path = str(hit.payload.get("path", ""))
        if path in clips:
            clips[path].payload[MOMENTS_KEY].append((hit.score, hit.payload))
            continue
        clips[path] = replace(hit, payload={**hit.payload, MOMENTS_KEY: []})
        out.append(clips[path])
    return out


def result_bytes(payload: dict[str, Any]) -> int:
    """The bytes a result's `image_base64` holds: the file's, a video moment's frame's."""
    return FRAME_BYTES if payload.get("media") == "video" else int(payload.get("size") or 0)


def moment_frame(library: Library, rel: str, t: float) -> bytes | None:
    """A video moment's frame as a JPEG (`image_base64` of its result); None when the clip is gone or no
    longer decodes."""
    try:
        return frames_near(library, rel, [t])[0]
    except (NotInLibrary, BadVideo):
        return None
