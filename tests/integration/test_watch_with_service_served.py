"""`python -m indexer --watch` next to a running `bentoml serve` on the embedded store (issue 13): the
watcher writes through the service (store/via_service.py), and a photo copied into the library is found by
the service's search within 10 s of its copy finishing; SIGTERM stops the watcher cleanly."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
from serving import ROOT, png, run_indexer, running, service_env
from shapes import draw_shape, make_library


def found(url: str, image: bytes, name: str) -> bool:
    response = httpx.post(f"{url}/image2image_search", timeout=30, files={"image": ("q.png", image, "image/png")},
                          data={"top_k": "3", "include_image": "false"})
    assert response.status_code == 200, response.text
    return name in [r["image"] for r in response.json()["results"]]


def first_pass(watcher: subprocess.Popen[bytes], lines: list[str], timeout: float = 180) -> None:
    """Wait until the watcher has logged its first pass over the library (its start-up time, which a loaded
    machine stretches, is not part of the 10 s)."""
    deadline = time.monotonic() + timeout
    while not any("pass:" in line for line in lines):
        assert watcher.poll() is None, "".join(lines)
        assert time.monotonic() < deadline, "no first pass: " + "".join(lines)
        time.sleep(0.1)


def test_a_copied_photo_is_searchable_in_the_running_service_within_ten_seconds(
        tmp_path: Path, tiny_clip_dir: Path) -> None:
    library = tmp_path / "photos"
    make_library(library, n_per_class=1, seed=21)
    env = {**service_env(tmp_path, tiny_clip_dir, library), "VQA_ENABLED": "false",
           "WATCH_INTERVAL_S": "0.5", "WATCH_SETTLE_S": "1"}
    assert run_indexer(env).returncode == 0
    with running(env, tmp_path / "server.log") as server:
        watcher = subprocess.Popen([sys.executable, "-m", "indexer", "--watch", "--no-progress"], cwd=ROOT, env=env,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        lines: list[str] = []
        stdout = watcher.stdout
        assert stdout is not None
        reader = threading.Thread(target=lambda: lines.extend(line.decode() for line in stdout), daemon=True)
        reader.start()
        try:
            first_pass(watcher, lines)  # the watcher's first pass over the unchanged library
            photo = png(draw_shape("triangle", "green", size=96, seed=77))
            target = library / "new" / "triangle.png"
            target.parent.mkdir()
            with target.open("wb") as handle:  # copied in two pieces, a moment apart
                handle.write(photo[: len(photo) // 2])
                handle.flush()
                time.sleep(0.3)
                handle.write(photo[len(photo) // 2:])
            copied = time.monotonic()
            while not found(server.url, photo, "new/triangle.png"):
                assert time.monotonic() - copied < 10, "not searchable within 10 s of the copy finishing"
                time.sleep(0.2)
        finally:
            watcher.send_signal(signal.SIGTERM)
            watcher.wait(timeout=30)
            reader.join(timeout=10)
        output = "".join(lines)
        assert watcher.returncode == 0, output
        assert "pass:" in output
