"""The indexer's engines: `python -m indexer` without `--engine ray` imports no Ray (nor does loading the Ray
engine's module: Ray is imported when a run starts). The Ray engine itself: tests/integration/test_ray_indexing.py."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from helpers.indexing import cli_env
from serving import ROOT
from shapes import make_library

RUN = """
import json, sys
from indexer.__main__ import run
code = run(["--no-progress", "--json"])
import indexer.ray_engine  # the engine's module alone imports no Ray either
print(json.dumps({"code": code, "ray": sorted(m for m in sys.modules if m == "ray" or m.startswith("ray."))}))
"""


def test_the_default_engine_imports_no_ray(tiny_clip_dir: Path, tmp_path: Path) -> None:
    shapes = make_library(tmp_path / "lib", n_per_class=1)
    env = {**cli_env(tiny_clip_dir, tmp_path / "lib", tmp_path / "qdrant"), "CLIP_BACKEND": "torch"}
    done = subprocess.run([sys.executable, "-c", RUN], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    summary, result = done.stdout.strip().splitlines()
    assert json.loads(summary)["added"] == len(shapes)
    assert json.loads(result) == {"code": 0, "ray": []}
