"""A video's moments: its sampled frames (indexer/video_frames.py), embedded by CLIP, with consecutive frames
that look alike (the cosine of their vectors at least VIDEO_MERGE_COSINE) merged into one moment, one point.

A moment's point has the vector of its best frame (the one nearest the moment's mean) and names it: `t` (that
frame's time), `start` and `end` (seconds), `moment` (its index in the clip). Its id comes from the video's
library name and that index (moment_id), so a run over the same file writes the same ids; its payload `path`
is the video's, so the plan removes the moments of a video that is gone or renamed like a photo's point.
Its `content_hash` is the file's hash with "#index" after it: a copy of a clip collapses into the original
moment by moment under dedup, and the plan finds a renamed clip by the file's hash (video_digest).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from indexer.decode import Decoded
from store.interface import Point, folders_of, point_id

MEDIA_VIDEO = "video"
MEDIA_IMAGE = "image"


def moment_id(rel_path: str, index: int) -> str:
    """The point id of a video's moment `index` ("#" never ends a library file's suffix, so no photo has it)."""
    return point_id(f"{rel_path}#moment/{index}")


def is_moment(payload: dict[str, Any]) -> bool:
    return payload.get("media") == MEDIA_VIDEO


def video_digest(payload: dict[str, Any]) -> str:
    """The content hash of the file a moment comes from."""
    return str(payload.get("content_hash", "")).partition("#")[0]


def moments_by_path(payloads: dict[str, dict[str, Any]]) -> dict[str, list[str]]:
    """video library name -> the ids of its moments' points, in moment order."""
    found: dict[str, list[tuple[int, str]]] = {}
    for pid, payload in payloads.items():
        if is_moment(payload):
            found.setdefault(str(payload.get("path", "")), []).append((int(payload.get("moment", 0)), pid))
    return {path: [pid for _, pid in sorted(ids)] for path, ids in found.items()}


@dataclass
class Moment:
    index: int
    start: float
    end: float
    t: float  # the best frame's time
    vector: np.ndarray


def merge(times: list[float], vectors: np.ndarray, duration: float, min_cosine: float) -> list[Moment]:
    """Consecutive frames whose vectors have at least `min_cosine` with the running mean of the current
    moment are one moment; each moment ends where the next starts (the last at the clip's end)."""
    groups: list[list[int]] = []
    mean = np.zeros(0, dtype=np.float32)
    for i, vector in enumerate(vectors):
        if groups and float(vector @ unit(mean)) >= min_cosine:
            groups[-1].append(i)
            mean = mean + vector
        else:
            groups.append([i])
            mean = vector.astype(np.float32).copy()
    moments = []
    for index, group in enumerate(groups):
        best = max(group, key=lambda i: float(vectors[i] @ unit(vectors[group].sum(axis=0))))
        end = times[groups[index + 1][0]] if index + 1 < len(groups) else max(duration, times[group[-1]])
        moments.append(Moment(index, times[group[0]], end, times[best], vectors[best]))
    return moments


def unit(vector: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm > 0 else vector


def moment_points(item: Decoded, times: list[float], vectors: np.ndarray, model_id: str,
                  min_cosine: float) -> list[Point]:
    """The points of a video whose frames at `times` got `vectors` (frames that failed left out)."""
    moments = merge(times, np.asarray(vectors, dtype=np.float32), item.duration, min_cosine)
    return [Point(moment_id(item.entry.rel_path, m.index), m.vector, moment_payload(item, m, model_id))
            for m in moments]


def moment_payload(item: Decoded, moment: Moment, model_id: str) -> dict[str, Any]:
    entry = item.entry
    return {
        "path": entry.rel_path,
        "content_hash": f"{item.content_hash}#{moment.index}",
        "size": entry.size,
        "mtime": entry.mtime,
        "width": item.width,
        "height": item.height,
        "indexed_at": time.time(),
        "model_id": model_id,
        "folders": folders_of(entry.rel_path),
        "media": MEDIA_VIDEO,
        "moment": moment.index,
        "t": round(moment.t, 3),
        "start": round(moment.start, 3),
        "end": round(moment.end, 3),
        "duration": round(item.duration, 3),
    }


def copied_points(item: Decoded, sources: Iterable[tuple[dict[str, Any], np.ndarray]]) -> list[Point]:
    """A video's moments taken over from a file with the same content (itself touched, a copy or a rename):
    the source's moments and vectors, under this file's name, size and time."""
    entry = item.entry
    points = []
    for payload, vector in sources:
        index = int(payload.get("moment", 0))
        fields = {**payload, "path": entry.rel_path, "size": entry.size, "mtime": entry.mtime,
                  "folders": folders_of(entry.rel_path), "indexed_at": time.time(),
                  "content_hash": f"{item.content_hash}#{index}"}
        points.append(Point(moment_id(entry.rel_path, index), vector, fields))
    return points
