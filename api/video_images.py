"""GET /images/{video}: the library's videos through the route of its images (api/images.py).

`?t=SECONDS[&size=N][&format=jpeg|webp]` is the frame showing at `t` as a picture (a thumbnail whose longer side
is at most N, default 256; size=0: the frame at full size), cached like a photo's thumbnail; it is found by
seeking (core/videos.py), so it costs the same at any `t`. Without `t` (and without `size`, or with size=0)
it is the file itself, streamed from the descriptor in pieces, with a single byte `Range` answered 206, so a
browser plays it from any moment. As for photos, only content of a known video type is served (checked from
its first bytes, not its name): anything else under a video name answers the 404 of a missing file.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Iterator

from api.errors import bad_request
from core.library import OpenedFile
from core.videos import BadVideo, frame_at

PIECE = 1 << 20  # bytes read from the file per piece streamed
MATROSKA = b"\x1a\x45\xdf\xa3"
# ISO base media boxes a QuickTime / MP4 file starts with
ISO_BOXES = (b"ftyp", b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot")


def parse_t(value: str | None) -> float | None:
    """`t` in seconds (None when absent); 400 unless a finite number >= 0."""
    if value is None or value == "":
        return None
    try:
        seconds = float(value)
    except ValueError:
        raise bad_request(f"t: {value!r} is not a number of seconds") from None
    if not math.isfinite(seconds) or seconds < 0:
        raise bad_request(f"t: must be a finite number of seconds, 0 or more, got {value!r}")
    return round(seconds, 3)


def video_type(opened: OpenedFile) -> str:
    """The media type of a video's content, from its first bytes; BadVideo for any other content."""
    head = opened.read(0, 16)
    if head[4:8] in ISO_BOXES:
        return "video/quicktime" if head[8:10] == b"qt" else "video/mp4"
    if head.startswith(MATROSKA):
        return "video/webm" if b"webm" in opened.read(0, 64) else "video/x-matroska"
    if head.startswith(b"RIFF") and head[8:11] == b"AVI":
        return "video/x-msvideo"
    raise BadVideo("its content is not a known video type")


def render_frame(opened: OpenedFile, t: float, size: int, pil_format: str, quality: int) -> bytes:
    """The frame at `t` as a picture, its longer side at most `size` (0: as decoded)."""
    image = frame_at(opened.stream(), t, size)  # type: ignore[arg-type]  # read/seek/tell is all PyAV uses
    out = io.BytesIO()
    image.save(out, format=pil_format, quality=quality)
    return out.getvalue()


class FilePieces:
    """Bytes [start, end) of an opened file in PIECE-byte pieces, sent after the opened file is closed: it
    holds a copy of the descriptor, closed when the last piece is sent or when it is dropped unsent (a client
    gone before the first piece); never more than the size fstat gave."""

    def __init__(self, opened: OpenedFile, start: int, end: int) -> None:
        self.fd: int | None = os.dup(opened.fd)
        self.start, self.end = start, end

    def __iter__(self) -> Iterator[bytes]:
        try:
            while self.fd is not None and self.start < self.end:
                chunk = os.pread(self.fd, min(PIECE, self.end - self.start), self.start)
                if not chunk:  # truncated since: what is there
                    return
                self.start += len(chunk)
                yield chunk
        finally:
            self.close()

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def __del__(self) -> None:
        self.close()
