"""`python -m indexer --describe` SIGKILLed mid-describe, after its first batch of descriptions is written,
then run again: the second run describes exactly the photos the first did not, every photo ends described
once, the collection holds no duplicate points and the CLIP vectors are untouched."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from helpers.indexing import cli_env, collection, kill_after_first_batch
from serving import ROOT
from shapes import make_library

from config import DEFAULT_DESCRIBE_PROMPT
from runners.vlm.describe import describer_id
from store.interface import PAYLOAD_FIELDS, point_id

BATCH = 2


def env_for(model: Path, vqa: Path, library: Path, qdrant: Path) -> dict[str, str]:
    env = {k: v for k, v in cli_env(model, library, qdrant).items()
           if not k.startswith(("VQA_", "DESCRIBE_", "INDEX_"))}
    # TQDM_MININTERVAL=0: the progress bar shows every batch, so the kill can aim at the first one.
    return {**env, "DEVICE": "cpu", "VQA_MODEL": str(vqa), "VQA_QUANTIZATION": "none", "TQDM_MININTERVAL": "0",
            "DESCRIBE_BATCH_SIZE": str(BATCH), "DESCRIBE_MAX_NEW_TOKENS": "16"}


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

    done, total = kill_after_first_batch(env, "describe", BATCH)
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
