"""Image fault catalogue against the real `bentoml serve` (one server for the module) and the real
`python -m indexer`: every image of tests/extreme_images.py sent to /image2image_search, /vqa and as a
chat data URL answers 200 or 400 naming the cause, never 5xx, while the server's process tree keeps
its memory; a library of those files indexes with exit 0, the bad ones listed, in bounded memory."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import httpx
import psutil
import pytest
from extreme_images import CASES
from serving import ROOT, Server, run_indexer, running, service_env
from shapes import draw_shape

# Growth of a peak over its baseline that the bound allows. Before it: +1.4 GB (16,000 x 16,000
# greyscale PNG), +2.2 GB (its RGBA twin), +2.1 GB (the 1 x 65,000 strip in the indexer or the runner).
SERVER_GROWTH_MB = 300
INDEXER_GROWTH_MB = 250
QUESTION = "What color is it?"
MIME = {".png": "image/png", ".jpg": "image/jpeg", ".gif": "image/gif"}


class TreeMemory:
    """Samples the summed resident memory of a process and its descendants, keeping the peak."""

    def __init__(self, pid: int) -> None:
        self.root = psutil.Process(pid)
        self.peak = 0.0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.watch, daemon=True)
        self.thread.start()

    def now_mb(self) -> float:
        total = 0
        for proc in [self.root, *self.root.children(recursive=True)]:
            try:
                total += proc.memory_info().rss
            except psutil.Error:  # a process that ended between the listing and the read
                pass
        return total / 1024 / 1024

    def watch(self) -> None:
        while not self.stop.is_set():
            self.peak = max(self.peak, self.now_mb())
            time.sleep(0.02)

    def reset(self) -> float:
        self.peak = self.now_mb()
        return self.peak


class Served(NamedTuple):
    server: Server
    memory: TreeMemory
    tmp: Path
    env: dict[str, str]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, tiny_clip_dir: Path) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("faults-images")
    library = tmp / "photos"
    library.mkdir()
    draw_shape("circle", "red", size=64, seed=1).save(library / "red.png")
    env = service_env(tmp, tiny_clip_dir, library)
    done = run_indexer(env)
    assert done.returncode == 0, done.stderr
    with running(env, tmp / "server.log") as server:
        memory = TreeMemory(server.proc.pid)
        yield Served(server, memory, tmp, env)
        memory.stop.set()


def send(server: Server, endpoint: str, name: str, data: bytes) -> httpx.Response:
    suffix = CASES[name][0]
    if endpoint == "chat":
        url = f"data:{MIME[suffix]};base64,{base64.b64encode(data).decode('ascii')}"
        body = {"model": "any", "max_tokens": 2, "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": QUESTION}]}]}
        return httpx.post(f"{server.url}/v1/chat/completions", json=body, timeout=120)
    fields = {"question": QUESTION} if endpoint == "/vqa" else {"top_k": "1", "include_image": "false"}
    return httpx.post(f"{server.url}{endpoint}", data=fields, files={"image": (f"x{suffix}", data, MIME[suffix])},
                      timeout=120)


def warm_up(served: Served) -> None:
    """One ordinary request to each endpoint first, so the baseline holds the models' working memory."""
    for endpoint in ("/image2image_search", "/vqa", "chat"):
        response = send(served.server, endpoint, "cmyk", CASES["cmyk"][1]())
        assert response.status_code == 200, response.text


# The 1 x 65,000 and 65,000 x 1 strips are searchable (CLIP sees their centre) but over Qwen's 200:1
# aspect ratio: the VQA endpoints answer them their own 400 naming it.
VQA_REFUSALS = {"1x65000": "aspect ratio 65000:1 is over 200:1", "65000x1": "aspect ratio 65000:1 is over 200:1"}
SENT = ([("/image2image_search", name) for name in CASES] + [("/vqa", name) for name in CASES]
        + [("chat", name) for name in CASES])


def test_every_extreme_image_answers_200_or_400_and_the_server_keeps_its_memory(served: Served) -> None:
    warm_up(served)
    time.sleep(1)
    baseline = served.memory.reset()
    answers: dict[tuple[str, str], tuple[int, str]] = {}
    for endpoint, name in SENT:
        response = send(served.server, endpoint, name, CASES[name][1]())
        answers[endpoint, name] = (response.status_code, response.text[:300])
    time.sleep(0.5)
    growth = served.memory.peak - baseline
    wrong = {}
    for (endpoint, name), (status, text) in answers.items():
        refusal = CASES[name][2] if endpoint == "/image2image_search" else VQA_REFUSALS.get(name, CASES[name][2])
        if name == "zero-byte":  # an empty upload may read as no upload at all: 400 either way
            ok = status == 400
        elif refusal is None:
            ok = status == 200
        else:
            ok = status == 400 and refusal in json.loads(text)["error"]["message"]
        if not ok:
            wrong[f"{endpoint} {name}"] = (status, text)
    assert not wrong, wrong
    assert growth < SERVER_GROWTH_MB, f"the server's process tree grew {growth:.0f} MB at its peak"


INDEXER_WITH_PEAK = """
import json, resource, sys
from indexer.__main__ import run
code = run(sys.argv[1:])
sys.stderr.write("PEAK_MB " + str(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024) + "\\n")
sys.exit(code)
"""


def index_with_peak(env: dict[str, str], library: Path, qdrant: Path) -> tuple[dict[str, Any], float]:
    done = subprocess.run(
        [sys.executable, "-c", INDEXER_WITH_PEAK, "--library", str(library), "--no-progress", "--json"],
        cwd=ROOT, env={**env, "QDRANT_PATH": str(qdrant)}, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    peak = float(done.stderr.rsplit("PEAK_MB ", 1)[1].split()[0])
    return json.loads(done.stdout.strip().splitlines()[-1]), peak


def test_the_indexer_lists_the_bad_files_and_keeps_its_memory(served: Served) -> None:
    ordinary = served.tmp / "ordinary"
    ordinary.mkdir()
    draw_shape("square", "blue", size=96, seed=2).save(ordinary / "blue.png")
    _, baseline = index_with_peak(served.env, ordinary, served.tmp / "q-ordinary")
    extreme = served.tmp / "extreme"
    extreme.mkdir()
    for name, (suffix, make, _) in CASES.items():
        (extreme / f"{name}{suffix}").write_bytes(make())
    summary, peak = index_with_peak(served.env, extreme, served.tmp / "q-extreme")
    assert dict(summary["failures"]) == {f"{name}{suffix}": refusal for name, (suffix, _, refusal) in CASES.items()
                                         if refusal is not None}
    assert summary["added"] == sum(refusal is None for _, _, refusal in CASES.values())
    assert peak - baseline < INDEXER_GROWTH_MB, f"indexer peak {peak:.0f} MB, {baseline:.0f} MB for one ordinary file"
