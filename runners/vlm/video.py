"""Video frames for the VQA model: decode a local clip with PyAV and sample it as qwen-vl-utils would.

qwen-vl-utils 0.0.14 reads files with torchcodec, decord or `torchvision.io.read_video`; the first two
are not installed and torchvision 0.29 no longer has `read_video`, so runners/vlm/model.py samples here.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image

# qwen-vl-utils samples at least this many frames from a video file (when it has them).
MIN_VIDEO_FRAMES = 4


def read_video(path: str | Path, fps: float, max_frames: int) -> tuple[list[Image.Image], float]:
    """Decode a local video file with PyAV; return frames sampled at about `fps` and their sampling rate.

    Follows qwen-vl-utils' rule (at least 4 frames when the clip has them, at most `max_frames`, an even
    count, spread evenly over the clip), decoding sequentially and keeping only the chosen frames.
    qwen-vl-utils 0.0.14 itself reads files with torchcodec, decord or `torchvision.io.read_video`; the
    first two are not installed and torchvision 0.29 no longer has `read_video`, so it cannot read files here.
    """
    import av

    text = str(path)
    if text.startswith("file://"):
        text = text[len("file://"):]
    if "://" in text:
        raise ValueError(f"only local video files are read, got {text!r}")
    if not Path(text).is_file():
        raise FileNotFoundError(f"no such video file: {text}")
    with av.open(text) as container:
        if not container.streams.video:
            raise ValueError(f"{text} has no video stream")
        stream = container.streams.video[0]
        rate = float(stream.average_rate or stream.guessed_rate or 0) or 24.0
        total = int(stream.frames or 0)
        if total <= 0:  # webm/mkv often lack a frame count: estimate from the duration
            if stream.duration is not None and stream.time_base is not None:
                seconds = float(stream.duration * stream.time_base)
            elif container.duration is not None:
                seconds = container.duration / 1_000_000
            else:
                seconds = 0.0
            total = max(1, round(seconds * rate))
        wanted = sample_count(total, rate, fps, max_frames)
        indices = sorted({round(i * (total - 1) / max(wanted - 1, 1)) for i in range(wanted)})
        keep = set(indices)
        frames: list[Image.Image] = []
        decoded = 0
        for frame in container.decode(stream):
            if decoded in keep:
                frames.append(frame.to_image().convert("RGB"))
            decoded += 1
            if decoded > indices[-1]:
                break
        else:  # the clip ended before the estimated frame count
            total = max(decoded, 1)
    if not frames:
        raise ValueError(f"could not decode any frame from {text}")
    sample_fps = len(frames) / total * rate
    return frames, sample_fps


def sample_count(total: int, rate: float, fps: float, max_frames: int) -> int:
    """How many frames to take from a clip of `total` frames at `rate` fps when sampling at `fps`."""
    if total < 2:
        return 1
    want = total / rate * fps
    want = min(max(want, MIN_VIDEO_FRAMES), max_frames, total)
    return max(2, int(want // 2 * 2))


def subsample(frames: Sequence[Any], max_frames: int) -> list[Any]:
    """Keep at most `max_frames` frames, evenly spread."""
    if len(frames) <= max_frames:
        return list(frames)
    step = (len(frames) - 1) / (max_frames - 1)
    return [frames[round(i * step)] for i in range(max_frames)]


def as_rgb(frame: Any) -> Image.Image:
    """A video frame as an RGB PIL image (PIL images and HxWxC uint8 arrays are accepted)."""
    if isinstance(frame, Image.Image):
        return frame if frame.mode == "RGB" else frame.convert("RGB")
    if hasattr(frame, "__array_interface__"):
        return Image.fromarray(frame).convert("RGB")
    raise TypeError(f"video frames must be PIL images or uint8 arrays, got {type(frame).__name__}")
