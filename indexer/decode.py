"""Mapper: read, hash and decode image files (runs in a worker pool)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from PIL import Image

from core.images import BadImage, clip_view, load_image
from core.library import Library, NotInLibrary, is_video_name
from indexer.scan import FileEntry
from indexer.video_frames import VideoSampling, read_video


@dataclass
class Decoded:
    entry: FileEntry
    content_hash: str
    image: Image.Image | None = None
    width: int = 0
    height: int = 0
    error: str | None = None
    gone: bool = False  # deleted (or moved away) since the scan
    # A video (indexer/video_frames.py): its sampled frames (seconds, CLIP-sized image) instead of `image`,
    # each embedded in the photos' batches and merged into moments (indexer/moments.py).
    frames: list[tuple[float, Image.Image]] | None = None
    duration: float = 0.0

    @property
    def is_video(self) -> bool:
        return is_video_name(self.entry.rel_path)


def content_hash(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


@lru_cache(maxsize=8)
def library_at(root: Path) -> Library:
    return Library(root)


def read_file(entry: FileEntry) -> tuple[bytes | None, str | None]:
    """The file's bytes, or (None, why); (None, None) when it is gone. Read as the API reads it: checked by
    the library rule again and read through one no-follow descriptor (core/library.py), so a file swapped
    for a link, FIFO or device since the scan is refused, never read and never waited on."""
    try:
        data = library_at(entry.root).read_bytes(entry.rel_path)
    except NotInLibrary as exc:
        if isinstance(exc.__cause__, FileNotFoundError):
            return None, None
        return None, f"cannot read: {exc.reason}"
    if not data:
        return None, "empty file"
    return data, None


def decode_entry(
    entry: FileEntry, draft_size: int | None = None, needs_image: Callable[[FileEntry, str], bool] | None = None,
    video: VideoSampling | None = None,
) -> Decoded:
    """Read, hash and decode one file; skip decoding when `needs_image(entry, hash)` says the
    vector can be reused. Never raises: errors go into `.error`, a file deleted since the scan
    sets `.gone`. A video's frames are sampled as `video` says (default: the VIDEO_* settings)."""
    if is_video_name(entry.rel_path):
        return decode_video(entry, video or VideoSampling.from_settings(), needs_image)
    data, error = read_file(entry)
    if data is None:
        return Decoded(entry, "", error=error, gone=error is None)
    result = Decoded(entry, content_hash(data))
    if needs_image is not None and not needs_image(entry, result.content_hash):
        return result
    try:
        image, result.width, result.height = load_image(data, draft_size)
    except BadImage as exc:
        result.error = str(exc)
        return result
    # Only CLIP's view waits in the embed batch: bounded whatever the file's shape (core/images.py).
    result.image = clip_view(image)
    return result


def decode_video(entry: FileEntry, sampling: VideoSampling,
                 needs_image: Callable[[FileEntry, str], bool] | None) -> Decoded:
    needs = None if needs_image is None else (lambda digest: needs_image(entry, digest))
    read = read_video(entry, sampling, needs)
    return Decoded(entry, read.content_hash, width=read.width, height=read.height, error=read.error,
                   gone=read.gone, frames=read.frames, duration=read.duration)
