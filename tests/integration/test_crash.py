"""The indexer when things go wrong mid-run, each time followed by a plain re-run that must end in the
collection a clean run over the final files gives (same ids, payloads apart from indexed_at, vectors):

- SIGKILL at ten random points of runs over a few hundred images (test_sigkill_at_random_points...);
- files deleted, rewritten, half-written or moved between scan and read, or between read and upsert
  (driven in-process: the real store, wrapped to change the library at those moments);
- store failures: server unreachable, disk full (a fake statvfs, and a real file size limit that the
  engine itself runs into), an engine exception in the middle of a batch.

CRASH_TEST_SEED=n repeats the kill points of an earlier run (the seed is in the failure message).
"""

from __future__ import annotations

import io
import os
import random
import re
import resource
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers.indexing import cli_env
from qdrant_client import QdrantClient
from qdrant_client.http.exceptions import ResponseHandlingException
from serving import ROOT
from shapes import draw_shape, make_library

from indexer.pipeline import Indexer, Summary
from indexer.pipeline import IndexOptions as Options
from runners.clip import ClipEncoder, model_id_of
from store.interface import PAYLOAD_FIELDS, Point, StoreError, point_id
from store.qdrant_edge import EdgeStore
from store.qdrant_server import ServerStore

ATOL = 1e-5  # vectors of the same image embedded in other batches / processes
Snapshot = dict[str, tuple[dict[str, Any], np.ndarray]]  # point id -> (payload without indexed_at, vector)


@pytest.fixture(scope="module")
def encoder(random_clip_dir: Path) -> ClipEncoder:
    """The CLI's encoder: CPU, the model id it records for a local folder."""
    return ClipEncoder(str(random_clip_dir), "cpu", model_id=model_id_of(str(random_clip_dir)))


# ---------------------------------------------------------------- collections


def snapshot(store: Any) -> Snapshot:
    """The collection, checked for what no crash may leave: duplicate ids, a count that disagrees,
    a point without its vector, a payload missing fields or under another path's id."""
    records = list(store.payloads())
    ids = [pid for pid, _ in records]
    assert len(ids) == len(set(ids)), "duplicate point ids"
    assert store.count() == len(ids)
    vectors = store.vectors(ids)
    assert set(vectors) == set(ids), "points without a vector"
    out: Snapshot = {}
    for pid, payload in records:
        assert set(payload) == set(PAYLOAD_FIELDS), f"incomplete payload {payload}"
        assert pid == point_id(payload["path"])
        out[pid] = ({k: v for k, v in payload.items() if k != "indexed_at"}, vectors[pid])
    return out


def edge_snapshot(folder: Path) -> Snapshot:
    store = EdgeStore(folder, "images")
    try:
        return snapshot(store)
    finally:
        store.close()


def paths(snap: Snapshot) -> set[str]:
    return {payload["path"] for payload, _ in snap.values()}


def assert_within(got: Snapshot, clean: Snapshot) -> None:
    """Every point of `got` is exactly the clean run's point (a crash may leave points out, not wrong)."""
    assert paths(got) <= paths(clean), f"points for files the clean run does not have: {paths(got) - paths(clean)}"
    for pid, (payload, vector) in got.items():
        assert payload == clean[pid][0]
        np.testing.assert_allclose(vector, clean[pid][1], atol=ATOL, err_msg=payload["path"])


def assert_same(got: Snapshot, clean: Snapshot) -> None:
    assert_within(got, clean)
    assert paths(got) == paths(clean), f"missing: {sorted(paths(clean) - paths(got))}"


def clean_run(encoder: ClipEncoder, library: Path, store: Any) -> Snapshot:
    store.ensure_collection(encoder.model_id, encoder.dim)
    Indexer(store, encoder, Options(progress=False)).run(library)
    snap = snapshot(store)
    store.close()
    return snap


# ---------------------------------------------------------------- SIGKILL at random points


INDEX_CMD = [sys.executable, "-m", "indexer", "--batch-size", "4", "--workers", "2"]
KillWhen = Callable[[float, int | None, int | None], bool]  # (seconds, done, total) -> kill now?
PROGRESS = re.compile(rb"indexing:.*?\| *(\d+)/(\d+) \[")  # a tqdm line: "indexing:  37%|###   | 111/300 ["


def crash_env(model: Path, library: Path, qdrant: Path) -> dict[str, str]:
    # TQDM_MININTERVAL=0: the progress bar shows every image, so a kill can aim at one.
    return {**cli_env(model, library, qdrant), "DEVICE": "cpu", "TQDM_MININTERVAL": "0"}


@dataclass
class Landing:
    aim: str  # "start": a random time into start-up; "mid": an image count; "end": the last image
    seconds: float  # from start to kill (or exit)
    done: int | None  # images the progress bar had shown (None: killed before indexing began)
    total: int | None  # images this run had to check
    killed: bool
    indexing: float | None  # seconds from start to the first progress line
    points: int = 0  # points in the collection after the kill

    def __str__(self) -> str:
        where = "before indexing" if self.done is None else f"at {self.done}/{self.total}"
        how = "killed" if self.killed else "finished first"
        return f"{self.aim:5} {how} {where} after {self.seconds:.1f}s -> {self.points} points"


def run_until(env: dict[str, str], kill_when: KillWhen, aim: str, limit: float = 120) -> Landing:
    """Run the indexer, reading its progress bar; SIGKILL it once `kill_when(seconds, done, total)`."""
    proc = subprocess.Popen(INDEX_CMD, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    start = time.monotonic()
    tail, done, total, killed, indexing = b"", None, None, False, None
    try:
        fd = proc.stderr.fileno()
        while True:
            seconds = time.monotonic() - start
            if kill_when(seconds, done, total) or seconds > limit:
                proc.kill()
                killed = True
                break
            if select.select([fd], [], [], 0.002)[0]:
                chunk = os.read(fd, 1 << 16)
                if not chunk:  # exited before the kill
                    break
                tail = (tail + chunk)[-4096:]
                found = PROGRESS.findall(tail)
                if found:
                    done, total = (int(x) for x in found[-1])
                    indexing = indexing or seconds
    finally:
        proc.wait()
        proc.stderr.close()
    assert seconds <= limit, "the indexer hung"
    return Landing(aim, seconds, done, total, killed and proc.returncode == -signal.SIGKILL, indexing)


def after_seconds(delay: float) -> KillWhen:
    return lambda seconds, done, total: seconds >= delay


def at_position(position: int, n: int) -> KillWhen:
    """At image `position` of the library's `n`, counting the images earlier runs stored (n - total)."""
    return lambda seconds, done, total: done is not None and total is not None and done >= max(1, position - n + total)


def at_last_image(seconds: float, done: int | None, total: int | None) -> bool:
    return done is not None and done == total


def test_sigkill_at_random_points_converges_to_the_clean_run(random_clip_dir: Path, encoder: ClipEncoder,
                                                             tmp_path: Path) -> None:
    seed = int(os.environ.get("CRASH_TEST_SEED", random.randrange(10**6)))
    rng = random.Random(seed)
    library = tmp_path / "lib"
    n = len(make_library(library, n_per_class=17))  # 306 images, 77 batches of 4
    began = time.monotonic()
    clean = clean_run(encoder, library, EdgeStore(tmp_path / "clean", "images"))
    env = crash_env(random_clip_dir, library, tmp_path / "killed")

    # 2 kills at a random time into start-up, 7 at stratified random image positions of the whole
    # library, in random order; then 1 at the last image (the final flush, delete, optimize, close).
    aims = ["start"] * 2 + ["mid"] * 7
    rng.shuffle(aims)
    positions = iter(rng.randrange(i * n // 7 + 1, (i + 1) * n // 7) for i in range(7))
    startup = 2.0  # seconds to the first progress line; measured by the runs below
    landings: list[Landing] = []
    for aim in [*aims, "end"]:
        if aim == "start":
            landing = run_until(env, after_seconds(rng.uniform(0.5, 1.1) * startup), aim)
        elif aim == "mid":
            landing = run_until(env, at_position(next(positions), n), aim)
        else:
            landing = run_until(env, at_last_image, aim)
        if landing.indexing is not None:
            startup = min(startup, landing.indexing)
        # Checked on a copy: opening the store replays and flushes its WAL, the next run must do that itself.
        if (tmp_path / "killed").exists():  # not when killed before the store was created
            shutil.copytree(tmp_path / "killed", tmp_path / "probe")
        after = edge_snapshot(tmp_path / "probe")
        shutil.rmtree(tmp_path / "probe", ignore_errors=True)
        assert_within(after, clean)
        landing.points = len(after)
        landings.append(landing)
    report = f"seed {seed}, clean run {n} images:\n" + "\n".join(map(str, landings))
    print(report)
    mid = [x for x in landings if x.killed and x.done is not None and x.done < (x.total or 0)]
    assert len(mid) >= 6, report

    final = subprocess.run(INDEX_CMD + ["--no-progress"], cwd=ROOT, env=env, capture_output=True, text=True,
                           timeout=300)
    assert final.returncode == 0, final.stderr
    assert "failed 0" in final.stdout
    assert_same(edge_snapshot(tmp_path / "killed"), clean)
    print(f"{time.monotonic() - began:.0f}s in all")


# ---------------------------------------------------------------- the library changing mid-run


class ChangingStore:
    """The real store; `after_scan()` runs when the indexer asks for the payloads (after the scan,
    before any file is read), `before_upsert(points)` before each upsert (after those files were read)."""

    def __init__(self, store: Any, after_scan: Callable[[], None],
                 before_upsert: Callable[[Sequence[Point]], None]) -> None:
        self.store = store
        self.after_scan = after_scan
        self.before_upsert = before_upsert

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    def payloads(self) -> Any:
        self.after_scan()
        return self.store.payloads()

    def upsert(self, points: Sequence[Point]) -> None:
        self.before_upsert(points)
        self.store.upsert(points)


def new_image(path: Path, seed: int, size: int = 72) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    draw_shape("triangle", "orange", size=size, seed=seed).save(path, format="PNG")


def image_bytes(seed: int) -> bytes:
    buf = io.BytesIO()
    draw_shape("circle", "purple", size=88, seed=seed).save(buf, format="PNG")
    return buf.getvalue()


def open_backend(kind: str, folder: Path, client: QdrantClient) -> Any:
    return EdgeStore(folder, "images") if kind == "edge" else ServerStore(client, "images")


@pytest.mark.parametrize("kind", ["edge", "server"])
def test_files_changed_while_indexing_converge_on_the_next_run(kind: str, encoder: ClipEncoder,
                                                               tmp_path: Path) -> None:
    library = tmp_path / "lib"
    shapes = sorted(make_library(library, n_per_class=2))
    client = QdrantClient(":memory:")
    store = open_backend(kind, tmp_path / "q", client)
    store.ensure_collection(encoder.model_id, encoder.dim)
    Indexer(store, encoder, Options(progress=False)).run(library)

    # Files the next run will check (new or modified since the first run), and what happens to them.
    modified = shapes[:6]
    for i, rel in enumerate(modified):
        new_image(library / rel, seed=100 + i, size=64 + 8 * i)
    added = [f"new/{i:02d}.png" for i in range(14)]
    for i, rel in enumerate(added):
        new_image(library / rel, seed=200 + i)
    # between scan and read
    deleted_new, deleted_indexed = added[0], modified[0]
    rewritten = modified[1]
    half_written = added[1]
    moved, moved_to = added[2], "moved/02.png"
    # between read and upsert: the last files of the check list (sorted: "new/..." come after the shapes)
    changed_after_read: dict[str, str] = {added[-1]: "deleted", added[-2]: "rewritten", modified[2]: "deleted"}
    done: list[str] = []

    def after_scan() -> None:
        (library / deleted_new).unlink()
        (library / deleted_indexed).unlink()
        (library / rewritten).write_bytes(image_bytes(1))
        (library / half_written).write_bytes(image_bytes(2)[:300])  # a copy in progress
        (library / moved_to).parent.mkdir()
        os.replace(library / moved, library / moved_to)
        done.append("after scan")

    def before_upsert(points: Sequence[Point]) -> None:
        for point in points:
            rel = point.payload["path"]
            what = changed_after_read.pop(rel, None)
            if what == "deleted":
                (library / rel).unlink()
            elif what == "rewritten":
                (library / rel).write_bytes(image_bytes(3))
            if what:
                done.append(f"{what} {rel}")

    changing = ChangingStore(store, after_scan, before_upsert)
    summary = Indexer(changing, encoder, Options(progress=False, batch_size=4, workers=2)).run(library)
    assert not changed_after_read, f"never upserted: {changed_after_read}"
    assert len(done) == 4
    # Deleted before being read: not a failure; the indexed one's point goes.
    assert (summary.failed, summary.failures[0][0]) == (1, half_written)
    assert summary.removed == 1
    stored = {p["path"] for _, p in store.payloads()}
    assert deleted_indexed not in stored and deleted_new not in stored

    (library / half_written).write_bytes(image_bytes(2))  # the copy finished
    again = Indexer(store, encoder, Options(progress=False)).run(library)
    assert again.failed == 0
    converged = snapshot(store)
    store.close()
    clean = clean_run(encoder, library, open_backend(kind, tmp_path / "clean", QdrantClient(":memory:")))
    assert_same(converged, clean)
    client.close()


# ---------------------------------------------------------------- store failures


def test_unreachable_server_fails_fast_naming_qdrant_url(random_clip_dir: Path, tmp_path: Path) -> None:
    library = tmp_path / "lib"
    make_library(library, n_per_class=1)
    env = {**crash_env(random_clip_dir, library, tmp_path / "q"), "QDRANT_URL": "http://127.0.0.1:9"}
    started = time.monotonic()
    done = subprocess.run(INDEX_CMD, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    took = time.monotonic() - started
    assert done.returncode == 1
    assert "QDRANT_URL" in done.stderr and "127.0.0.1:9" in done.stderr
    assert done.stdout == ""  # no summary
    assert "Loading weights" not in done.stderr  # stopped before loading the model
    assert took < 60


FULL_DISK_AFTER = """
import itertools, runpy, shutil, sys
real, calls, full_after = shutil.disk_usage, itertools.count(), int(sys.argv.pop(1))
def disk_usage(path):  # the disk fills up after `full_after` space checks (one per write)
    usage = real(path)
    return usage._replace(free=0) if next(calls) >= full_after else usage
shutil.disk_usage = disk_usage
runpy.run_module("indexer", run_name="__main__", alter_sys=True)
"""


def test_disk_full_mid_run_stops_with_a_message_and_resumes(random_clip_dir: Path, encoder: ClipEncoder,
                                                             tmp_path: Path) -> None:
    library = tmp_path / "lib"
    n = len(make_library(library, n_per_class=2))
    clean = clean_run(encoder, library, EdgeStore(tmp_path / "clean", "images"))
    env = crash_env(random_clip_dir, library, tmp_path / "q")
    # check 0: creating the collection; check 1: the estimate before the run (warns when it will not fit);
    # checks 2-5: the first four batches; the fifth batch finds the disk full
    full = subprocess.run([sys.executable, "-c", FULL_DISK_AFTER, "6", *INDEX_CMD[3:], "--no-progress"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert full.returncode == 1, full.stderr
    assert "not enough free disk space" in full.stderr and "QDRANT_PATH" in full.stderr
    assert full.stdout == ""  # no summary
    partial = edge_snapshot(tmp_path / "q")
    assert_within(partial, clean)
    assert len(partial) == 16

    resumed = subprocess.run(INDEX_CMD + ["--no-progress"], cwd=ROOT, env=env, capture_output=True, text=True,
                             timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert f"added {n - 16} |" in resumed.stdout
    assert_same(edge_snapshot(tmp_path / "q"), clean)


@pytest.fixture
def small_disk(tmp_path: Path) -> Any:
    """A 224 MiB tmpfs (root and a mount-permitting environment only; skipped elsewhere). The shard
    takes ~100 MiB of it: each segment's payload indexes hold 2 MiB of null bitmaps per field (media and the
    read text's phrase field among them), and a resumed run wants 64 MiB more."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=224m", "tmpfs", str(mount)],
                                           capture_output=True).returncode != 0:
        pytest.skip("mounting a tmpfs needs root and a mount-permitting environment")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def test_a_really_full_disk_stops_with_a_message_not_sigbus(random_clip_dir: Path, encoder: ClipEncoder,
                                                            small_disk: Path, tmp_path: Path) -> None:
    """The engine writes through mmap: on a full disk it dies of SIGBUS (exit -7, no message; even
    opening the shard can fill in a sparse 32 MiB file). The free-space check stops it before."""
    library = tmp_path / "lib"
    shapes = sorted(make_library(library, n_per_class=2))
    clean = clean_run(encoder, library, EdgeStore(tmp_path / "clean", "images"))
    for rel in shapes[:18]:
        (library / rel).rename(library / (rel + ".later"))  # not an image name: left out for now
    store = EdgeStore(small_disk / "q", "images")
    clean_run(encoder, library, store)
    for rel in shapes[:18]:
        (library / (rel + ".later")).rename(library / rel)
    filler = small_disk / "filler"
    with open(filler, "wb") as fh:
        os.posix_fallocate(fh.fileno(), 0, shutil.disk_usage(small_disk).free - 20 * 2**20)
    env = crash_env(random_clip_dir, library, small_disk / "q")
    full = subprocess.run(INDEX_CMD + ["--no-progress"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert full.returncode == 1, full.stderr
    assert "not enough free disk space" in full.stderr and full.stdout == ""
    filler.unlink()
    resumed = subprocess.run(INDEX_CMD + ["--no-progress"], cwd=ROOT, env=env, capture_output=True, text=True,
                             timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert_same(edge_snapshot(small_disk / "q"), clean)


def file_size_limit(limit: int) -> Callable[[], None]:
    def apply() -> None:  # in the child: writes past `limit` fail with EFBIG instead of killing it
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_engine_write_errors_stop_the_run_and_resume(random_clip_dir: Path, encoder: ClipEncoder,
                                                     tmp_path: Path) -> None:
    """The engine's own I/O errors (here EFBIG from a file size limit, as ENOSPC would be): a clear
    message, exit 1, no summary; the next run goes on. At creation (its WAL is a 32 MiB file) and at
    the end of a run (the first flush of a segment's files)."""
    library = tmp_path / "lib"
    shapes = sorted(make_library(library, n_per_class=2))
    clean = clean_run(encoder, library, EdgeStore(tmp_path / "clean", "images"))
    env = crash_env(random_clip_dir, library, tmp_path / "q")
    args = INDEX_CMD + ["--no-progress"]

    def limited(limit: int) -> subprocess.CompletedProcess[str]:
        return subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
                              preexec_fn=file_size_limit(limit))

    at_create = limited(1 << 20)
    assert at_create.returncode == 1, at_create.stderr
    assert "disk is full (or a file size limit was reached)" in at_create.stderr and at_create.stdout == ""

    hidden = tmp_path / "later"
    hidden.mkdir()
    for rel in shapes[len(shapes) // 2:]:  # the first complete run sees half the library
        shutil.move(library / rel, hidden / rel.replace("/", "_"))
    assert subprocess.run(args, cwd=ROOT, env=env, capture_output=True, timeout=300).returncode == 0
    for rel in shapes[len(shapes) // 2:]:
        shutil.move(hidden / rel.replace("/", "_"), library / rel)
    at_flush = limited(512)  # the id tracker's file: 21 bytes a point, 378 after the first 18
    assert at_flush.returncode == 1, at_flush.stderr
    assert "file size limit" in at_flush.stderr and at_flush.stdout == ""
    assert_within(edge_snapshot(tmp_path / "q"), clean)

    resumed = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert_same(edge_snapshot(tmp_path / "q"), clean)


class PanicException(BaseException):
    """Named like pyo3's: what a Rust panic inside the engine raises (not an Exception)."""


class FailingOn:
    """Delegates to `target`; the `nth` call of `method` raises `exc`, before or after really calling it."""

    def __init__(self, target: Any, method: str, nth: int, exc: BaseException, after: bool) -> None:
        self.target, self.method, self.nth, self.exc, self.after = target, method, nth, exc, after
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.target, name)
        if name != self.method:
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            if self.calls != self.nth:
                return attr(*args, **kwargs)
            if self.after:
                attr(*args, **kwargs)
            raise self.exc

        return call


ENGINE_FAILURES = {
    "edge-error-before": ("edge", Exception("Service internal error: simulated"), False, "Qdrant Edge upsert failed"),
    "edge-panic-after": ("edge", PanicException("simulated panic"), True, "Qdrant Edge upsert failed"),
    "server-unreachable": ("server", ResponseHandlingException(ConnectionRefusedError(111, "Connection refused")),
                           False, "QDRANT_URL"),
    "server-error-after": ("server", RuntimeError("simulated"), True, "cannot upsert points"),
}


@pytest.mark.parametrize("case", sorted(ENGINE_FAILURES))
def test_store_failure_mid_batch_ends_the_run_and_resumes(case: str, encoder: ClipEncoder, tmp_path: Path) -> None:
    kind, exc, after, message = ENGINE_FAILURES[case]
    library = tmp_path / "lib"
    make_library(library, n_per_class=2)
    client = QdrantClient(":memory:")
    store = open_backend(kind, tmp_path / "q", client)
    store.ensure_collection(encoder.model_id, encoder.dim)
    if kind == "edge":
        store._shard = FailingOn(store._shard, "update", 3, exc, after)
    else:
        store.client = FailingOn(client, "upsert", 3, exc, after)
    indexer = Indexer(store, encoder, Options(progress=False, batch_size=4, workers=2))
    with pytest.raises(StoreError, match=message):
        indexer.run(library)
    assert indexer.summary.added == 8  # the two batches that were written, not the failed one
    partial = snapshot(store)
    assert len(partial) == (12 if after else 8)

    if kind == "edge":
        store._shard = store._shard.target
    else:
        store.client = client
    summary: Summary = Indexer(store, encoder, Options(progress=False)).run(library)
    assert summary.added == 36 - len(partial) and summary.unchanged == len(partial)
    converged = snapshot(store)
    store.close()
    clean = clean_run(encoder, library, open_backend(kind, tmp_path / "clean", QdrantClient(":memory:")))
    assert_same(converged, clean)
    client.close()

