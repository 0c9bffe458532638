"""`python -m indexer` while `bentoml serve` runs on the embedded store: the indexer writes through the
service (store/via_service.py -> api/internal_store.py), searches keep answering, the changes are searchable
at once, outsiders cannot write, and SIGKILL of either side (in both orders) loses nothing that the
next run does not restore: the collection ends as a clean run's (ids, payloads apart from indexed_at,
vectors)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from helpers.indexing import cli
from serving import ROOT, Server, parent_pid, png, run_indexer, running, service_env
from shapes import draw_shape, make_library

from store.interface import point_id
from store.qdrant_edge import EdgeStore
from store.via_service import TOKEN_HEADER, read_service_file, service_file_path

API_KEY = "public-key"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
ATOL = 1e-5  # one image's vector embedded in other batches / processes
PROGRESS = re.compile(rb"indexing:.*?\| *(\d+)/(\d+) \[")  # tqdm: "indexing:  37%|###   | 111/300 ["


def live_env(tmp: Path, model: Path, library: Path) -> dict[str, str]:
    return {**service_env(tmp, model, library), "API_KEY": API_KEY, "VQA_ENABLED": "false"}


def all_results(server: Server, top_k: int = 100) -> dict[str, float]:
    """Every indexed path (the library is smaller than top_k) -> its score for one text query."""
    response = httpx.post(f"{server.url}/text2image_search", headers=AUTH, timeout=30,
                          data={"text_query": "a shape", "top_k": str(top_k), "include_image": "false"})
    assert response.status_code == 200, response.text
    return {r["image"]: r["score"] for r in response.json()["results"]}


def best_match(server: Server, image: bytes) -> tuple[str, float]:
    response = httpx.post(f"{server.url}/image2image_search", headers=AUTH, timeout=30,
                          files={"image": ("q.png", image, "image/png")}, data={"top_k": "1", "include_image": "false"})
    assert response.status_code == 200, response.text
    top = response.json()["results"][0]
    return top["image"], top["score"]


class SearchLoad:
    """Text searches one after another in a thread while something else runs; keeps statuses and times."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.statuses: list[int] = []
        self.seconds: list[float] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.loop, daemon=True)

    def loop(self) -> None:
        with httpx.Client(headers=AUTH, timeout=30) as client:
            while not self.stop.is_set():
                start = time.perf_counter()
                response = client.post(f"{self.server.url}/text2image_search",
                                       data={"text_query": "a red circle", "top_k": "5", "include_image": "false"})
                self.seconds.append(time.perf_counter() - start)
                self.statuses.append(response.status_code)

    def __enter__(self) -> SearchLoad:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop.set()
        self.thread.join(60)


def test_index_while_serving_is_searchable_at_once_and_closed_to_outsiders(tiny_clip_dir: Path,
                                                                          tmp_path: Path) -> None:
    library = tmp_path / "photos"
    shapes = make_library(library, n_per_class=2, seed=5)
    env = live_env(tmp_path, tiny_clip_dir, library)
    address = service_file_path(tmp_path / "qdrant", "images")
    with running(env, tmp_path / "server.log") as server:
        found = read_service_file(address)
        assert found is not None and found.url == server.url, found  # the port bentoml serve was given
        assert stat.S_IMODE(address.stat().st_mode) == 0o600
        write = f"{server.url}/internal/store/ensure_collection"
        body = {"model_id": "intruder", "dim": 4, "recreate": True}
        for headers in ({}, AUTH, {**AUTH, TOKEN_HEADER: "a guess"}):  # the API key is not enough
            refused = httpx.post(write, json=body, headers=headers)
            assert refused.status_code == 403 and refused.json()["error"]["code"] == "permission_denied"
        proxied = httpx.post(write, json=body, headers={TOKEN_HEADER: found.token, "X-Forwarded-For": "203.0.113.9"})
        assert proxied.status_code == 404 and proxied.json()["status"] == "error"
        assert (tmp_path / "qdrant" / "images.meta.json").exists() is False  # nothing was written
        spec = httpx.get(f"{server.url}/docs.json", headers=AUTH).json()
        assert spec["paths"] and not any(path.startswith("/internal") for path in spec["paths"])

        with SearchLoad(server) as load:
            done = run_indexer(env, "--json")
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["added"] == len(shapes)
        ended = time.monotonic()
        assert set(all_results(server)) == set(shapes)
        assert time.monotonic() - ended < 5
        assert load.statuses and all(s == 200 for s in load.statuses), sorted(set(load.statuses))

        # A new, a changed and a removed photo, in one more run.
        new = draw_shape("circle", "blue", size=90, seed=42)
        (library / "new_circle.png").write_bytes(png(new))
        changed_rel = sorted(shapes)[0]
        changed = draw_shape("triangle", "green", size=96, seed=4242)
        changed.save(library / changed_rel)
        removed_rel = sorted(shapes)[1]
        (library / removed_rel).unlink()
        again = run_indexer(env, "--json")
        assert again.returncode == 0, again.stderr
        summary = json.loads(again.stdout)
        assert (summary["added"], summary["updated"], summary["removed"]) == (1, 1, 1), summary
        ended = time.monotonic()
        paths = set(all_results(server))
        assert "new_circle.png" in paths and removed_rel not in paths and changed_rel in paths
        assert best_match(server, png(new))[0] == "new_circle.png"
        top, score = best_match(server, (library / changed_rel).read_bytes())
        assert top == changed_rel and score > 0.999
        assert time.monotonic() - ended < 5
    assert not address.exists()  # withdrawn at shutdown: a later indexer opens the folder itself
    assert cli({**env, "API_KEY": ""}, "--json").returncode == 0


# ---------------------------------------------------------------- SIGKILL of either side


def start_indexer(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "indexer", "--batch-size", "4", "--workers", "2"], cwd=ROOT,
                            env={**env, "TQDM_MININTERVAL": "0"}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def wait_for_progress(proc: subprocess.Popen[bytes], fraction: float, limit: float = 180) -> bytes:
    """Read the indexer's progress bar until `fraction` of its images are done; the stderr read so far."""
    assert proc.stderr is not None
    fd, seen, deadline = proc.stderr.fileno(), b"", time.monotonic() + limit
    while time.monotonic() < deadline:
        if select.select([fd], [], [], 0.05)[0]:
            chunk = os.read(fd, 1 << 16)
            assert chunk, f"the indexer ended before the kill: {seen[-2000:]!r}"
            seen += chunk
            found = PROGRESS.findall(seen[-4096:])
            if found and int(found[-1][0]) >= fraction * int(found[-1][1]):
                return seen
    raise AssertionError(f"no progress: {seen[-2000:]!r}")


def kill_indexer_mid_run(env: dict[str, str]) -> None:
    proc = start_indexer(env)
    wait_for_progress(proc, 0.3)
    proc.kill()
    proc.wait()
    assert proc.returncode == -signal.SIGKILL


def kill_service(server: Server) -> None:
    """SIGKILL the arbiter, then its workers (circus starts each in its own process group)."""
    workers = [int(p.name) for p in Path("/proc").iterdir()
               if p.name.isdigit() and parent_pid(p) == server.proc.pid]
    os.killpg(server.proc.pid, signal.SIGKILL)
    for pid in workers:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    server.proc.wait()
    assert workers, "no worker processes found"


def kill_service_mid_run(env: dict[str, str], server: Server) -> None:
    proc = start_indexer(env)
    seen = wait_for_progress(proc, 0.3)
    kill_service(server)
    _, rest = proc.communicate(timeout=120)
    message = (seen + (rest or b"")).decode(errors="replace")
    assert proc.returncode == 1, message[-2000:]
    assert "stopped answering" in message and "run the indexer again" in message, message[-2000:]
    server.stop()  # its temporary folder


def snapshot(folder: Path) -> dict[str, tuple[dict[str, Any], np.ndarray]]:
    store = EdgeStore(folder, "images")
    try:
        records = dict(store.payloads())
        vectors = store.vectors(list(records))
        assert store.count() == len(records) and set(vectors) == set(records)
        for pid, payload in records.items():
            assert pid == point_id(payload["path"])
        return {pid: ({k: v for k, v in p.items() if k != "indexed_at"}, vectors[pid]) for pid, p in records.items()}
    finally:
        store.close()


def assert_same(got: dict[str, tuple[dict[str, Any], np.ndarray]],
                clean: dict[str, tuple[dict[str, Any], np.ndarray]]) -> None:
    assert set(got) == set(clean), (len(got), len(clean))
    for pid, (payload, vector) in got.items():
        assert payload == clean[pid][0]
        np.testing.assert_allclose(vector, clean[pid][1], atol=ATOL, err_msg=payload["path"])


@pytest.fixture(scope="module")
def big_library(tmp_path_factory: pytest.TempPathFactory, random_clip_dir: Path) -> Iterator[tuple[Path, Any]]:
    """306 images and the collection a clean run (service stopped) makes of them."""
    tmp = tmp_path_factory.mktemp("live-faults")
    library = tmp / "photos"
    make_library(library, n_per_class=17, seed=3)
    env = {**service_env(tmp, random_clip_dir, library), "QDRANT_PATH": str(tmp / "clean")}
    done = cli(env)
    assert done.returncode == 0, done.stderr
    yield library, snapshot(tmp / "clean")


@pytest.mark.parametrize("first", ["indexer", "service"])
def test_sigkill_of_either_side_mid_run_converges_to_the_clean_run(first: str, big_library: tuple[Path, Any],
                                                                   random_clip_dir: Path, tmp_path: Path) -> None:
    library, clean = big_library
    env = live_env(tmp_path, random_clip_dir, library)
    log = tmp_path / "server.log"
    if first == "indexer":
        with running(env, log) as server:
            kill_indexer_mid_run(env)
            assert all_results(server)  # a part was written, and is searchable
        server = Server(env, log)
        server.wait_ready()
        kill_service_mid_run(env, server)
    else:
        server = Server(env, log)
        server.wait_ready()
        kill_service_mid_run(env, server)
        with running(env, log):  # writes through the restarted service, whose store replayed its log
            kill_indexer_mid_run(env)
    with running(env, log) as server:
        done = run_indexer(env, "--json")
        assert done.returncode == 0, done.stderr
        assert len(all_results(server)) == 100  # top_k: the collection answers
    assert_same(snapshot(tmp_path / "qdrant"), clean)
