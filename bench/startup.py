"""Service start-up with a library already indexed vs the seed's start-up (re-embed everything).

    .venv/bin/python bench/startup.py [--sizes 0,10000,100000] [--store-dir DIR] [--seed-images 200] [--no-record]

For each size the collection is built once (random 512-d "cliplike" vectors, as bench/search_scale.py
makes them, recorded for the benchmark's 512-d random Chinese-CLIP), or taken from `--store-dir`
(`store-<n>/` folders that `bench/search_scale.py --keep DIR --model-id <clip folder>` left). Then the
real `bentoml serve` starts with that collection, the 512-d CLIP and the tiny Qwen, and the script
times: spawn -> /readyz 200 (both runners loaded), and -> the first search answered. It also reports
the resident memory (RSS) of the whole process tree once ready.

The seed re-embedded the whole library at each start: its start-up is the model load plus `n`
images through its one-at-a-time loop (`bench/seed_baselines.py`), timed here on `--seed-images`
real 640x480 JPEGs with the same model and extrapolated linearly to `n` (that loop's cost per image
does not depend on `n`).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "bench")]

from _models import build_clip  # noqa: E402
from _report import PLOTS, grouped_plot, record, rel, table  # noqa: E402
from serving import Server, service_env  # noqa: E402

CLIP_FOLDER = Path(tempfile.gettempdir()) / "mms-bench-clip512"


def tree_rss_mb(pid: int) -> float:
    """Resident memory of a process and all its children (the API service and both runners)."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0.0
    total = 0
    for proc in procs:
        try:
            total += proc.memory_info().rss
        except psutil.Error:
            pass
    return total / 2**20


def store_for(n: int, store_dir: Path | None, tmp: Path, model_id: str) -> Path:
    """The QDRANT_PATH folder holding a collection of `n` points for `model_id`."""
    if store_dir is not None and (store_dir / f"store-{n}" / "images.meta.json").exists():
        return store_dir / f"store-{n}"
    folder = tmp / f"store-{n}"
    if n == 0:
        return folder
    from search_scale import build_store, cliplike_vectors, make_mix

    rng = np.random.default_rng(1)
    store, *_ = build_store(n, cliplike_vectors(n, make_mix(rng), 1.0, rng), folder, model_id)
    store.close()
    return folder


def time_service(n: int, qdrant: Path, clip: Path, tmp: Path) -> dict[str, float]:
    env = service_env(tmp / f"svc-{n}", clip, tmp / "library")
    env["QDRANT_PATH"] = str(qdrant)
    started = time.perf_counter()
    server = Server(env, tmp / f"server-{n}.log")
    try:
        server.wait_ready(timeout=600)
        ready = time.perf_counter() - started
        r = httpx.post(f"{server.url}/text2image_search", json={"text_query": "红色圆形", "top_k": 10,
                                                                 "include_image": False}, timeout=60)
        first = time.perf_counter() - started
        if r.status_code != 200 or len(r.json()["results"]) != min(n, 10):
            raise RuntimeError(f"search failed at n={n}: {r.status_code} {r.text[:300]}")
        health = httpx.get(f"{server.url}/health", timeout=30).json()
        rss = tree_rss_mb(server.proc.pid)
    finally:
        server.stop()
    print(f"  n={n}: ready {ready:.1f} s, first search {first:.1f} s, library size {health['image_library_size']}, "
          f"RSS {rss:.0f} MB", flush=True)
    return {"ready": ready, "first": first, "rss": rss}


def time_seed(clip: Path, tmp: Path, images: int) -> tuple[float, float]:
    """(model load seconds, seconds per image) of the seed's start-up loop."""
    from index_vs_seed import make_photos
    from seed_baselines import seed_index

    paths = make_photos(tmp / "seed-photos", images)
    started = time.perf_counter()
    from runners.clip import ClipEncoder

    encoder = ClipEncoder(str(clip), device="cpu")
    load = time.perf_counter() - started
    seed_index(paths[:5], encoder.model, encoder.processor)  # warm-up
    started = time.perf_counter()
    seed_index(paths, encoder.model, encoder.processor)
    per_image = (time.perf_counter() - started) / len(paths)
    print(f"  seed: model load {load:.1f} s, {1 / per_image:.1f} images/s", flush=True)
    return load, per_image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="0,10000,100000")
    parser.add_argument("--store-dir", type=Path, help="reuse store-<n>/ folders from bench/search_scale.py --keep")
    parser.add_argument("--clip", type=Path, default=CLIP_FOLDER, help="512-d CLIP folder (built when missing)")
    parser.add_argument("--seed-images", type=int, default=200)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    clip = build_clip(args.clip, 512, text_layers=6, text_width=384)
    from runners.clip import model_id_of

    results = []
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "library").mkdir()
        load, per_image = time_seed(clip, tmp, args.seed_images)
        for n in sizes:
            qdrant = store_for(n, args.store_dir, tmp, model_id_of(str(clip)))
            results.append({"n": n, **time_service(n, qdrant, clip, tmp), "seed": load + n * per_image})
    if not args.no_record:
        report(args, results, load, per_image)


def report(args: argparse.Namespace, results: list[dict[str, Any]], load: float, per_image: float) -> None:
    plot = grouped_plot(PLOTS / "startup.png", "Start-up to the first search answered",
                        [f"{r['n']:,}" for r in results],
                        {"seed (re-embed all)": [r["seed"] for r in results],
                         "service (indexed)": [r["first"] for r in results]}, "seconds (log)")
    rows = [(f"{r['n']:,}", f"{r['ready']:.1f} s | {r['first']:.1f} s | {r['rss']:,.0f} MB | {r['seed']:,.0f} s | "
             f"**{r['seed'] / r['first']:,.1f}×**") for r in results]
    head = ("points indexed", "service: ready (/readyz 200) | service: first search answered | RSS of the "
                              "service's processes | seed start-up (re-embed all) | seed : service")
    text = table(rows, head).replace("|---|---|", "|---|---|---|---|---|---|", 1)
    command = "`.venv/bin/python bench/startup.py " + " ".join(sys.argv[1:]) + "`"
    record("startup", f"""### Service start-up with the library already indexed vs the seed's re-embedding

{command.replace(" `", "`")} (the real `bentoml serve`: API service + CLIP runner (random
512-d Chinese-CLIP, 6x384 text tower) + tiny Qwen runner; collections of 512-d vectors built beforehand
with HNSW. Seed: model load {load:.1f} s + {1 / per_image:.1f} images/s through its one-at-a-time loop,
measured on {args.seed_images} 640x480 JPEGs with the same model in this run, extrapolated to each size):

{text}

![start-up]({rel(plot)})
""")


if __name__ == "__main__":
    main()
