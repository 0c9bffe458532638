"""`python -m indexer --engine ray` as users run it (a local Ray started for the run): the same summary and
collection as the local engine, an incremental rerun, and a driver killed mid-run whose store the next run
(the local engine) completes with no duplicates. The engine on a two-node cluster: test_ray_indexing.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from helpers.indexing import cli, cli_env, corrupt_files, edge_contents
from serving import ROOT
from shapes import make_library


def ray_env(model: Path, library: Path, qdrant: Path) -> dict[str, str]:
    return {**cli_env(model, library, qdrant), "CLIP_RUNTIME": "torch", "RAY_DISABLE_USAGE_STATS": "1"}


def test_cli_ray_engine_matches_local_and_reruns_incrementally(tiny_clip_dir: Path, tmp_path: Path) -> None:
    library = tmp_path / "lib"
    shapes = make_library(library, n_per_class=1)
    corrupt_files(library)
    local = cli(ray_env(tiny_clip_dir, library, tmp_path / "local"), "--json")
    env = ray_env(tiny_clip_dir, library, tmp_path / "ray")
    ray = cli(env, "--json", "--engine", "ray")
    assert local.returncode == ray.returncode == 0, ray.stderr[-3000:]
    ours, theirs = json.loads(ray.stdout), json.loads(local.stdout)
    for summary in (ours, theirs):
        summary.pop("seconds")
    stages = ours.pop("ray_stages")  # Ray Data's figures per stage: the Ray engine's summary only
    assert ours == theirs and ours["added"] == len(shapes) and ours["failed"] == 3
    assert [stage["rows"] for stage in stages if "EmbedActor" in stage["stage"]] == [len(shapes) + 3]
    assert stages[-1]["stage"] == "driver: hand over + write" and stages[-1]["rows"] == len(shapes) + 3
    assert edge_contents(tmp_path / "ray") == edge_contents(tmp_path / "local")  # less the indexing times
    again = cli({**env, "INDEX_ENGINE": "ray"}, "--json")  # the setting picks the engine too
    assert again.returncode == 0, again.stderr[-3000:]
    assert (json.loads(again.stdout)["added"], json.loads(again.stdout)["unchanged"]) == (0, len(shapes))


def test_a_killed_ray_driver_leaves_a_store_the_next_run_completes(tiny_clip_dir: Path, tmp_path: Path) -> None:
    library = tmp_path / "lib"
    shapes = make_library(library, n_per_class=6)
    env = {**ray_env(tiny_clip_dir, library, tmp_path / "q"), "INDEX_BATCH_SIZE": "4"}
    driver = subprocess.Popen([sys.executable, "-m", "indexer", "--engine", "ray", "--no-progress"], cwd=ROOT,
                              env=env, stderr=subprocess.PIPE, text=True, start_new_session=True)
    assert driver.stderr is not None
    deadline = time.monotonic() + 180
    for line in driver.stderr:  # Ray Data logs the start of the pipeline
        if "Starting execution of Dataset" in line or time.monotonic() > deadline:
            break
    time.sleep(3)  # some batches written, not all (or none: the next run completes either way)
    os.killpg(driver.pid, signal.SIGKILL)  # the driver and the local Ray it started
    driver.wait(timeout=30)
    done = cli(ray_env(tiny_clip_dir, library, tmp_path / "q"), "--json")  # the local engine completes it
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)
    assert summary["added"] + summary["unchanged"] + summary["updated"] == len(shapes)
    stored = edge_contents(tmp_path / "q")
    assert sorted(p["path"] for p in stored.values()) == sorted(shapes)  # every photo once
