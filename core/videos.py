"""Hardened video decoding with PyAV, for the indexer (frames sampled over a clip), /images (the frame at a
time) and /vqa (the frames around a time).

Every reader streams: a frame is scaled down (swscale, in PyAV) to the size its caller wants as soon as it is
decoded, so memory holds a few frames of the caller's size, whatever the clip's length or resolution. The
work per clip is bounded too: a header whose frame size passes MAX_FRAME_PIXELS is refused before anything
is decoded, far samples are reached by seeking (which lands on a keyframe before the target; we decode
forward from there), and at most MAX_DECODED_PER_SAMPLE frames are decoded per sample asked for.
Timestamps that go backwards or are missing never make a sample go back in time.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

from PIL import Image

# A 8K frame is 33 M pixels; a header claiming more (a 16k x 16k frame) is refused before any decoding.
MAX_FRAME_PIXELS = 8192 * 8192
# Decoding more frames than this per sample means the clip's timestamps never reach the target.
MAX_DECODED_PER_SAMPLE = 600
# A sample this far (seconds) past the last decoded frame is reached by seeking, not by decoding forward.
SEEK_GAP_S = 4.0
# A video is streamed, never read whole into memory: LIBRARY_MAX_FILE_MB (what is read into memory) does not
# apply to it; its readers open it with this limit (core/library.py Library.open).
NO_SIZE_LIMIT = 1 << 62
# Containers FFmpeg opens that hold a still image, not a video (a .mp4 that is really a JPEG).
IMAGE_FORMATS = ("image2", "_pipe")


@dataclass(frozen=True)
class Cuts:
    """Scene changes taken as samples besides the times asked for: among the frames decoded on the way to a sample
    (consecutive ones; none are decoded across a seek), a frame whose SIGNATURE_SIDE x SIGNATURE_SIDE luma differs
    from the one before by more than `threshold` (mean absolute difference, 0-255) is kept too, `limit` of them at
    most. A still or slowly moving scene differs by a few levels; a cut to another scene by tens."""

    threshold: float
    limit: int


SIGNATURE_SIDE = 16  # a frame's signature for cuts: its luma shrunk to this square (swscale, as it is decoded)


class BadVideo(Exception):
    """The file is not a video we can read; the message says why (for the summary and for 4xx answers)."""


@dataclass(frozen=True)
class VideoInfo:
    width: int
    height: int
    duration: float | None  # seconds; None when the container does not say
    rate: float  # frames per second (24 when the container does not say)


def open_video(source: str | BinaryIO) -> Any:
    """An av container of `source` (a path or a binary file object); BadVideo when FFmpeg cannot open it."""
    import av

    try:
        return av.open(source, mode="r", metadata_errors="ignore")
    except (av.FFmpegError, OSError, ValueError) as exc:  # av.InvalidDataError for content that is no video
        raise BadVideo(f"not a video FFmpeg can read: {describe(exc)}") from exc


def video_stream(container: Any) -> tuple[Any, VideoInfo]:
    """The container's first video stream, checked before any decoding, and what its header says."""
    name = str(getattr(container.format, "name", ""))
    if any(part in name for part in IMAGE_FORMATS):
        raise BadVideo(f"its content is a still image ({name}), not a video")
    if not container.streams.video:
        raise BadVideo("it has no video stream (audio only?)")
    stream = container.streams.video[0]
    width, height = int(stream.codec_context.width or 0), int(stream.codec_context.height or 0)
    if width * height > MAX_FRAME_PIXELS:
        raise BadVideo(f"its frames are {width}x{height}, more than {MAX_FRAME_PIXELS} pixels")
    stream.thread_type = "AUTO"  # frame and slice threads: decoding is most of the work
    rate = float(stream.average_rate or stream.guessed_rate or 0) or 24.0
    return stream, VideoInfo(width, height, duration_of(container, stream), rate)


def duration_of(container: Any, stream: Any) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        seconds = float(stream.duration * stream.time_base)
    elif container.duration is not None:
        seconds = container.duration / 1_000_000
    else:
        return None
    return seconds if math.isfinite(seconds) and seconds > 0 else None


def sample_times(duration: float | None, interval: float, max_frames: int, max_duration: float) -> list[float]:
    """When to take a frame: every `interval` seconds over the first `max_duration` seconds, and what is left
    of `max_frames` spread evenly over the rest of the clip; `max_frames` spread evenly over the whole clip
    when the first part alone would take more. Unknown duration: every `interval`, `max_frames` at most
    (decoding stops at the clip's end)."""
    if duration is None:
        return [i * interval for i in range(max_frames)]
    dense_end = min(duration, max_duration)
    dense = max(1, math.ceil(dense_end / interval))
    if dense >= max_frames:
        return evenly(0.0, duration, max_frames)
    times = [i * interval for i in range(dense)]
    rest = duration - dense_end
    extra = min(max_frames - dense, math.floor(rest / interval))
    if extra <= 0:
        return times
    step = rest / extra
    return times + [dense_end + (i + 0.5) * step for i in range(extra)]  # the middle of each equal part


def evenly(start: float, end: float, count: int) -> list[float]:
    step = (end - start) / count
    return [start + i * step for i in range(count)]


def scaled_size(width: int, height: int, short_side: int = 0, long_side: int = 0) -> tuple[int, int]:
    """(width, height) shrunk so that the short side is at most `short_side` or the long side at most
    `long_side` (whichever is given), never enlarged, at least 1 x 1."""
    scale = 1.0
    if short_side:
        scale = min(scale, short_side / max(1, min(width, height)))
    if long_side:
        scale = min(scale, long_side / max(1, max(width, height)))
    return max(1, round(width * scale)), max(1, round(height * scale))


def frames_at(container: Any, stream: Any, times: list[float], size: tuple[int, int], cuts: Cuts | None = None
              ) -> Iterator[tuple[float, Image.Image]]:
    """(time, RGB image of `size`) of the first frame at or after each of `times` (sorted), each frame scaled
    as it is decoded, and (with `cuts`) of each scene change decoded on the way. A frame serves one sample at
    most; samples past the clip's end are left out. A clip damaged further on (a truncated file) gives the frames
    before the damage."""
    import av

    decoded, budget, cut = 0, MAX_DECODED_PER_SAMPLE * len(times), 0
    last = position = -math.inf  # the time of the last frame kept / decoded: what is kept never goes back
    frames: Iterator[Any] | None = None
    before = None  # the signature of the frame decoded before (none across a seek)
    try:
        for target in times:
            if target <= last:
                continue  # frames further apart than the samples: this one is served already
            if frames is None or target - position > SEEK_GAP_S:
                if target > SEEK_GAP_S:
                    seek(container, stream, target)
                frames, before = iter(container.decode(stream)), None
            found = None
            for frame in frames:
                decoded += 1
                if decoded > budget:
                    return  # timestamps that never reach the target
                position = frame_time(frame, stream, decoded)
                changed = False
                if cuts is not None and cut < cuts.limit:
                    before, changed = scene_change(frame, before, cuts.threshold)
                if position >= target and position > last:
                    found = frame
                    break
                if changed and position > last:
                    cut, last = cut + 1, position
                    yield last, frame.reformat(size[0], size[1], format="rgb24").to_image()
            if found is None:
                return  # the end of the clip
            last = position
            yield last, found.reformat(size[0], size[1], format="rgb24").to_image()
    except (av.FFmpegError, OSError, ValueError):
        if last == -math.inf:
            raise


def scene_change(frame: Any, before: Any, threshold: float) -> tuple[Any, bool]:
    """`frame`'s signature, and whether it differs from `before` (the previous frame's) by more than
    `threshold`."""
    import numpy as np

    signature = frame.reformat(SIGNATURE_SIDE, SIGNATURE_SIDE, format="gray").to_ndarray().astype(np.int16)
    if before is None:
        return signature, False
    return signature, float(np.abs(signature - before).mean()) > threshold


def seek(container: Any, stream: Any, seconds: float) -> None:
    """Seek to the keyframe at or before `seconds` (decoding forward from there reaches it)."""
    import av

    if stream.time_base is None:
        return
    start = stream.start_time or 0
    try:
        container.seek(start + int(seconds / stream.time_base), stream=stream, backward=True)
    except (av.FFmpegError, OSError, ValueError):
        pass  # an unseekable stream: decoding forward still reaches the target


def frame_time(frame: Any, stream: Any, count: int) -> float:
    """A decoded frame's time in seconds from the stream's start (from its count when it has no timestamp)."""
    if frame.pts is None or stream.time_base is None:
        rate = float(stream.average_rate or stream.guessed_rate or 0) or 24.0
        return (count - 1) / rate
    return float((frame.pts - (stream.start_time or 0)) * stream.time_base)


def read_frames(source: str | BinaryIO, times: list[float] | Callable[[VideoInfo], list[float]],
                short_side: int = 0, long_side: int = 0, cut_threshold: float = 0.0, max_frames: int = 0
                ) -> tuple[list[tuple[float, Image.Image]], VideoInfo]:
    """The frames at `times` (or at the times `times(info)` gives, from what the header says) of the video
    at `source`, scaled (see scaled_size), and with `cut_threshold` the scene changes decoded between them (Cuts:
    `max_frames` in all at most); BadVideo when it cannot be read or no frame decodes."""
    import av

    with open_video(source) as container:
        stream, info = video_stream(container)
        size = scaled_size(info.width, info.height, short_side, long_side)
        if callable(times):
            times = times(info)
        try:
            cuts = Cuts(cut_threshold, max(0, max_frames - len(times))) if cut_threshold > 0 else None
            frames = list(frames_at(container, stream, times, size, cuts))
        except (av.FFmpegError, OSError, ValueError) as exc:
            raise BadVideo(f"cannot decode: {describe(exc)}") from exc
    if not frames:
        raise BadVideo("no frame decodes (a 0-second or damaged clip?)")
    return frames, info


def frame_at(source: str | BinaryIO, seconds: float, long_side: int) -> Image.Image:
    """The frame showing at `seconds` (the last one when `seconds` is past the clip's end), its long side at
    most `long_side` (0: full size). Seeks first: the time it takes does not grow with `seconds`."""
    import av

    with open_video(source) as container:
        stream, info = video_stream(container)
        seek(container, stream, max(0.0, seconds))
        chosen = None
        try:
            for count, frame in enumerate(container.decode(stream), 1):
                at = frame_time(frame, stream, count)
                if chosen is not None and at > seconds:
                    break  # the one before is showing at `seconds`
                chosen = frame
                if at >= seconds or count >= MAX_DECODED_PER_SAMPLE:
                    break
        except (av.FFmpegError, OSError, ValueError) as exc:
            if chosen is None:
                raise BadVideo(f"cannot decode: {describe(exc)}") from exc
        if chosen is None:
            raise BadVideo("no frame decodes (a 0-second or damaged clip?)")
        width, height = scaled_size(info.width or chosen.width, info.height or chosen.height, long_side=long_side)
        return chosen.reformat(width, height, format="rgb24").to_image()


def describe(exc: BaseException) -> str:
    return str(exc).strip() or type(exc).__name__
