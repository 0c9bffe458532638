"""Video files for tests."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

from PIL import Image


def write_clip(path: Path, frames: list[Image.Image], fps: int, codec: str) -> Path:
    """`frames` encoded with `codec` (e.g. libx264, libvpx-vp9) at `fps` into `path`."""
    import av
    from av.video.stream import VideoStream

    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        assert isinstance(stream, VideoStream)
        stream.width, stream.height = frames[0].size
        stream.pix_fmt = "yuv420p"
        for image in frames:
            container.mux(stream.encode(av.VideoFrame.from_image(image)))
        container.mux(stream.encode())
    return path


def shape_frames(segments: list[tuple[str, str, float]], fps: int, size: int = 96, seed: int = 1) -> list[Image.Image]:
    """Frames of still shapes: each (shape, colour, seconds) segment after the one before (tests/shapes.py)."""
    from shapes import draw_shape

    frames: list[Image.Image] = []
    for shape, color, seconds in segments:
        frames += [draw_shape(shape, color, size=size, seed=seed)] * round(seconds * fps)
    return frames


def write_timed_clip(path: Path, frames: list[Image.Image], times: list[float], codec: str = "libx264") -> Path:
    """`frames` shown at `times` (seconds, a millisecond time base): a variable frame rate clip."""
    import av
    from av.video.stream import VideoStream

    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=30)
        assert isinstance(stream, VideoStream)
        stream.width, stream.height = frames[0].size
        stream.pix_fmt = "yuv420p"
        stream.codec_context.time_base = Fraction(1, 1000)
        for image, at in zip(frames, times, strict=True):
            frame = av.VideoFrame.from_image(image)
            frame.pts, frame.time_base = round(at * 1000), Fraction(1, 1000)
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def write_audio_only(path: Path, seconds: float = 1.0) -> Path:
    """An mp4 with an AAC audio stream and no video stream."""
    import av
    import numpy as np

    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=44100)
        samples = np.zeros((1, 1024), dtype=np.float32)
        for i in range(round(seconds * 44100 / 1024)):
            frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 44100, i * 1024
            container.mux(stream.encode(frame))  # type: ignore[attr-defined]
        container.mux(stream.encode())  # type: ignore[attr-defined]
    return path


def write_empty_clip(path: Path, size: int = 96) -> Path:
    """A container with a video stream and not one frame: a 0-second clip."""
    import av
    from av.video.stream import VideoStream

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=10)
        assert isinstance(stream, VideoStream)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        container.start_encoding()  # the header, with no packet after it
    return path


def jump_back(path: Path, after_block: int, milliseconds: int) -> Path:
    """Rewrite a short Matroska clip (one cluster) so that its timestamps jump back by `milliseconds` from the
    `after_block`-th frame on: each SimpleBlock (ID 0xA3, a size, track 0x81, a 16-bit time relative to the
    cluster) gets its time moved. Muxers refuse to write such a clip, so it is made by hand."""
    data = bytearray(path.read_bytes())
    blocks, at = [], data.find(b"\xa3")
    while at >= 0:
        length = next((n for n in range(1, 9) if data[at + 1] & (0x80 >> (n - 1))), 9)
        if length <= 8 and data[at + 1 + length] == 0x81:
            blocks.append(at + 2 + length)
        at = data.find(b"\xa3", at + 1)
    for start in blocks[after_block:]:
        moved = int.from_bytes(data[start:start + 2], "big", signed=True) - milliseconds
        data[start:start + 2] = moved.to_bytes(2, "big", signed=True)
    path.write_bytes(bytes(data))
    return path


def write_huge_header_clip(path: Path, claimed: int = 16000) -> Path:
    """A Motion-JPEG Matroska clip of 64 x 64 frames whose JPEG headers (SOF0) each claim `claimed` x `claimed`
    pixels: what a decoder believes before it allocates a frame."""
    import av
    from av.video.stream import VideoStream

    with av.open(str(path), "w") as container:
        stream = container.add_stream("mjpeg", rate=10)
        assert isinstance(stream, VideoStream)
        stream.width = stream.height = 64
        stream.pix_fmt = "yuvj420p"
        for image in shape_frames([("circle", "red", 1)], 10, size=64):
            container.mux(stream.encode(av.VideoFrame.from_image(image)))
        container.mux(stream.encode())
    data = bytearray(path.read_bytes())
    at = data.find(b"\xff\xc0")
    while at >= 0:  # SOF0: marker, length (2), precision (1), height (2), width (2)
        data[at + 5:at + 9] = claimed.to_bytes(2, "big") * 2
        at = data.find(b"\xff\xc0", at + 2)
    path.write_bytes(bytes(data))
    return path
