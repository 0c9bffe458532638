"""Mapper for videos: hash a library video and sample its frames, CLIP-sized, as they are decoded.

The file is read through one descriptor (core/library.py Library.open), never whole into memory: the hash
reads it in chunks, PyAV reads it through a file object over the same descriptor (core/videos.py).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import BinaryIO

from PIL import Image

from core.library import Library, NotInLibrary
from core.videos import NO_SIZE_LIMIT, BadVideo, VideoInfo, read_frames, sample_times
from indexer.scan import FileEntry

CLIP_SIDE = 224  # CLIP's input size: frames are scaled to this short side as they are decoded
CHUNK = 8 << 20  # bytes hashed at a time


@dataclass(frozen=True)
class VideoSampling:
    """Which frames of a video are embedded and when two are one moment (the VIDEO_* settings)."""

    interval: float = 1.0
    max_frames: int = 240
    max_duration: float = 120.0
    merge_cosine: float = 0.92
    scene_cut: float = 20.0  # VIDEO_SCENE_CUT: core/videos.py Cuts' threshold; 0: no frames at scene changes

    @classmethod
    def from_settings(cls) -> VideoSampling:
        from config import get_settings

        s = get_settings()
        return cls(s.video_frame_interval_s, s.video_max_frames, s.video_max_duration_s, s.video_merge_cosine,
                   s.video_scene_cut)


@lru_cache(maxsize=8)
def library_at(root: Path) -> Library:
    return Library(root)


@dataclass
class VideoRead:
    content_hash: str = ""
    frames: list[tuple[float, Image.Image]] | None = None  # (seconds, CLIP-sized RGB frame), in time order
    width: int = 0
    height: int = 0
    duration: float = 0.0
    error: str | None = None
    gone: bool = False


def read_video(entry: FileEntry, sampling: VideoSampling, needs_frames: Callable[[str], bool] | None = None
               ) -> VideoRead:
    """Hash the video and, unless `needs_frames(hash)` says its vectors can be reused, sample its frames.
    Never raises: errors go into `.error`, a file deleted since the scan sets `.gone`."""
    try:
        with library_at(entry.root).open(entry.rel_path, NO_SIZE_LIMIT) as opened:
            if opened.found.size == 0:
                return VideoRead(error="empty file")
            result = VideoRead(content_hash=file_hash(opened.read, opened.found.size))
            if needs_frames is None or needs_frames(result.content_hash):
                sample(result, opened.stream(), sampling)  # type: ignore[arg-type]  # read/seek/tell
            return result
    except NotInLibrary as exc:
        if isinstance(exc.__cause__, FileNotFoundError):
            return VideoRead(gone=True)
        return VideoRead(error=f"cannot read: {exc.reason}")
    except OSError as exc:
        return VideoRead(error=f"cannot read: {exc.strerror or exc}")


def file_hash(read: Callable[[int, int], bytes], size: int) -> str:
    """The content hash photos get too (indexer/decode.py content_hash), read CHUNK bytes at a time."""
    digest = hashlib.blake2b(digest_size=16)
    for start in range(0, size, CHUNK):
        digest.update(read(start, CHUNK))
    return digest.hexdigest()


def sample(result: VideoRead, stream: BinaryIO, sampling: VideoSampling) -> None:
    """Fill `result` with the sampled frames, or say why there are none."""
    def times(info: VideoInfo) -> list[float]:
        return sample_times(info.duration, sampling.interval, sampling.max_frames, sampling.max_duration)

    try:
        frames, info = read_frames(stream, times, short_side=CLIP_SIDE, cut_threshold=sampling.scene_cut,
                                   max_frames=sampling.max_frames)
    except BadVideo as exc:
        result.error = str(exc)
        return
    result.frames = frames
    result.width, result.height = info.width, info.height
    result.duration = info.duration or frames[-1][0]
