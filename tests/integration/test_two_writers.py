"""Two writers on one embedded store (issue 22, D6): two processes creating the collection on an empty
folder at the same instant never both succeed and lose points; a second writer is refused at once with a
message naming the first."""

from __future__ import annotations

import multiprocessing as mp
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from helpers.stores import DIM, MODEL, make_points

from store.qdrant_edge import EdgeStore

REPO = Path(__file__).resolve().parents[2]


def create_and_fill(folder: str, seed: int, start: Any, out: Any) -> None:
    points = make_points(20, seed=seed)
    store = EdgeStore(Path(folder), "images")
    start.wait()
    try:
        store.ensure_collection(MODEL, DIM)
        store.upsert(points)
        store.close()
        out.put((seed, "ok", ""))
    except Exception as exc:  # noqa: BLE001 - reported to the test, which checks what kind
        out.put((seed, type(exc).__name__, str(exc)))


def test_two_processes_creating_the_collection_at_once_lose_nothing(tmp_path: Path) -> None:
    ctx = mp.get_context("fork")
    for trial in range(12):
        folder = tmp_path / f"t{trial}"
        start, out = ctx.Barrier(2), ctx.Queue()
        procs = [ctx.Process(target=create_and_fill, args=(str(folder), seed, start, out)) for seed in (1, 2)]
        for p in procs:
            p.start()
        results = sorted(out.get(timeout=60) for _ in procs)
        for p in procs:
            p.join(timeout=30)
        store = EdgeStore(folder, "images")
        stored = {r.id for r in store.records_page(None, 100)[0]}
        store.close()
        for seed, outcome, message in results:
            wanted = {p.id for p in make_points(20, seed=seed)}
            if outcome == "ok":
                assert wanted <= stored, f"trial {trial}: writer {seed} succeeded but its points are gone"
            else:
                assert outcome == "StoreLockedError" and "is in use" in message, (trial, outcome, message)
                assert "process " in message  # names the holder
        assert any(outcome == "ok" for _, outcome, _ in results)


HOLD = """
import sys, time
sys.path.insert(0, {repo!r})
from store.qdrant_edge import EdgeStore
s = EdgeStore({folder!r}, "images")
s.ensure_collection("test/clip-a", 8)
print("holding", flush=True)
time.sleep(60)
"""


def test_a_second_writer_is_refused_at_once_naming_the_first(tmp_path: Path) -> None:
    folder = tmp_path / "q"
    holder = subprocess.Popen([sys.executable, "-c", HOLD.format(repo=str(REPO), folder=str(folder))],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
        started = time.monotonic()
        env = {**os.environ, "QDRANT_PATH": str(folder), "QDRANT_URL": ""}
        second = subprocess.run([sys.executable, "-m", "indexer", "--verify"], cwd=REPO, env=env,
                                capture_output=True, text=True, timeout=60)
        assert second.returncode == 2
        assert f"process {holder.pid} (-c" in second.stderr and "is in use" in second.stderr
        assert time.monotonic() - started < 30  # at once: no waiting on the lock
    finally:
        holder.kill()
        holder.wait()
