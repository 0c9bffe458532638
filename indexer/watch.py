"""`python -m indexer --watch`: keep the collection in step with the library while files come and go.

Every WATCH_INTERVAL_S the library is listed (names, sizes and modification times only: cheap).
A file whose size or mtime differs from the last indexed pass is pending; once it has kept the same
size and mtime for WATCH_SETTLE_S (a photo still being copied keeps growing), it is ready. All ready
changes go into one pass of the ordinary incremental run (indexer.pipeline.Indexer.run), with the
files still pending held back: neither indexed nor removed. A move is a removal plus an addition
that settle together; the vector is reused, not re-embedded.

The unmount rule: an unmounted mount point looks like a missing or empty folder. When the library
is missing, unreadable, or holds no files while the collection holds points, watch mode logs it and
waits, removing nothing, until files are back. (A plain `python -m indexer` run still removes the
points of an emptied library, as it always did.)
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import replace
from pathlib import Path
from types import FrameType

from core.library import NotInLibrary, is_hidden, is_image_name, library_name
from indexer.pipeline import ImageEncoder, Indexer, Options, Summary
from store.base import VectorStore

log = logging.getLogger("indexer.watch")

Stat = tuple[int, int]  # size in bytes, mtime in nanoseconds


def snapshot(root: Path) -> dict[str, Stat] | None:
    """Library name -> (size, mtime) of every image file under `root`; None when `root` cannot be
    listed. Folders that cannot be listed are left out (the pass keeps their points, see scan.py)."""
    try:
        with os.scandir(root):
            pass
    except OSError:
        return None
    files: dict[str, Stat] = {}
    for folder, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if not is_hidden(d)]
        for name in names:
            if is_hidden(name) or not is_image_name(name):
                continue
            path = os.path.join(folder, name)
            try:
                st = os.stat(path)
                rel = library_name(os.path.relpath(path, root).replace(os.sep, "/"))
            except (OSError, NotInLibrary):  # gone meanwhile, a broken link, or a name the pass refuses
                continue
            files[rel] = (st.st_size, st.st_mtime_ns)
    return files


class Settler:
    """Which changed files have stopped changing. `indexed` is the library as of the last pass."""

    def __init__(self, settle_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.settle_s = settle_s
        self.clock = clock
        self.indexed: dict[str, Stat] = {}
        self.pending: dict[str, tuple[Stat | None, float]] = {}  # name -> (stat or None if gone, since)

    def observe(self, files: dict[str, Stat]) -> None:
        now = self.clock()
        changed = {name for name, stat in files.items() if self.indexed.get(name) != stat}
        changed |= self.indexed.keys() - files.keys()
        for name in self.pending.keys() - changed:  # back as it was indexed: nothing to do
            del self.pending[name]
        for name in changed:
            stat = files.get(name)
            seen = self.pending.get(name)
            if seen is None or seen[0] != stat:  # new, or still changing: the settle time starts again
                self.pending[name] = (stat, now)

    def ready(self) -> set[str]:
        now = self.clock()
        return {name for name, (_, since) in self.pending.items() if now - since >= self.settle_s}

    def held(self, ready: Collection[str]) -> set[str]:
        return set(self.pending) - set(ready)

    def done(self, names: Collection[str]) -> None:
        """`names` went through a pass: they are what the collection now reflects."""
        for name in names:
            stat, _ = self.pending.pop(name)
            if stat is None:
                self.indexed.pop(name, None)
            else:
                self.indexed[name] = stat


class Watcher:
    """One poll at a time: list the library, settle, and run a pass when changes are ready."""

    def __init__(self, root: Path, index: Callable[[set[str]], Summary], points: Callable[[], int],
                 settle_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.root = root
        self.index = index  # runs one pass holding back the given names
        self.points = points  # how many points the collection holds
        self.settler = Settler(settle_s, clock)
        self.waiting: str | None = None  # why the library is taken for unmounted, while it is

    def poll(self) -> Summary | None:
        files = snapshot(self.root)
        problem = self.library_problem(files)
        if problem is not None:
            if problem != self.waiting:
                log.warning("library %s %s: waiting for it, nothing is removed meanwhile", self.root, problem)
            self.waiting = problem
            return None
        if self.waiting is not None:
            log.warning("library %s is back: watching it again", self.root)
            self.waiting = None
        assert files is not None
        self.settler.observe(files)
        ready = self.settler.ready()
        if not ready:
            return None
        started = time.monotonic()
        summary = self.index(self.settler.held(ready))
        self.settler.done(ready)
        log.info("%s", pass_line(summary, time.monotonic() - started))
        return summary

    def library_problem(self, files: dict[str, Stat] | None) -> str | None:
        if files is None:
            return "is missing or cannot be read"
        if not files and self.points() > 0:
            return "holds no files while the collection holds points (not mounted?)"
        return None


def pass_line(summary: Summary, seconds: float) -> str:
    failed = "".join(f"; failed: {ascii(path)}: {reason}" for path, reason in summary.failures[:5])
    more = f" (+{len(summary.failures) - 5} more)" if len(summary.failures) > 5 else ""
    return (f"pass: added {summary.added} | updated {summary.updated} | removed {summary.removed} | "
            f"failed {summary.failed} | unchanged {summary.unchanged} | {seconds:.2f} s{failed}{more}")


def watch(store: VectorStore, encoder: ImageEncoder, root: Path, options: Options, interval_s: float,
          settle_s: float, stop: threading.Event) -> None:
    """Poll and index until `stop` is set; a pass under way ends after its current batch."""
    pass_options = replace(options, progress=False, keep_if_empty=True, stop=stop.is_set)

    def index(hold: set[str]) -> Summary:
        return Indexer(store, encoder, pass_options).run(root, hold)

    watcher = Watcher(root, index, store.count, settle_s)
    log.info("watching %s (every %.1f s, files settle for %.1f s)", root, interval_s, settle_s)
    while not stop.is_set():
        watcher.poll()
        stop.wait(interval_s)


def watch_until_signal(store: VectorStore, encoder: ImageEncoder, root: Path, options: Options,
                       interval_s: float, settle_s: float) -> None:
    """`watch` in the main thread, ended by SIGTERM or SIGINT (Ctrl-C) after the current batch."""
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("%s: stopping after the current batch", signal.Signals(signum).name)
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    logging.getLogger("indexer.watch").setLevel(logging.INFO)
    try:
        watch(store, encoder, root, options, interval_s, settle_s, stop)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
