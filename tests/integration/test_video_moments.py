"""Videos indexed as moments by the real indexer and store with the trained tiny CLIP: clips the tests write with
PyAV (several containers and codecs) showing shapes at known times, found at the right moment; incremental
runs, renames and deletions; and damaged or hostile files, each indexed or listed with a reason."""

from __future__ import annotations

import io
import os
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
from helpers.indexing import CountingEncoder, contents, index
from helpers.video import (
    jump_back,
    shape_frames,
    write_audio_only,
    write_clip,
    write_empty_clip,
    write_huge_header_clip,
    write_timed_clip,
)
from shapes import caption, draw_shape

from indexer.moments import moment_id
from indexer.pipeline import Indexer
from indexer.pipeline import IndexOptions as Options
from indexer.verify import verify_store
from indexer.video_frames import VideoSampling
from indexer.watch import snapshot
from runners.clip import ClipEncoder
from store.interface import SearchFilter, point_id
from store.qdrant_edge import EdgeStore

SAMPLING = VideoSampling(interval=1.0, max_frames=60, max_duration=120.0, merge_cosine=0.92)
FPS = 10
# (file, codec, segments): each clip shows still shapes, 3 s each
CLIPS: dict[str, tuple[str, list[tuple[str, str, float]]]] = {
    "trips/ferry.mp4": ("libx264", [("circle", "red", 3), ("square", "blue", 3), ("triangle", "green", 3)]),
    "trips/party.webm": ("libvpx-vp9", [("square", "yellow", 3), ("circle", "purple", 3)]),
    "old/home.mkv": ("mpeg4", [("triangle", "orange", 3), ("square", "green", 3)]),
    "phone/clip.MOV": ("libx264", [("circle", "blue", 2), ("triangle", "purple", 4)]),
}


@pytest.fixture(scope="module")
def encoder(tiny_clip_dir: Path) -> ClipEncoder:
    return ClipEncoder(str(tiny_clip_dir), "cpu", model_id="tiny-clip")


@pytest.fixture
def store(tmp_path: Path) -> Any:
    made = EdgeStore(tmp_path / "qdrant", "images")
    yield made
    made.close()


def write_clips(library: Path, clips: dict[str, tuple[str, list[tuple[str, str, float]]]] = CLIPS) -> None:
    for rel, (codec, segments) in clips.items():
        (library / rel).parent.mkdir(parents=True, exist_ok=True)
        write_clip(library / rel, shape_frames(segments, FPS), fps=FPS, codec=codec)


def best(store: Any, encoder: ClipEncoder, shape: str, color: str, where: SearchFilter | None = None) -> Any:
    vector = encoder.encode_texts([caption(shape, color)])[0]
    return store.search(vector, 5, where)[0].payload


def moments_of(store: Any, rel: str) -> list[dict[str, Any]]:
    return sorted((p for p in contents(store).values() if p["path"] == rel), key=lambda p: p["moment"])


def test_each_clip_is_found_at_the_moment_a_query_describes(tmp_path: Path, store: Any,
                                                             encoder: ClipEncoder) -> None:
    library = tmp_path / "lib"
    write_clips(library)
    draw_shape("square", "red", seed=3).save(library / "photo.jpg")
    summary, counting = index(store, encoder, library, video=SAMPLING)
    assert summary.failures == [] and summary.added == 5
    assert counting.embedded == 1 + 9 + 6 + 6 + 6  # a frame a second, in the photos' batches
    for rel, (_, segments) in CLIPS.items():
        start = 0.0
        for shape, color, seconds in segments:
            found = best(store, encoder, shape, color)
            assert (found["path"], found["media"]) == (rel, "video"), (shape, color)
            assert start <= found["t"] < start + seconds and found["start"] <= found["t"] < found["end"]
            assert found["start"] == pytest.approx(start, abs=0.05)
            start += seconds
    photo = best(store, encoder, "square", "red")
    assert (photo["path"], photo["media"]) == ("photo.jpg", "image") and "t" not in photo
    # alike frames are one moment: a moment per segment, not a point per frame
    assert [(m["start"], m["end"]) for m in moments_of(store, "trips/ferry.mp4")] == [(0, 3), (3, 6), (6, 9)]
    assert best(store, encoder, "circle", "red", SearchFilter(media="image"))["path"] == "photo.jpg"
    assert best(store, encoder, "square", "red", SearchFilter(media="video"))["media"] == "video"


def test_reruns_renames_edits_and_deletions(tmp_path: Path, store: Any, encoder: ClipEncoder) -> None:
    library = tmp_path / "lib"
    clips = {"a.mp4": CLIPS["trips/ferry.mp4"]}
    write_clips(library, clips)
    index(store, encoder, library, video=SAMPLING)
    ids = [moment_id("a.mp4", i) for i in range(3)]
    assert sorted(contents(store)) == sorted(ids)

    again, counting = index(store, encoder, library, video=SAMPLING)
    assert counting.embedded == 0 and again.unchanged == 1 and again.added == again.updated == 0
    report = verify_store(store)
    assert report.ok, report.lines()  # `python -m indexer --verify` knows a moment's id

    os.utime(library / "a.mp4", (time.time() + 5, time.time() + 5))  # touched, same content: nothing embedded
    touched, counting = index(store, encoder, library, video=SAMPLING)
    assert counting.embedded == 0 and touched.reused == 1 and sorted(contents(store)) == sorted(ids)

    (library / "b").mkdir()
    shutil.move(library / "a.mp4", library / "b" / "moved.mp4")  # a rename takes its moments along
    moved, counting = index(store, encoder, library, video=SAMPLING)
    assert counting.embedded == 0 and moved.added == 1 and moved.removed == 1
    assert [m["path"] for m in contents(store).values()] == ["b/moved.mp4"] * 3
    assert best(store, encoder, "square", "blue")["t"] >= 3

    write_clip(library / "b" / "moved.mp4", shape_frames([("circle", "yellow", 2)], FPS), fps=FPS, codec="libx264")
    edited, _ = index(store, encoder, library, video=SAMPLING)
    assert edited.updated == 1
    assert [(m["start"], m["end"]) for m in moments_of(store, "b/moved.mp4")] == [(0, 2)]  # old moments gone

    (library / "b" / "moved.mp4").unlink()
    gone, _ = index(store, encoder, library, video=SAMPLING)
    assert gone.removed == 1 and contents(store) == {}


def test_a_long_clip_is_covered_evenly_within_its_frame_budget(tmp_path: Path, store: Any,
                                                               encoder: ClipEncoder) -> None:
    library = tmp_path / "lib"
    library.mkdir()
    segments: list[tuple[str, str, float]] = [("circle", "red", 10), ("square", "blue", 10), ("triangle", "green", 10)]
    write_clip(library / "long.mp4", shape_frames(segments, 5, size=64), fps=5, codec="libx264")
    sampling = VideoSampling(interval=1.0, max_frames=8, max_duration=6.0, merge_cosine=0.92)
    _, counting = index(store, encoder, library, video=sampling)
    assert counting.embedded == 8  # 6 in the first 6 s, 2 over the other 24 s
    assert best(store, encoder, "triangle", "green")["t"] >= 20  # the end of the clip is covered too


def jpeg_bytes() -> bytes:
    out = io.BytesIO()
    draw_shape("circle", "red", seed=1).save(out, format="JPEG")
    return out.getvalue()


def test_damaged_and_hostile_files_are_indexed_or_listed_with_a_reason(tmp_path: Path, store: Any,
                                                                        encoder: ClipEncoder) -> None:
    library = tmp_path / "lib"
    library.mkdir()
    good = write_clip(library / "good.mp4", shape_frames([("circle", "red", 3)], FPS), fps=FPS, codec="libx264")
    whole = good.read_bytes()
    (library / "truncated.mp4").write_bytes(whole[: len(whole) // 2])
    write_audio_only(library / "audio.mp4")
    write_empty_clip(library / "empty.mkv")
    (library / "photo.mp4").write_bytes(jpeg_bytes())
    (library / "noise.webm").write_bytes(os.urandom(5000))
    (library / "zero.avi").write_bytes(b"")
    write_huge_header_clip(library / "huge.mkv")
    times = [0.0, 0.1, 0.2, 2.5, 2.6, 5.0]  # a variable frame rate: long and short gaps
    frames = shape_frames([("square", "blue", 0.3), ("triangle", "green", 0.3)], 10)
    write_timed_clip(library / "vfr.mp4", frames, times)
    backwards = shape_frames([("circle", "orange", 2), ("triangle", "purple", 2)], FPS, size=64)
    jump_back(write_clip(library / "back.mkv", backwards, fps=FPS, codec="mpeg4"), 25, 1500)  # 2.4 s -> 0.9 s
    started = time.monotonic()
    summary, _ = index(store, encoder, library, video=SAMPLING)
    assert time.monotonic() - started < 60
    reasons = dict(summary.failures)
    listed = {"audio.mp4", "empty.mkv", "photo.mp4", "noise.webm", "zero.avi", "huge.mkv", "truncated.mp4"}
    assert listed <= set(reasons)
    assert "no video stream" in reasons["audio.mp4"] and "still image" in reasons["photo.mp4"]
    assert reasons["zero.avi"] == "empty file"
    indexed = {p["path"] for p in contents(store).values()}
    assert "good.mp4" in indexed and "vfr.mp4" in indexed  # batch-mates of the failures are written
    assert set(indexed) & set(reasons) == set()
    found = best(store, encoder, "triangle", "green")
    assert found["path"] == "vfr.mp4" and found["t"] >= 2.5  # the frame shown at 2.5 s
    back = moments_of(store, "back.mkv")  # indexed; its moments never go back in time
    assert [m["start"] for m in back] == sorted({m["start"] for m in back}) and len(back) >= 2
    assert best(store, encoder, "triangle", "purple")["path"] == "back.mkv"


def test_a_photo_without_media_gets_it_without_reembedding(tmp_path: Path, store: Any,
                                                          encoder: ClipEncoder) -> None:
    library = tmp_path / "lib"
    library.mkdir()
    draw_shape("circle", "red", seed=1).save(library / "a.jpg")
    index(store, encoder, library, video=SAMPLING)
    pid = point_id("a.jpg")
    vector = store.vectors([pid])[pid]
    payload = {k: v for k, v in dict(store.payloads())[pid].items() if k != "media"}
    from store.interface import Point

    store.upsert([Point(pid, vector, payload)])  # as indexed before videos were
    summary, counting = index(store, encoder, library, video=SAMPLING)
    assert counting.embedded == 0 and summary.payload_updated == 1
    assert dict(store.payloads())[pid]["media"] == "image"


def test_watch_sees_videos_and_a_clip_being_written_keeps_its_moments(tmp_path: Path, store: Any,
                                                                        encoder: ClipEncoder) -> None:
    library = tmp_path / "lib"
    write_clips(library, {"a.mp4": CLIPS["trips/ferry.mp4"]})
    index(store, encoder, library, video=SAMPLING)
    files = snapshot(library)  # what --watch lists and settles
    assert files is not None and set(files) == {"a.mp4"}
    whole = (library / "a.mp4").read_bytes()
    (library / "a.mp4").write_bytes(whole[:1000])  # being copied over: --watch holds it back
    counting = CountingEncoder(encoder)
    held = Indexer(store, counting, Options(progress=False, video=SAMPLING)).run(library, hold={"a.mp4"})
    assert (held.removed, held.failed, counting.embedded) == (0, 0, 0)
    assert len(moments_of(store, "a.mp4")) == 3


def test_the_ocr_stage_reads_the_photos_and_leaves_the_moments_alone(tmp_path: Path, store: Any,
                                                                      encoder: ClipEncoder) -> None:
    """Moments are not photos: a library with a clip and a sign photo gets the sign's words, and no failure is
    listed for the clip's moments (the payload stages skip them), this run or the next."""
    from signs import jpeg, sign

    from indexer.ocr_stage import OcrStage, ocr_options
    from indexer.pipeline import Summary
    from runners.ocr import TextReader

    library = tmp_path / "lib"
    write_clips(library, {"trips/ferry.mp4": CLIPS["trips/ferry.mp4"]})
    (library / "sign.jpg").write_bytes(jpeg(sign(["Night Market 夜市"], size=(800, 600), seed=7)))
    assert index(store, encoder, library, video=SAMPLING)[0].failures == []
    reader = TextReader()
    for _ in range(2):
        summary = OcrStage(store, library, reader.ocr_by, lambda: reader, Summary(),
                           ocr_options(batch_size=2, progress=False)).run()
        assert summary.failures == []
    assert summary.ocr is not None and summary.ocr["read"] == 0  # the second run has nothing left to read
    points = contents(store).values()
    assert [p["path"] for p in points if "ocr_by" in p] == ["sign.jpg"]
    assert "night market" in next(p for p in points if p["path"] == "sign.jpg")["ocr_text"].casefold()


def test_a_moment_starts_at_its_scene_change_not_at_the_next_sample(tmp_path: Path, store: Any,
                                                                     encoder: ClipEncoder) -> None:
    """Scenes of 2.5 s sampled every 2 s: the frames at the cuts (2.5 s, 5 s) are embedded too, so each moment spans
    its scene; with VIDEO_SCENE_CUT=0 the moments start at the samples after the cuts."""
    from dataclasses import replace

    library = tmp_path / "lib"
    library.mkdir()
    segments = [("circle", "red", 2.5), ("square", "blue", 2.5), ("triangle", "green", 2.5)]
    write_clip(library / "cuts.mp4", shape_frames(segments, FPS), fps=FPS, codec="libx264")
    every_2s = replace(SAMPLING, interval=2.0)
    summary, counting = index(store, encoder, library, video=every_2s)
    assert summary.failures == [] and counting.embedded == 4 + 2  # samples at 0, 2, 4, 6 and the two cuts
    spans = [(m["start"], m["end"]) for m in moments_of(store, "cuts.mp4")]
    assert spans == [(0.0, 2.5), (2.5, 5.0), (5.0, 7.5)]
    assert best(store, encoder, "square", "blue")["t"] == pytest.approx(2.5, abs=0.05)

    store.delete(list(contents(store)))
    summary, counting = index(store, encoder, library, video=replace(every_2s, scene_cut=0.0))
    assert counting.embedded == 4
    assert [(m["start"], m["end"]) for m in moments_of(store, "cuts.mp4")] == [(0.0, 4.0), (4.0, 6.0), (6.0, 7.5)]
