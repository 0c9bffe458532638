"""Videos on the Ray engine (indexer/ray_engine.py): a two-node Ray cluster writes the moments the local engine
writes (ids, payloads, vectors), a clip decoded on the cluster and its frames embedded by the driver."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from helpers.indexing import contents
from helpers.ray_cluster import ClipLoader, two_node_cluster
from helpers.video import shape_frames, write_clip
from shapes import draw_shape

from indexer.pipeline import Indexer
from indexer.pipeline import IndexOptions as Options
from indexer.ray_engine import RayEngine, RayOptions
from indexer.video_frames import VideoSampling
from runners.clip import ClipEncoder
from store.qdrant_edge import EdgeStore

MODEL_ID = "tiny-clip"
SAMPLING = VideoSampling(interval=1.0, max_frames=30, max_duration=60.0, merge_cosine=0.92)


def test_ray_writes_the_moments_the_local_engine_writes(tiny_clip_dir: Path, tmp_path: Path) -> None:
    root = tmp_path / "lib"
    root.mkdir()
    segments: list[tuple[str, str, float]] = [("circle", "red", 2), ("square", "blue", 2)]
    write_clip(root / "clip.webm", shape_frames(segments, 10), fps=10, codec="libvpx-vp9")
    draw_shape("triangle", "green", seed=1).save(root / "photo.png")
    (root / "audio.mp4").write_bytes(b"not a video")
    encoder = ClipEncoder(str(tiny_clip_dir), "cpu", model_id=MODEL_ID)
    local, remote = EdgeStore(tmp_path / "local", "images"), EdgeStore(tmp_path / "ray", "images")
    for store in (local, remote):
        store.ensure_collection(encoder.model_id, encoder.dim)
    first = Indexer(local, encoder, Options(batch_size=4, progress=False, video=SAMPLING)).run(root)
    with two_node_cluster():
        engine = RayEngine(ClipLoader(tiny_clip_dir, MODEL_ID), RayOptions(batch_size=4, progress=False))
        on_ray = Indexer(remote, encoder, Options(batch_size=4, progress=False, video=SAMPLING), engine).run(root)
    assert (on_ray.added, on_ray.failed) == (first.added, first.failed) == (2, 1)
    assert contents(remote) == contents(local)
    ids = list(contents(local))
    a, b = local.vectors(ids), remote.vectors(ids)
    assert min(float(np.dot(a[i], b[i])) for i in ids) >= 0.999
    assert sorted(p["start"] for p in contents(remote).values() if p["media"] == "video") == [0.0, 2.0]
    local.close()
    remote.close()
