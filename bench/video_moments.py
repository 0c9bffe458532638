"""Moments in videos: frames decoded + embedded per second for h264 clips at 720p and 1080p, and points per minute
of video before and after alike frames are merged.

    .venv/bin/python bench/video_moments.py [--seconds 120] [--sizes 720p,1080p] [--interval 1] [--tiny]
                                            [--no-record]

A clip of `--seconds` is written per size (libx264, 30 fps): scenes of 4-12 s, each a shape drifting slowly
over a textured background, so the encoder and the decoder have real work and alike frames follow each other.
Each clip is indexed alone by the real indexer (indexer.pipeline.Indexer, local engine, the embedded store)
with Chinese-CLIP ViT-B/16 at real size and random weights (bench/_models.py build_real_clip: speed does not
depend on the weights) on the CPU, VIDEO_FRAME_INTERVAL_S = `--interval`. `--tiny` uses the tests' tiny CLIP
instead (a quick try of the bench itself). Peak resident memory is the process's, after all sizes.
"""

from __future__ import annotations

import argparse
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "bench")]

import numpy as np  # noqa: E402
from _models import build_real_clip  # noqa: E402
from _report import record, table  # noqa: E402
from PIL import Image, ImageDraw, ImageFilter  # noqa: E402

from indexer.pipeline import Indexer, IndexOptions  # noqa: E402
from indexer.video_frames import VideoSampling  # noqa: E402
from runners.clip import ClipEncoder  # noqa: E402
from store.qdrant_edge import EdgeStore  # noqa: E402

SIZES = {"720p": (1280, 720), "1080p": (1920, 1080)}
FPS = 30
COLORS = [(215, 25, 30), (30, 160, 45), (30, 70, 215), (240, 210, 20), (135, 40, 170), (245, 130, 20)]


def background(size: tuple[int, int], rng: random.Random) -> Image.Image:
    """A textured background (noise, blurred): content a codec must spend bits on."""
    small = Image.effect_noise((size[0] // 8, size[1] // 8), 40).convert("RGB")
    tint = Image.new("RGB", small.size, tuple(rng.randint(90, 230) for _ in range(3)))
    return Image.blend(small, tint, 0.6).resize(size).filter(ImageFilter.GaussianBlur(2))


def write_clip(path: Path, size: tuple[int, int], seconds: float, seed: int = 0) -> int:
    """Scenes of 4-12 s, each a shape drifting over its own background; returns the number of scenes."""
    import av
    from av.video.stream import VideoStream

    rng = random.Random(seed)
    scenes = 0
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=FPS, options={"preset": "veryfast"})
        assert isinstance(stream, VideoStream)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        frame_index, total = 0, round(seconds * FPS)
        while frame_index < total:
            scenes += 1
            length = min(total - frame_index, round(rng.uniform(4, 12) * FPS))
            back, color = background(size, rng), rng.choice(COLORS)
            radius = size[1] * rng.uniform(0.1, 0.25)
            x, y, dx = rng.uniform(radius, size[0] - radius), size[1] / 2, rng.uniform(-3, 3)
            for i in range(length):
                image = back.copy()
                cx = min(max(radius, x + dx * i), size[0] - radius)
                ImageDraw.Draw(image).ellipse((cx - radius, y - radius, cx + radius, y + radius), fill=color)
                container.mux(stream.encode(av.VideoFrame.from_image(image)))
            frame_index += length
        container.mux(stream.encode())
    return scenes


def measure(work: Path, encoder: ClipEncoder, name: str, seconds: float, interval: float) -> dict[str, float]:
    library = work / name
    library.mkdir()
    scenes = write_clip(library / f"clip-{name}.mp4", SIZES[name], seconds)
    store = EdgeStore(work / f"qdrant-{name}", "images")
    store.ensure_collection(encoder.model_id, encoder.dim)
    sampling = VideoSampling(interval=interval, max_frames=100_000, max_duration=seconds + 1)
    frames = Counting(encoder)
    start = time.perf_counter()
    summary = Indexer(store, frames, IndexOptions(progress=False, video=sampling)).run(library)
    took = time.perf_counter() - start
    points = store.count()
    store.close()
    assert summary.failed == 0, summary.failures
    minutes = seconds / 60
    return {"fps": frames.embedded / took, "frames_per_min": frames.embedded / minutes,
            "points_per_min": points / minutes, "scenes_per_min": scenes / minutes, "seconds": took}


class Counting:
    """The encoder, counting the frames it embeds."""

    def __init__(self, encoder: ClipEncoder) -> None:
        self.encoder, self.model_id, self.dim, self.embedded = encoder, encoder.model_id, encoder.dim, 0

    def encode_images(self, images: list[Image.Image]) -> np.ndarray:
        self.embedded += len(images)
        return self.encoder.encode_images(images)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--sizes", default="720p,1080p")
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--clip", type=Path, default=Path(tempfile.gettempdir()) / "bench-real-clip")
    parser.add_argument("--tiny", action="store_true", help="the tests' tiny CLIP: a quick try of the bench")
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    folder = ROOT / "tests" / "fixtures" / "tiny_clip" if args.tiny else build_real_clip(args.clip)
    encoder = ClipEncoder(str(folder), "cpu", model_id="tiny" if args.tiny else "real-size-random")
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-video-") as tmp:
        for name in args.sizes.split(","):
            got = measure(Path(tmp), encoder, name, args.seconds, args.interval)
            rows.append((f"{name} h264: frames decoded + embedded per second", f"{got['fps']:.1f}"))
            rows.append((f"{name}: points per minute of video, before / after merging (scenes a minute)",
                         f"{got['frames_per_min']:.0f} / {got['points_per_min']:.1f} ({got['scenes_per_min']:.1f})"))
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rows.append(("peak resident memory of the run (MB)", f"{peak_mb:.0f}"))
    text = table(rows)
    print(text)
    if not args.no_record:
        record("video_moments", f"""### Moments in videos: indexing speed and points per minute

{args.seconds:g}-s clips, VIDEO_FRAME_INTERVAL_S={args.interval:g}, {"tiny" if args.tiny else "real-size"} CLIP on the
CPU (bench/video_moments.py).

{text}""")


if __name__ == "__main__":
    main()
