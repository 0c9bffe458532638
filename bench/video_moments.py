"""Moments in videos: frames decoded + embedded per second for h264 clips at 720p and 1080p, the time an hour of
video takes, points per minute of video before and after alike frames are merged, the memory of indexing a 4K clip,
and search p50 at 100,000 points with and without videos among them.

    .venv/bin/python bench/video_moments.py [--seconds 120] [--sizes 720p,1080p] [--interval 1] [--tiny]
                                            [--four-k-seconds 20] [--search-points 100000] [--no-record]

A clip of `--seconds` is written per size (libx264, 30 fps): scenes of 4-12 s, each a shape drifting slowly
over a textured background, so the encoder and the decoder have real work and alike frames follow each other.
Each clip is indexed alone by the real indexer (indexer.pipeline.Indexer, local engine, the embedded store)
with Chinese-CLIP ViT-B/16 at real size and random weights (bench/_models.py build_real_clip: speed does not
depend on the weights) on the CPU, VIDEO_FRAME_INTERVAL_S = `--interval`. `--tiny` uses the tests' tiny CLIP
instead (a quick try of the bench itself). Scene changes are sampled too (VIDEO_SCENE_CUT's default).

An hour of video is indexed as 3600 / `--seconds` clips like the 1080p one: the figure is that clip's time times
their number (clips index one after the other; a clip's work is bounded by VIDEO_MAX_FRAMES whatever its length).
Memory: a `--four-k-seconds` 3840x2160 clip and a 720p clip of the same length, each indexed in a process of its own
(peak resident memory, ru_maxrss): decoding streams, so the 4K clip should cost about what the 720p one does.
Search: an embedded store of `--search-points` CLIP-like vectors (bench/search_scale.py), all photos, against one
where a fifth of the points are the moments of clips (20 alike moments a clip), searched the way the service does
(api/moment_hits.py: a clip listed once), top 10, median over 200 queries after the index is built.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "bench")]

import numpy as np  # noqa: E402
from _machine import cpu_name, instruction_sets  # noqa: E402
from _models import build_real_clip  # noqa: E402
from _report import record, table  # noqa: E402
from PIL import Image, ImageDraw, ImageFilter  # noqa: E402

from indexer.pipeline import Indexer, IndexOptions  # noqa: E402
from indexer.video_frames import VideoSampling  # noqa: E402
from runners.clip import ClipEncoder  # noqa: E402
from store.qdrant_edge import EdgeStore  # noqa: E402

SIZES = {"720p": (1280, 720), "1080p": (1920, 1080), "4K": (3840, 2160)}
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
    return index_clip(work, library, encoder, name, seconds, interval) | {"scenes_per_min": scenes / (seconds / 60)}


def index_clip(work: Path, library: Path, encoder: ClipEncoder, name: str, seconds: float, interval: float
               ) -> dict[str, float]:
    """Index the clip in `library` alone, on a new embedded store."""
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
            "points_per_min": points / minutes, "seconds": took}


class Counting:
    """The encoder, counting the frames it embeds."""

    def __init__(self, encoder: ClipEncoder) -> None:
        self.encoder, self.model_id, self.dim, self.embedded = encoder, encoder.model_id, encoder.dim, 0

    def encode_images(self, images: list[Image.Image]) -> np.ndarray:
        self.embedded += len(images)
        return self.encoder.encode_images(images)


def peak_of_one_clip(name: str, seconds: float, tiny: bool, folder: Path) -> float:
    """Peak resident MB of a process of its own that indexes one clip of size `name` (written here first: the
    encoder's memory is not the indexer's)."""
    with tempfile.TemporaryDirectory(prefix="bench-video-one-") as tmp:
        library = Path(tmp) / "library"
        library.mkdir()
        write_clip(library / f"clip-{name}.mp4", SIZES[name], seconds)
        args = [sys.executable, __file__, "--one-clip", str(library), "--seconds", str(seconds), "--clip", str(folder)]
        done = subprocess.run(args + (["--tiny"] if tiny else []), capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"the {name} clip's process failed: {done.stderr[-2000:]}")
    return float(json.loads(done.stdout.strip().splitlines()[-1])["peak_mb"])


def search_p50(points: int, with_videos: bool, queries: int = 200) -> float:
    """Median ms of a top-10 search as the service runs it (MomentSearch) over `points` CLIP-like vectors."""
    from search_scale import DIM, cliplike_vectors, make_mix

    from api.moment_hits import MomentSearch
    from api.search_fields import search_page
    from api.store_calls import StoreCalls
    from indexer.moments import moment_id
    from store.interface import Point, point_id

    rng = np.random.default_rng(7)
    mix = make_mix(rng)
    moments = points // 5 if with_videos else 0
    clips = moments // 20
    photos = cliplike_vectors(points - moments, mix, 1.0, rng)
    # a clip's moments: alike vectors around the clip's own direction
    centers = np.repeat(cliplike_vectors(max(clips, 1), mix, 1.0, rng), 20, axis=0)[:moments]
    near = centers + rng.standard_normal((moments, DIM)).astype(np.float32) * (0.3 / np.sqrt(DIM))
    near /= np.linalg.norm(near, axis=1, keepdims=True)
    with tempfile.TemporaryDirectory(prefix="bench-video-search-") as tmp:
        store = EdgeStore(Path(tmp), "images")
        store.ensure_collection("bench", DIM)
        batch: list[Point] = []
        for i, vector in enumerate(photos):
            batch.append(Point(point_id(f"p{i}.jpg"), vector, {"path": f"p{i}.jpg", "media": "image"}))
        for j, vector in enumerate(near):
            clip, k = f"clip{j // 20}.mp4", j % 20
            batch.append(Point(moment_id(clip, k), vector, {"path": clip, "media": "video", "moment": k,
                                                           "t": k * 3.0 + 1, "start": k * 3.0, "end": k * 3.0 + 3}))
        for start in range(0, len(batch), 1024):
            store.upsert(batch[start:start + 1024])
        store.finish()
        search = MomentSearch(StoreCalls(store, 1))
        page = search_page(10, 0, False, 1000)
        asks = cliplike_vectors(queries, mix, 1.0, rng)

        async def timed() -> list[float]:
            out = []
            for vector in asks:
                start = time.perf_counter()
                found = await search.search(vector, 10, page)
                out.append((time.perf_counter() - start) * 1000)
                assert len(found) == 10
            return out

        took = asyncio.run(timed())
        store.close()
    return statistics.median(took)


def one_clip(library: Path, seconds: float, tiny: bool, folder: Path) -> None:
    """--one-clip: index the clip in `library` in this process; print its peak resident memory."""
    model = ROOT / "tests" / "fixtures" / "tiny_clip" if tiny else build_real_clip(folder)
    encoder = ClipEncoder(str(model), "cpu", model_id="tiny" if tiny else "real-size-random")
    with tempfile.TemporaryDirectory(prefix="bench-video-one-") as tmp:
        got = index_clip(Path(tmp), library, encoder, "one", seconds, 1.0)
    print(json.dumps({"peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, **got}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--sizes", default="720p,1080p")
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--clip", type=Path, default=Path(tempfile.gettempdir()) / "bench-real-clip")
    parser.add_argument("--tiny", action="store_true", help="the tests' tiny CLIP: a quick try of the bench")
    parser.add_argument("--four-k-seconds", type=float, default=20.0)
    parser.add_argument("--search-points", type=int, default=100_000)
    parser.add_argument("--no-record", action="store_true")
    parser.add_argument("--one-clip", type=Path, help=argparse.SUPPRESS)  # internal: a library of one clip
    args = parser.parse_args()
    if args.one_clip:
        one_clip(args.one_clip, args.seconds, args.tiny, args.clip)
        return
    folder = ROOT / "tests" / "fixtures" / "tiny_clip" if args.tiny else build_real_clip(args.clip)
    encoder = ClipEncoder(str(folder), "cpu", model_id="tiny" if args.tiny else "real-size-random")
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-video-") as tmp:
        for name in args.sizes.split(","):
            got = measure(Path(tmp), encoder, name, args.seconds, args.interval)
            rows.append((f"{name} h264: frames decoded + embedded per second", f"{got['fps']:.1f}"))
            rows.append((f"{name}: points per minute of video, before / after merging (scenes a minute)",
                         f"{got['frames_per_min']:.0f} / {got['points_per_min']:.1f} ({got['scenes_per_min']:.1f})"))
            hour = got["seconds"] * 3600 / args.seconds / 60
            rows.append((f"{name}: one hour of video as {3600 / args.seconds:g} clips of {args.seconds:g} s, "
                         "minutes to index", f"{hour:.1f}"))
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rows.append(("peak resident memory of the run above (MB)", f"{peak_mb:.0f}"))
    if args.four_k_seconds:
        for name in ("720p", "4K"):
            rows.append((f"peak resident memory indexing one {args.four_k_seconds:g}-s {name} clip alone (MB)",
                         f"{peak_of_one_clip(name, args.four_k_seconds, args.tiny, args.clip):.0f}"))
    if args.search_points:
        for videos in (False, True):
            label = "a fifth of them video moments" if videos else "photos only"
            rows.append((f"search p50 at {args.search_points:,} points, {label} (ms)",
                         f"{search_p50(args.search_points, videos):.2f}"))
    text = table(rows)
    print(text)
    if not args.no_record:
        record("video_moments", f"""### Moments in videos (issue 31)

`.venv/bin/python bench/video_moments.py --seconds {args.seconds:g} --interval {args.interval:g} --four-k-seconds \
{args.four_k_seconds:g} --search-points {args.search_points}{" --tiny" if args.tiny else ""}` on {cpu_name()}
({instruction_sets()}): {args.seconds:g}-s h264 clips, VIDEO_FRAME_INTERVAL_S={args.interval:g}, scene changes sampled,
{"the tiny" if args.tiny else "real-size (Chinese-CLIP ViT-B/16, random weights)"} CLIP on the CPU.
Merging is decided by the model's vectors: with random weights alike scenes merge more often than a trained
model's would, so "after merging" is a floor on the points a real library gets (at most one per scene, plus the
cuts the samples straddle).

{text}""")


if __name__ == "__main__":
    main()
