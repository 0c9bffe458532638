"""The indexer for tests: whole runs in this process with an encoder that counts what it embeds, what a
store holds, a few broken files, and the `python -m indexer` command line."""

from __future__ import annotations

import io
import os
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from serving import ROOT
from shapes import draw_shape

from indexer.pipeline import Indexer
from indexer.pipeline import IndexOptions as Options
from runners.clip import ClipEncoder
from store.qdrant_edge import EdgeStore


class CountingEncoder:
    """The real encoder, counting how many images it was asked to embed."""

    def __init__(self, encoder: ClipEncoder) -> None:
        self.encoder = encoder
        self.model_id = encoder.model_id
        self.dim = encoder.dim
        self.embedded = 0

    def encode_images(self, images: list[Image.Image]) -> np.ndarray:
        self.embedded += len(images)
        return self.encoder.encode_images(images)



def index(store: Any, encoder: ClipEncoder, library: Path, **options: Any) -> tuple[Any, CountingEncoder]:
    counting = CountingEncoder(encoder)
    store.ensure_collection(counting.model_id, counting.dim)
    summary = Indexer(store, counting, Options(progress=False, **options)).run(library)
    return summary, counting


def contents(store: Any) -> dict[str, dict[str, Any]]:
    """Point id -> payload without the indexing time."""
    return {pid: {k: v for k, v in p.items() if k != "indexed_at"} for pid, p in store.payloads()}


def corrupt_files(library: Path) -> dict[str, str]:
    good = io.BytesIO()
    draw_shape("circle", "red", seed=99).save(good, format="JPEG")
    (library / "broken").mkdir(exist_ok=True)
    (library / "broken" / "empty.png").write_bytes(b"")
    (library / "broken" / "truncated.jpg").write_bytes(good.getvalue()[: len(good.getvalue()) // 2])
    (library / "broken" / "notes.JPG").write_text("this is not an image")
    return {"broken/empty.png": "empty", "broken/truncated.jpg": "truncated", "broken/notes.JPG": "image"}


def cli(env: dict[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "indexer", "--no-progress", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def cli_env(model: Path, library: Path, qdrant: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QDRANT_", "CLIP_", "IMAGE_"))}
    env.update(CLIP_MODEL=str(model), IMAGE_LIBRARY=str(library), QDRANT_PATH=str(qdrant),
               CLIP_RUNTIME_CACHE=str(qdrant.parent / "clip-backends"))  # CLIP_RUNTIME=auto exports there
    return env


def edge_contents(folder: Path) -> dict[str, dict[str, Any]]:
    store = EdgeStore(folder, "images")
    try:
        return contents(store)
    finally:
        store.close()


def kill_after_first_batch(env: dict[str, str], stage: str, batch: int, limit: float = 240) -> tuple[int, int]:
    """Run `python -m indexer --<stage>` (a payload stage: describe, ocr), SIGKILL it as soon as the stage's progress
    bar shows a written batch of `batch`; (done, total) then. The env must set TQDM_MININTERVAL=0 (the bar then
    shows every batch, so the kill can aim at the first one)."""
    progress_line = re.compile(rb"%s:.*?\| *(\d+)/(\d+) \[" % stage.encode())  # "ocr:  25%|##  | 4/16 ["
    proc = subprocess.Popen([sys.executable, "-m", "indexer", f"--{stage}"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    start, tail, found = time.monotonic(), b"", None
    try:
        fd = proc.stderr.fileno()
        while time.monotonic() - start < limit:
            if not select.select([fd], [], [], 0.002)[0]:
                continue
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                break
            tail = (tail + chunk)[-4096:]
            progress = [tuple(int(x) for x in m) for m in progress_line.findall(tail)]
            if progress and progress[-1][0] >= batch:
                proc.send_signal(signal.SIGKILL)
                found = progress[-1]
                break
    finally:
        proc.wait()
        proc.stderr.close()
    assert found is not None, f"no {stage} progress before the run ended: {tail.decode(errors='replace')}"
    assert proc.returncode == -signal.SIGKILL
    return found[0], found[1]


def collection(folder: Path) -> tuple[dict[str, dict[str, object]], dict[str, np.ndarray]]:
    """The payloads and vectors of the embedded store in `folder`; no duplicate points."""
    store = EdgeStore(folder, "images")
    try:
        records = list(store.payloads())
        ids = [pid for pid, _ in records]
        assert len(ids) == len(set(ids)) == store.count(), "duplicate points"
        return dict(records), store.vectors(ids)
    finally:
        store.close()
