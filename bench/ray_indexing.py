"""Indexing on Ray vs the local engine on this machine: the same photos, the same CLIP, side by side.

    .venv/bin/python bench/ray_indexing.py [--photos 2000] [--model real|tiny] [--note "quiet machine"] [--no-record]

Each engine runs `python -m indexer --json` as a user runs it (a fresh embedded store, CLIP_RUNTIME=torch for
both), the Ray engine with a local Ray started for the run (`--engine ray`, one CLIP actor holding both CPUs:
INDEX_RAY_CPUS_PER_ACTOR=2, as the local run's torch uses both). Reported: wall time of the whole command and
images/s, the overhead ratio Ray / local, and the pipeline's own seconds (decode + embed + write, without
starting Ray); then per stage, side by side: the local engine's seconds per stage (its summary's `seconds`)
and Ray Data's own figures per operator (the summary's `ray_stages`: rows out, busy seconds, rows/s), with
each stage's busy share of the pipeline and of its own span, and the slowest stage named. `--model real`:
Chinese-CLIP ViT-B/16 at real size with random weights (bench/_models.py); `tiny`: the 32-d test model.
Photos: 640x480 JPEGs of random shapes. The text names this CPU and the instruction sets it has
(bench/_machine.py) and `--note` (how loaded the machine was).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench"), str(ROOT / "tests")]

from _machine import cpu_name, instruction_sets  # noqa: E402
from _report import record  # noqa: E402

LOCAL_STAGES = {"decode_wait": "decode (threads; the time the loop waits on them)", "embed": "embed (CLIP)",
                "write": "write"}


def make_photos(folder: Path, n: int) -> None:
    from shapes import CLASSES, draw_shape

    for i in range(n):
        shape, color = CLASSES[i % len(CLASSES)]
        sub = folder / f"{i // 500:03d}"
        sub.mkdir(parents=True, exist_ok=True)
        draw_shape(shape, color, size=480, seed=i).resize((640, 480)).save(sub / f"img_{i:05d}.jpg", quality=90)


def model(kind: str, folder: Path) -> Path:
    if kind == "tiny":
        return ROOT / "tests" / "fixtures" / "tiny_clip"
    from _models import build_real_clip

    return build_real_clip(folder / "clip")


def run(engine: str, clip: Path, library: Path, qdrant: Path) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QDRANT_", "CLIP_", "IMAGE_", "INDEX_"))}
    env.update(CLIP_MODEL=str(clip), IMAGE_LIBRARY=str(library), QDRANT_PATH=str(qdrant), CLIP_RUNTIME="torch",
               INDEX_RAY_CPUS_PER_ACTOR="2", RAY_USAGE_STATS_ENABLED="0")
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "indexer", "--no-progress", "--json", "--engine", engine],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=3600)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{engine} run failed: {done.stderr[-2000:]}")
    summary = json.loads(done.stdout)
    print(engine, round(wall, 1), summary["added"], summary["seconds"], flush=True)
    return {"wall": wall, "summary": summary}


def local_stages(summary: dict[str, Any], n: int) -> list[dict[str, Any]]:
    """The local engine's stages of its one loop (the run's scan, plan and finish left out): seconds each,
    the files it handled per second of its own."""
    seconds = summary["seconds"]
    return [{"stage": label, "rows": n, "seconds": seconds[key], "rows_per_s": n / seconds[key]}
            for key, label in LOCAL_STAGES.items() if seconds.get(key)]


def stage_rows(engine: str, stages: list[dict[str, Any]], pipeline: float) -> list[str]:
    """Table rows: each stage's busy seconds, rows/s, busy share of the pipeline and of its own span."""
    out = []
    for stage in stages:
        span = stage.get("span_seconds")  # Ray's figures only: the local stages share one loop
        own = f"{stage['seconds'] / span:.0%}" if span else "-"
        out.append(f"| {engine} | {stage['stage']} | {stage['rows']} | {stage['seconds']:.2f} s | "
                   f"{stage['rows_per_s']:.1f} | {stage['seconds'] / pipeline:.0%} | {own} |")
    return out


def slowest(engine: str, stages: list[dict[str, Any]], pipeline: float) -> str:
    stage = max(stages, key=lambda s: s["seconds"])
    span = stage.get("span_seconds")
    own = f" and {stage['seconds'] / span:.0%} of its own span ({span:.1f} s)" if span else ""
    share = stage["seconds"] / pipeline
    return f"{engine}: **{stage['stage']}**, busy {share:.0%} of the pipeline's {pipeline:.1f} s{own}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--photos", type=int, default=2000)
    parser.add_argument("--model", choices=("real", "tiny"), default="real")
    parser.add_argument("--note", default="",
                        help="a remark printed with the figures (never overrides the quiet-machine check)")
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        make_photos(folder / "lib", args.photos)
        clip = model(args.model, folder)
        local = run("local", clip, folder / "lib", folder / "q-local")
        ray = run("ray", clip, folder / "lib", folder / "q-ray")
    assert local["summary"]["added"] == ray["summary"]["added"] == args.photos
    n = args.photos
    pipeline = ray["summary"]["seconds"].get("ray", 0.0)
    local_work = sum(v for k, v in local["summary"]["seconds"].items() if k not in ("scan", "plan", "finish"))
    ours, theirs = local_stages(local["summary"], n), ray["summary"].get("ray_stages") or []
    body = "\n".join([
        "## Indexing on Ray (issue 21)",
        "",
        f"`.venv/bin/python bench/ray_indexing.py --photos {n} --model {args.model}` ({n} photos, 640x480 JPEG; "
        f"CLIP {'ViT-B/16 at real size, random weights' if args.model == 'real' else 'tiny test model'}, "
        f"PyTorch fp32 on {cpu_name()}, {os.cpu_count()} cores, instruction sets {instruction_sets()}; "
        f"{args.note}; `python -m indexer` as a user runs it, a fresh embedded store each; the Ray engine "
        "starts a local Ray for the run).",
        "",
        "| engine | wall time | images/s | decode + embed + write |",
        "|---|---|---|---|",
        f"| local | {local['wall']:.1f} s | {n / local['wall']:.1f} | {local_work:.1f} s |",
        f"| ray (1 CLIP actor, 2 CPUs) | {ray['wall']:.1f} s | {n / ray['wall']:.1f} | {pipeline:.1f} s |",
        "",
        f"Overhead ratio Ray / local: **{ray['wall'] / local['wall']:.2f}x** wall time, "
        f"**{pipeline / local_work:.2f}x** for the pipeline alone (without starting Ray; with the actor "
        "starting and loading CLIP); the target is within 1.3x on one machine.",
        "",
        "Per stage (local: the summary's `seconds`; Ray: Ray Data's own figures per operator, the summary's "
        "`ray_stages`; on CPU Ray fuses decode and CLIP into one operator, and the driver hands the results "
        "over and writes them). Busy: the stage's working seconds (Ray: its tasks' wall time, summed); "
        "rows/s: local, over its busy seconds; Ray, over its span (first task started to last one ended).",
        "",
        "| engine | stage | rows | busy | rows/s | busy / pipeline | busy / own span |",
        "|---|---|---|---|---|---|---|",
        *stage_rows("local", ours, local_work),
        *stage_rows("ray", theirs, pipeline),
        "",
        "Slowest stage (most busy seconds): " + "; ".join(
            [slowest("local", ours, local_work)] + ([slowest("ray", theirs, pipeline)] if theirs else [])) + ".",
    ])
    print(body)
    if not args.no_record:
        record("ray-indexing", body)


if __name__ == "__main__":
    main()
