"""Watch mode's parts in this process: change detection and the settle rule on a fake clock, the unmount
rule, and the pipeline's watch options (held files, an empty library, stopping between batches) with a
fake encoder. `python -m indexer --watch` itself runs in tests/integration/test_watch_served.py."""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from shapes import make_library

from indexer.pipeline import Indexer, Summary
from indexer.pipeline import IndexOptions as Options
from indexer.watch import Events, Settler, Watcher, snapshot, watch
from store import memory_store
from store.interface import point_id


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class FakeIndex:
    """Stands in for a pass: records what each pass held back."""

    def __init__(self) -> None:
        self.holds: list[set[str]] = []

    def __call__(self, hold: set[str]) -> Summary:
        self.holds.append(set(hold))
        return Summary()


class FakeEncoder:
    """A vector from the image's pixels: the same image gives the same vector, no model needed."""

    model_id = "fake-clip"
    dim = 8

    def __init__(self, after_each: Any = None) -> None:
        self.calls = 0
        self.after_each = after_each

    def encode_images(self, images: list[Image.Image]) -> np.ndarray:
        self.calls += 1
        if self.after_each is not None:
            self.after_each()
        rows = []
        for image in images:
            seed = int.from_bytes(hashlib.sha256(image.tobytes()).digest()[:4], "little")
            vector = np.random.default_rng(seed).normal(size=self.dim).astype(np.float32)
            rows.append(vector / np.linalg.norm(vector))
        return np.stack(rows)


def wait_for(condition: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def write(path: Path, data: bytes, mtime_ns: int | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    if mtime_ns is not None:
        os.utime(path, ns=(mtime_ns, mtime_ns))


# ---------------------------------------------------------------- settle rule


def test_a_change_is_ready_once_it_kept_its_size_and_mtime_for_the_settle_time() -> None:
    clock = Clock()
    settler = Settler(2.0, clock)
    settler.observe({"a.jpg": (10, 1)})
    clock.now += 1.9
    settler.observe({"a.jpg": (10, 1)})
    assert settler.ready() == set()
    clock.now += 0.1
    assert settler.ready() == {"a.jpg"}


def test_a_file_still_growing_restarts_its_settle_time() -> None:
    clock = Clock()
    settler = Settler(2.0, clock)
    for size in (10, 20, 30):
        settler.observe({"a.jpg": (size, size)})
        clock.now += 1.5
        assert settler.ready() == set()
    settler.observe({"a.jpg": (30, 30)})
    clock.now += 0.5
    assert settler.ready() == {"a.jpg"}
    assert settler.held({"a.jpg"}) == set()


def test_removals_and_moves_settle_and_a_change_undone_is_forgotten() -> None:
    clock = Clock()
    settler = Settler(1.0, clock)
    settler.observe({"a.jpg": (1, 1), "b.jpg": (2, 2)})
    clock.now += 1
    settler.done(settler.ready())
    assert settler.indexed == {"a.jpg": (1, 1), "b.jpg": (2, 2)} and not settler.pending

    settler.observe({"moved/a.jpg": (1, 1), "b.jpg": (3, 3)})  # a moved, b rewritten
    assert set(settler.pending) == {"a.jpg", "moved/a.jpg", "b.jpg"}
    settler.observe({"moved/a.jpg": (1, 1), "b.jpg": (2, 2)})  # b back as indexed: nothing to do
    assert set(settler.pending) == {"a.jpg", "moved/a.jpg"}
    clock.now += 1
    settler.done(settler.ready())
    assert settler.indexed == {"moved/a.jpg": (1, 1), "b.jpg": (2, 2)}


# ---------------------------------------------------------------- the watcher


def test_snapshot_lists_image_files_and_none_for_a_missing_library(tmp_path: Path) -> None:
    write(tmp_path / "lib" / "a.JPG", b"12345", 7_000_000_000)
    write(tmp_path / "lib" / "sub" / "b.png", b"1")
    write(tmp_path / "lib" / "notes.txt", b"1")
    write(tmp_path / "lib" / ".cache" / "c.jpg", b"1")
    files = snapshot(tmp_path / "lib")
    assert files is not None and set(files) == {"a.JPG", "sub/b.png"}
    assert files["a.JPG"] == (5, 7_000_000_000)
    assert snapshot(tmp_path / "nowhere") is None


def test_a_file_written_in_pieces_is_indexed_once_complete_and_held_back_meanwhile(tmp_path: Path) -> None:
    clock, index = Clock(), FakeIndex()
    write(tmp_path / "old.jpg", b"old")
    watcher = Watcher(tmp_path, index, lambda: 0, settle_s=2.0, clock=clock)
    assert watcher.poll() is None
    clock.now += 2
    assert watcher.poll() is not None and index.holds == [set()]  # the first pass: everything settled

    for piece in range(3):  # a copy in progress: a new size at every poll
        write(tmp_path / "new.jpg", b"x" * (piece + 1), 1_000 + piece)
        assert watcher.poll() is None
        clock.now += 1.5
    write(tmp_path / "old.jpg", b"changed", 5_000)
    assert watcher.poll() is None  # new.jpg settles now, old.jpg only starts to
    clock.now += 0.5
    assert watcher.poll() is not None
    assert index.holds[-1] == {"old.jpg"}  # still settling: neither indexed nor removed
    clock.now += 1.5
    assert watcher.poll() is not None and index.holds[-1] == set()
    clock.now += 5
    assert watcher.poll() is None and len(index.holds) == 3  # nothing changed: no pass


def test_an_unmounted_library_is_waited_for_and_nothing_removed(tmp_path: Path,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    library = tmp_path / "lib"
    write(library / "a.jpg", b"a")
    clock, index = Clock(), FakeIndex()
    points = {"n": 0}
    watcher = Watcher(library, index, lambda: points["n"], settle_s=1.0, clock=clock)
    watcher.poll()
    clock.now += 1
    watcher.poll()
    points["n"] = 1
    passes = len(index.holds)
    caplog.set_level(logging.WARNING, "indexer.watch")

    (library / "a.jpg").unlink()  # an empty mount point
    for _ in range(3):
        clock.now += 1
        assert watcher.poll() is None
    library.rename(tmp_path / "away")  # no mount point at all
    for _ in range(3):
        clock.now += 1
        assert watcher.poll() is None
    assert len(index.holds) == passes  # no pass, so no removal
    assert sum("waiting" in r.message for r in caplog.records) == 2  # once per problem, not per poll

    (tmp_path / "away").rename(library)
    write(library / "a.jpg", b"a")  # back as it was
    os.utime(library / "a.jpg", ns=(watcher.settler.indexed["a.jpg"][1],) * 2)
    clock.now += 5
    assert watcher.poll() is None and len(index.holds) == passes  # nothing changed meanwhile
    assert any("is back" in r.message for r in caplog.records)
    write(library / "b.jpg", b"b")
    watcher.poll()
    clock.now += 1
    assert watcher.poll() is not None  # changes resume


def test_an_empty_library_with_an_empty_collection_is_not_waited_for(tmp_path: Path) -> None:
    clock, index = Clock(), FakeIndex()
    watcher = Watcher(tmp_path, index, lambda: 0, settle_s=1.0, clock=clock)
    assert watcher.poll() is None and watcher.waiting is None
    write(tmp_path / "a.jpg", b"a")
    watcher.poll()
    clock.now += 1
    assert watcher.poll() is not None


# ---------------------------------------------------------------- the pipeline's watch options


@pytest.fixture
def store() -> Any:
    made = memory_store()
    made.ensure_collection(FakeEncoder.model_id, FakeEncoder.dim)
    yield made
    made.close()


def test_held_files_are_neither_indexed_nor_removed(store: Any, tmp_path: Path) -> None:
    shapes = sorted(make_library(tmp_path, n_per_class=1))
    assert Indexer(store, FakeEncoder(), Options(progress=False)).run(tmp_path).added == len(shapes)
    growing, removed = shapes[0], shapes[1]
    (tmp_path / growing).write_bytes((tmp_path / growing).read_bytes()[:100])
    (tmp_path / removed).unlink()
    write(tmp_path / "new.jpg", b"half a file")
    summary = Indexer(store, FakeEncoder(), Options(progress=False)).run(
        tmp_path, hold={growing, removed, "new.jpg"})
    assert (summary.added, summary.updated, summary.removed, summary.failed) == (0, 0, 0, 0)
    ids = {pid for pid, _ in store.payloads()}
    assert point_id(growing) in ids and point_id(removed) in ids and point_id("new.jpg") not in ids


def test_watch_passes_keep_the_points_of_an_empty_library(store: Any, tmp_path: Path) -> None:
    shapes = make_library(tmp_path / "lib", n_per_class=1)
    Indexer(store, FakeEncoder(), Options(progress=False)).run(tmp_path / "lib")
    (tmp_path / "empty").mkdir()
    kept = Indexer(store, FakeEncoder(), Options(progress=False, keep_if_empty=True)).run(tmp_path / "empty")
    assert kept.removed == 0 and store.count() == len(shapes) and kept.failed == 1
    assert "not mounted" in kept.failures[0][1]
    plain = Indexer(store, FakeEncoder(), Options(progress=False)).run(tmp_path / "empty")
    assert plain.removed == len(shapes)  # a plain run behaves as it always did


def test_a_stop_ends_a_pass_after_its_current_batch(store: Any, tmp_path: Path) -> None:
    shapes = make_library(tmp_path, n_per_class=2)
    stop = threading.Event()
    first = Indexer(store, FakeEncoder(after_each=stop.set),
                    Options(progress=False, batch_size=2, workers=1, stop=stop.is_set)).run(tmp_path)
    assert 0 < first.added < len(shapes) and store.count() == first.added  # whole batches only
    rest = Indexer(store, FakeEncoder(), Options(progress=False)).run(tmp_path)
    assert rest.added == len(shapes) - first.added and rest.unchanged == first.added


def test_watch_loop_indexes_a_new_file_and_stops_on_the_event(store: Any, tmp_path: Path) -> None:
    shapes = make_library(tmp_path, n_per_class=1)
    stop = threading.Event()
    thread = threading.Thread(target=watch, args=(store, FakeEncoder(), tmp_path, Options(progress=False),
                                                  0.05, 0.1, stop))
    thread.start()
    try:
        wait_for(lambda: store.count() == len(shapes))
        Image.new("RGB", (40, 30), "purple").save(tmp_path / "added.png")
        wait_for(lambda: point_id("added.png") in {pid for pid, _ in store.payloads()})
    finally:
        stop.set()
        thread.join(10)
    assert not thread.is_alive()


# ---------------------------------------------------------------- filesystem events


def run_watch(store: Any, library: Path, stop: threading.Event, events: bool) -> threading.Thread:
    """The watch loop in a thread with a 30 s interval: only an event can wake it within a few seconds."""
    thread = threading.Thread(target=watch, args=(store, FakeEncoder(), library, Options(progress=False),
                                                  30.0, 0.2, stop, events))
    thread.start()
    return thread


def indexed(store: Any, name: str) -> bool:
    return point_id(name) in {pid for pid, _ in store.payloads()}


def stop_thread(stop: threading.Event, thread: threading.Thread) -> None:
    stop.set()
    thread.join(10)
    assert not thread.is_alive()


def test_an_event_wakes_the_loop_long_before_the_interval(store: Any, tmp_path: Path,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "indexer.watch")
    make_library(tmp_path, n_per_class=1)
    stop = threading.Event()
    thread = run_watch(store, tmp_path, stop, events=True)
    try:
        wait_for(lambda: store.count() > 0, timeout=10)  # the first listing and pass, at once
        Image.new("RGB", (40, 30), "purple").save(tmp_path / "added.png")
        started = time.monotonic()
        wait_for(lambda: indexed(store, "added.png"), timeout=5)  # the interval is 30 s
        assert time.monotonic() - started >= 0.2  # it settled first
    finally:
        stop_thread(stop, thread)
    assert any(f"watching {tmp_path} with filesystem events (inotify)" in r.message for r in caplog.records)


def test_with_watch_events_off_it_only_polls(store: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "indexer.watch")
    stop = threading.Event()
    thread = run_watch(store, tmp_path, stop, events=False)  # an empty library: the first listing, then 30 s
    try:
        wait_for(lambda: any("polling" in r.message for r in caplog.records), timeout=10)
        Image.new("RGB", (40, 30), "purple").save(tmp_path / "added.png")
        time.sleep(2)  # with events, indexed by now (the test above)
        assert not indexed(store, "added.png")
    finally:
        started = time.monotonic()
        stop_thread(stop, thread)
    assert time.monotonic() - started < 2  # a stop still ends the 30 s wait at once
    assert any(f"watching {tmp_path} by polling every 30 s: WATCH_EVENTS=false" in r.message
               for r in caplog.records)


def test_an_observer_that_fails_to_start_falls_back_to_polling(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    from watchdog.observers.api import BaseObserver

    def refuse(self: Any) -> None:
        raise OSError(28, "inotify watch limit reached")

    monkeypatch.setattr(BaseObserver, "start", refuse)
    caplog.set_level(logging.INFO, "indexer.watch")
    events = Events(tmp_path, 2.0)
    events.update()
    assert events.observer is None
    assert any("by polling every 2 s: filesystem events failed to start (OSError: [Errno 28] inotify watch limit"
               in r.message for r in caplog.records)
    monkeypatch.undo()
    events.update()  # the same folder: no new try at every listing
    assert events.observer is None


def test_events_stop_while_the_library_is_away_and_start_again_when_it_is_back(tmp_path: Path) -> None:
    library = tmp_path / "lib"
    library.mkdir()
    events = Events(library, 2.0)
    try:
        events.update()
        assert events.observer is not None
        library.rename(tmp_path / "away")
        events.update()
        assert events.observer is None and "missing" in events.mode
        (tmp_path / "away").rename(library)
        events.update()
        assert events.observer is not None and "filesystem events" in events.mode
        events.wake.clear()
        write(library / "sub" / "a.jpg", b"a")
        assert events.wake.wait(5)  # the new observer sees the new folder's files
        time.sleep(0.5)  # the rest of that write's events (modified, closed)
        events.wake.clear()
        write(library / "notes.txt", b"a")
        write(library / ".a.jpg", b"a")
        assert not events.wake.wait(0.5)  # not a library file: no wake-up
    finally:
        events.close()
