"""`python -m indexer --watch`: keep the collection in step with the library while files come and go.

Every WATCH_INTERVAL_S the library is listed (names, sizes and modification times only: cheap).
A file whose size or mtime differs from the last indexed pass is pending; once it has kept the same
size and mtime for WATCH_SETTLE_S (a photo still being copied keeps growing), it is ready. All ready
changes go into one pass of the ordinary incremental run (indexer.pipeline.Indexer.run), with the
files still pending held back: neither indexed nor removed. A move is a removal plus an addition
that settle together; the vector is reused, not re-embedded.

Filesystem events (the `watchdog` package: inotify, FSEvents, ReadDirectoryChangesW), where the platform
has them and WATCH_EVENTS is on, only wake the loop early: the listing stays the truth, and it still
runs every WATCH_INTERVAL_S, in case an event is missed (a network share sends none for changes made by
other machines). Without them (watchdog missing, no native events, the observer fails to start, the
library not there) the loop polls; the observer is tried again once the library folder comes back.

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
from typing import Any

from core.library import NotInLibrary, is_hidden, is_media_name, library_name
from indexer.pipeline import ImageEncoder, Indexer, IndexOptions, Summary
from indexer.scan import walk
from store.interface import VectorStore

log = logging.getLogger("indexer.watch")
# What runs after a pass that changed the collection (indexer/__main__.py: the OCR stage with `--ocr`): the pass's
# summary, and a callable that says whether the watch is stopping.
AfterPass = Callable[[Summary, Callable[[], bool]], None]

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
    for folder, dirs, names in walk(root):  # no recursion: any depth (indexer/scan.py)
        dirs[:] = [d for d in dirs if not is_hidden(d)]
        for name in names:
            if is_hidden(name) or not is_media_name(name):
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

    def next_due(self) -> float | None:
        """When (on `clock`) the first pending file will have settled, if it keeps still; None if none is pending."""
        if not self.pending:
            return None
        return min(since for _, since in self.pending.values()) + self.settle_s

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


# Events that may mean a library file changed. Not "opened" or "closed_no_write": a pass reading the
# files makes those, and each would wake the loop for nothing.
WAKING_EVENTS = frozenset({"created", "modified", "moved", "deleted", "closed"})
EVENT_GAP_S = 0.2  # woken by an event, wait this long (at least) for the rest of its burst: a copy writes in pieces


def wakes(event: Any) -> bool:
    """Whether a watchdog event may change the listing: an image file's, or a folder created, moved or
    removed (a folder's "modified" comes with every file made in it, images or not)."""
    if event.event_type not in WAKING_EVENTS:
        return False
    if event.is_directory:
        return bool(event.event_type != "modified")
    names = (os.path.basename(os.fsdecode(path)) for path in (event.src_path, event.dest_path) if path)
    return any(is_media_name(name) and not is_hidden(name) for name in names)


class Events:
    """Filesystem events on the library as hints that set `wake`; polling alone when there are none."""

    def __init__(self, root: Path, interval_s: float, enabled: bool = True) -> None:
        self.root = root
        self.interval_s = interval_s
        self.enabled = enabled
        self.wake = threading.Event()
        self.observer: Any = None  # a running watchdog observer, or None while polling
        self.identity: tuple[int, int] | None = None  # (device, inode) of the folder the observer watches
        self.failed: tuple[int, int] | None = None  # the folder on which the observer failed to start
        self.mode = ""  # the last mode logged

    def update(self) -> None:
        """Before each listing: keep the observer, start it, or (re)start it on a remounted library."""
        if not self.enabled:
            self.polling("WATCH_EVENTS=false")
            return
        try:
            st = os.stat(self.root)
        except OSError:
            self.close()
            self.failed = None  # a library that comes back gets a new try, whatever failed before
            self.polling("the library folder is missing or cannot be read (events again once it is back)")
            return
        identity = (st.st_dev, st.st_ino)
        if self.observer is not None:
            if identity == self.identity and self.alive():
                return
            self.close()  # remounted or replaced (a new inode), or the observer stopped: a fresh one
        if identity != self.failed:  # no retry on the folder it failed on, only once it is another
            self.start(identity)

    def start(self, identity: tuple[int, int]) -> None:
        self.failed = identity
        try:
            from watchdog.events import FileSystemEvent, FileSystemEventHandler
            from watchdog.observers import Observer
        except ImportError:
            self.polling("the watchdog package is not installed")
            return
        wake = self.wake

        class Handler(FileSystemEventHandler):
            def dispatch(self, event: FileSystemEvent) -> None:
                if wakes(event):
                    wake.set()

        observer = Observer()
        kind = type(observer).__name__.removesuffix("Observer").lower()
        if kind == "polling":  # watchdog's stand-in where the platform has no events: a second poller
            self.polling("this platform has no filesystem events")
            return
        try:
            observer.schedule(Handler(), str(self.root), recursive=True)
            observer.start()
        except Exception as exc:  # noqa: BLE001 - any failure means polling (mostly OSError: inotify's watch limit, a permission)
            self.polling(f"filesystem events failed to start ({type(exc).__name__}: {exc})")
            return
        self.observer, self.identity, self.failed = observer, identity, None
        self.log(f"watching {self.root} with filesystem events ({kind}), "
                 f"and a listing every {self.interval_s:g} s in case one is missed")

    def alive(self) -> bool:
        emitters = self.observer.emitters
        return bool(self.observer.is_alive() and emitters and all(e.is_alive() for e in emitters))

    def polling(self, why: str) -> None:
        self.log(f"watching {self.root} by polling every {self.interval_s:g} s: {why}")

    def log(self, mode: str) -> None:
        if mode != self.mode:
            log.info("%s", mode)
            self.mode = mode

    def wait(self, seconds: float, stop: threading.Event) -> None:
        """Until `seconds` pass or an event (or `stop`) wakes the loop."""
        if self.wake.wait(seconds) and not stop.is_set():
            stop.wait(EVENT_GAP_S)
        self.wake.clear()  # what happened so far, the next listing sees

    def close(self) -> None:
        if self.observer is not None:
            self.observer.stop()
            self.observer.join(5)
            self.observer = None


def follow(watcher: Watcher, events: Events, interval_s: float, stop: threading.Event) -> None:
    """The watch loop: list (and index) at every wake-up, until `stop` is set."""

    def relay() -> None:  # `stop` wakes the loop too
        stop.wait()
        events.wake.set()

    threading.Thread(target=relay, name="watch-stop", daemon=True).start()
    try:
        while not stop.is_set():
            events.update()
            watcher.poll()
            events.wait(next_wait(watcher, events, interval_s), stop)
    finally:
        events.close()


def next_wait(watcher: Watcher, events: Events, interval_s: float) -> float:
    """The interval; with events on, less when a pending file will have settled sooner (no event says so)."""
    due = watcher.settler.next_due()
    if events.observer is None or watcher.waiting is not None or due is None:
        return interval_s
    return min(interval_s, max(0.0, due - watcher.settler.clock()) + 0.01)


def watch(store: VectorStore, encoder: ImageEncoder, root: Path, options: IndexOptions, interval_s: float,
          settle_s: float, stop: threading.Event, events: bool = True, after: AfterPass | None = None) -> None:
    """Watch and index until `stop` is set; a pass under way ends after its current batch. `after` runs after
    each pass that changed the collection (the OCR stage, `--ocr`), with the pass's summary and `stop.is_set`."""
    pass_options = replace(options, progress=False, keep_if_empty=True, stop=stop.is_set)

    first = [True]  # the first pass runs `after` whatever it changed: photos indexed before the watch started

    def index(hold: set[str]) -> Summary:
        summary = Indexer(store, encoder, pass_options).run(root, hold)
        if after is not None and not stop.is_set() and (first[0] or summary.added or summary.updated):
            first[0] = False
            after(summary, stop.is_set)
        return summary

    watcher = Watcher(root, index, store.count, settle_s)
    log.info("files settle for %.1f s before they are indexed", settle_s)
    follow(watcher, Events(root, interval_s, events), interval_s, stop)


def watch_until_signal(store: VectorStore, encoder: ImageEncoder, root: Path, options: IndexOptions,
                       interval_s: float, settle_s: float, events: bool = True, after: AfterPass | None = None
                       ) -> None:
    """`watch` in the main thread, ended by SIGTERM or SIGINT (Ctrl-C) after the current batch."""
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("%s: stopping after the current batch", signal.Signals(signum).name)
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    logging.getLogger("indexer.watch").setLevel(logging.INFO)
    try:
        watch(store, encoder, root, options, interval_s, settle_s, stop, events, after)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
