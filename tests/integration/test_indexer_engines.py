"""The indexer's engines: `python -m indexer` without `--engine ray` imports no Ray (nor does loading the Ray
engine's module: Ray is imported when a run starts). The Ray engine itself: tests/integration/test_ray_indexing.py."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

from helpers.indexing import cli_env
from serving import ROOT
from shapes import make_library

from indexer.__main__ import print_summary
from indexer.pipeline import Summary

RUN = """
import json, sys
from indexer.__main__ import run
code = run(["--no-progress", "--json"])
import indexer.ray_engine  # the engine's module alone imports no Ray either
print(json.dumps({"code": code, "ray": sorted(m for m in sys.modules if m == "ray" or m.startswith("ray."))}))
"""


def test_the_default_engine_imports_no_ray(tiny_clip_dir: Path, tmp_path: Path) -> None:
    shapes = make_library(tmp_path / "lib", n_per_class=1)
    env = {**cli_env(tiny_clip_dir, tmp_path / "lib", tmp_path / "qdrant"), "CLIP_RUNTIME": "torch"}
    done = subprocess.run([sys.executable, "-c", RUN], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    summary, result = done.stdout.strip().splitlines()
    assert json.loads(summary)["added"] == len(shapes)
    assert json.loads(result) == {"code": 0, "ray": []}


def test_the_ray_engines_stage_figures_print_with_its_summary_only() -> None:
    stage = {"stage": "MapBatches(decode_batch)->MapBatches(EmbedActor)", "rows": 120, "seconds": 3.5,
             "cpu_seconds": 6.1, "span_seconds": 4.0, "rows_per_s": 30.0}
    ray, local = Summary(added=120, ray_stages=[stage]), Summary(added=120)
    out = io.StringIO()
    print_summary(ray, as_json=False, out=out)
    assert out.getvalue().splitlines()[-1] == ("ray stage MapBatches(decode_batch)->MapBatches(EmbedActor): "
                                               "120 rows, busy 3.50 s over 4.00 s, 30.0 rows/s")
    out = io.StringIO()
    print_summary(ray, as_json=True, out=out)
    assert json.loads(out.getvalue())["ray_stages"] == [stage]
    out, text = io.StringIO(), io.StringIO()
    print_summary(local, as_json=True, out=out)  # the local engine's summary: as it has always been
    print_summary(local, as_json=False, out=text)
    assert "ray_stages" not in json.loads(out.getvalue()) and text.getvalue().splitlines()[-1].startswith("seconds:")
