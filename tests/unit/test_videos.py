"""The pure parts of video indexing: which times are sampled (core/videos.py), how frames merge into moments
(indexer/moments.py), and the header check that refuses a huge frame before anything is decoded."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from core.videos import BadVideo, sample_times, scaled_size, video_stream
from indexer.moments import merge


def test_short_clips_are_sampled_every_interval() -> None:
    assert sample_times(4.5, 1.0, 100, 120) == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert sample_times(0.2, 1.0, 100, 120) == [0.0]
    assert sample_times(None, 2.0, 3, 120) == [0.0, 2.0, 4.0]  # no duration: every interval, at most max_frames


def test_a_long_clip_keeps_its_budget_and_covers_the_rest_evenly() -> None:
    times = sample_times(3600.0, 1.0, 240, 120)
    assert len(times) == 240 and times[:120] == [float(i) for i in range(120)]
    rest = np.diff(times[120:])
    assert np.allclose(rest, rest[0]) and times[-1] < 3600 and 3600 - times[-1] < rest[0]
    everywhere = sample_times(3600.0, 1.0, 50, 3600)  # the dense part alone passes the budget
    assert len(everywhere) == 50 and everywhere[0] == 0 and everywhere[-1] == pytest.approx(3528.0)


def test_scaled_size_never_enlarges() -> None:
    assert scaled_size(1920, 1080, short_side=224) == (398, 224)
    assert scaled_size(100, 50, short_side=224) == (100, 50)
    assert scaled_size(1920, 1080, long_side=256) == (256, 144)


def unit_rows(*rows: list[float]) -> np.ndarray:
    array = np.asarray(rows, dtype=np.float32)
    return array / np.linalg.norm(array, axis=1, keepdims=True)


def test_alike_consecutive_frames_merge_and_the_best_frame_is_named() -> None:
    vectors = unit_rows([1, 0, 0], [0.98, 0.2, 0], [1, 0.05, 0], [0, 1, 0], [1, 0, 0])
    moments = merge([0.0, 1.0, 2.0, 3.0, 4.0], vectors, 5.0, 0.9)
    assert [(m.start, m.end) for m in moments] == [(0.0, 3.0), (3.0, 4.0), (4.0, 5.0)]  # a return is a new moment
    assert moments[0].t == 2.0  # nearest the moment's mean
    assert [(m.start, m.end) for m in merge([0.0, 1.0], unit_rows([1, 0, 0], [1, 0.1, 0]), 2.0, 1.0)] == [
        (0.0, 1.0), (1.0, 2.0)]  # a threshold of 1: every frame its own moment


def fake_container(width: int, height: int, format_name: str = "matroska,webm", video: bool = True) -> object:
    """What video_stream reads of an opened container (its header): no decoding happens before the check."""
    stream = SimpleNamespace(codec_context=SimpleNamespace(width=width, height=height), average_rate=30,
                             guessed_rate=None, duration=None, time_base=None, thread_type="SLICE")
    streams = SimpleNamespace(video=[stream] if video else [])
    return SimpleNamespace(format=SimpleNamespace(name=format_name), streams=streams, duration=2_000_000)


def test_the_header_check_refuses_before_decoding() -> None:
    with pytest.raises(BadVideo, match="16000x16000"):
        video_stream(fake_container(16000, 16000))
    with pytest.raises(BadVideo, match="no video stream"):
        video_stream(fake_container(64, 64, video=False))
    with pytest.raises(BadVideo, match="still image"):
        video_stream(fake_container(64, 64, format_name="jpeg_pipe"))
    _, info = video_stream(fake_container(1920, 1080))
    assert (info.width, info.height, info.duration, info.rate) == (1920, 1080, 2.0, 30.0)
