"""Video files for tests."""

from __future__ import annotations

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
