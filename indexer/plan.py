"""Compare the files on disk with the collection: what is unchanged, what to check, what is gone."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from core.library import is_video_name
from indexer.moments import is_moment, moments_by_path, video_digest
from indexer.scan import FileEntry
from store.interface import point_id

MTIME_TOLERANCE = 1e-6


@dataclass
class Plan:
    unchanged: list[FileEntry] = field(default_factory=list)  # same size and mtime as indexed
    check: list[FileEntry] = field(default_factory=list)  # new or modified: hash, then embed or reuse
    stale_ids: list[str] = field(default_factory=list)  # points whose file is gone
    existing: dict[str, dict[str, Any]] = field(default_factory=dict)  # point id -> payload
    by_hash: dict[str, str] = field(default_factory=dict)  # content hash -> a point id holding it
    moments: dict[str, list[str]] = field(default_factory=dict)  # video -> its moments' ids (indexer/moments.py)
    video_by_hash: dict[str, str] = field(default_factory=dict)  # a video's content hash -> its first moment's id

    def ids_of(self, rel_path: str) -> list[str]:
        """The ids of the points a file has in the collection: a photo's one, a video's moments."""
        if is_video_name(rel_path):
            return self.moments.get(rel_path, [])
        pid = point_id(rel_path)
        return [pid] if pid in self.existing else []

    def reuse_source(self, entry: FileEntry, digest: str) -> str | None:
        """The id of a point whose vector fits this content (its own, or a renamed/copied file's); for a video,
        the first moment of a clip with this content (indexer/moments.py copies them all)."""
        if is_video_name(entry.rel_path):
            moments = self.moments.get(entry.rel_path, [])
            if moments and video_digest(self.existing[moments[0]]) == digest:
                return moments[0]
            return self.video_by_hash.get(digest)
        own = point_id(entry.rel_path)
        if self.existing.get(own, {}).get("content_hash") == digest:
            return own
        return self.by_hash.get(digest)


def same_stat(entry: FileEntry, payload: dict[str, Any]) -> bool:
    return payload.get("size") == entry.size and abs(float(payload.get("mtime", -1)) - entry.mtime) < MTIME_TOLERANCE


def in_folder(rel_path: str, folder: str) -> bool:
    return folder == "." or rel_path.startswith(folder + "/")


def make_plan(entries: list[FileEntry], payloads: dict[str, dict[str, Any]], model_id: str,
              unreadable: list[str] | None = None, hold: Collection[str] = ()) -> Plan:
    """`unreadable`: library-relative folders that could not be listed; their points are kept as they are.
    `hold`: library names whose points are kept as they are (files still being written)."""
    plan = Plan(existing=payloads, moments=moments_by_path(payloads))
    on_disk = set()
    for entry in entries:
        owned = plan.ids_of(entry.rel_path)
        on_disk.update(owned)
        payload = payloads.get(owned[0]) if owned else None
        if payload is not None and same_stat(entry, payload) and payload.get("model_id") == model_id:
            plan.unchanged.append(entry)
        else:
            plan.check.append(entry)
    # A point whose file is checked in this run may get new content (and vector) in it: it is no source of
    # vectors for other files, so what a copy or rename reuses does not depend on the order of the writes.
    checked = {pid for entry in plan.check for pid in plan.ids_of(entry.rel_path)}
    plan.by_hash = {p["content_hash"]: pid for pid, p in sorted(payloads.items())
                    if p.get("content_hash") and pid not in checked and not is_moment(p)}
    plan.video_by_hash = {video_digest(payloads[ids[0]]): ids[0] for _, ids in sorted(plan.moments.items())
                          if ids[0] not in checked}
    gone = set(payloads) - on_disk
    if unreadable:  # a point under a folder that could not be listed may still have its file
        gone = {pid for pid in gone if not any(in_folder(str(payloads[pid].get("path", "")), f) for f in unreadable)}
    gone -= {pid for name in hold for pid in [point_id(name), *plan.moments.get(name, [])]}
    plan.stale_ids = sorted(gone)
    return plan
