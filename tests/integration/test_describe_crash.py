"""`python -m indexer --describe` SIGKILLed mid-describe, after its first batch of descriptions is written,
then run again: the second run describes exactly the photos the first did not, every photo ends described
once, the collection holds no duplicate points and the CLIP vectors are untouched."""

from __future__ import annotations

import json
import os
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from helpers.indexing import cli_env
from serving import ROOT
from shapes import make_library

from config import DEFAULT_DESCRIBE_PROMPT
from runners.vlm.describe import describer_id
from store.interface import PAYLOAD_FIELDS, point_id
from store.qdrant_edge import EdgeStore

BATCH = 2
PROGRESS = re.compile(rb"describe:.*?\| *(\d+)/(\d+) \[")  # the stage's tqdm line: "describe:  25%|##  | 4/16 ["


def env_for(model: Path, vqa: Path, library: Path, qdrant: Path) -> dict[str, str]:
    env = {k: v for k, v in cli_env(model, library, qdrant).items()
           if not k.startswith(("VQA_", "DESCRIBE_", "INDEX_"))}
    # TQDM_MININTERVAL=0: the progress bar shows every batch, so the kill can aim at the first one.
    return {**env, "DEVICE": "cpu", "VQA_MODEL": str(vqa), "VQA_QUANTIZATION": "none", "TQDM_MININTERVAL": "0",
            "DESCRIBE_BATCH_SIZE": str(BATCH), "DESCRIBE_MAX_NEW_TOKENS": "16"}


def kill_after_first_batch(env: dict[str, str], limit: float = 240) -> tuple[int, int]:
    """Run `--describe`, SIGKILL it as soon as its progress bar shows a written batch; (done, total) then."""
    proc = subprocess.Popen([sys.executable, "-m", "indexer", "--describe"], cwd=ROOT, env=env,
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
            progress = [tuple(int(x) for x in m) for m in PROGRESS.findall(tail)]
            if progress and progress[-1][0] >= BATCH:
                proc.send_signal(signal.SIGKILL)
                found = progress[-1]
                break
    finally:
        proc.wait()
        proc.stderr.close()
    assert found is not None, f"no describe progress before the run ended: {tail.decode(errors='replace')}"
    assert proc.returncode == -signal.SIGKILL
    return found[0], found[1]


def collection(folder: Path) -> tuple[dict[str, dict[str, object]], dict[str, np.ndarray]]:
    store = EdgeStore(folder, "images")
    try:
        records = list(store.payloads())
        ids = [pid for pid, _ in records]
        assert len(ids) == len(set(ids)) == store.count(), "duplicate points"
        return dict(records), store.vectors(ids)
    finally:
        store.close()


def test_sigkill_mid_describe_then_a_rerun_describes_the_rest_once(random_clip_dir: Path, tiny_qwen_dir: Path,
                                                                   tmp_path: Path) -> None:
    library = tmp_path / "lib"
    shapes = make_library(library, n_per_class=2)  # 36 photos, 18 batches of 2
    qdrant = tmp_path / "qdrant"
    env = env_for(random_clip_dir, tiny_qwen_dir, library, qdrant)
    embedded = subprocess.run([sys.executable, "-m", "indexer", "--no-progress"], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=300)
    assert embedded.returncode == 0, embedded.stderr
    _, vectors = collection(qdrant)

    done, total = kill_after_first_batch(env)
    assert total == len(shapes)
    payloads, _ = collection(qdrant)
    described_by = describer_id(str(tiny_qwen_dir), DEFAULT_DESCRIBE_PROMPT)
    first = {p["path"] for p in payloads.values() if p.get("described_by") == described_by}
    assert done <= len(first) < len(shapes), "the kill landed after the whole stage"

    rerun = subprocess.run([sys.executable, "-m", "indexer", "--no-progress", "--describe", "--json"], cwd=ROOT,
                           env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    summary = json.loads(rerun.stdout)
    assert (summary["added"], summary["updated"], summary["removed"]) == (0, 0, 0)
    assert (summary["described"], summary["describe_failed"]) == (len(shapes) - len(first), 0)

    payloads, after = collection(qdrant)
    assert set(payloads) == {point_id(rel) for rel in shapes}
    for pid, payload in payloads.items():
        assert set(payload) == {*PAYLOAD_FIELDS, "description", "visible_text", "tags", "described_by"}
        assert payload["described_by"] == described_by and payload["description"]
        assert np.array_equal(after[pid], vectors[pid])
    again = subprocess.run([sys.executable, "-m", "indexer", "--no-progress", "--describe", "--json"], cwd=ROOT,
                           env=env, capture_output=True, text=True, timeout=300)
    assert json.loads(again.stdout)["described"] == 0
