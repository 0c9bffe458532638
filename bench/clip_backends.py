"""Real-size CLIP encoding per backend on CPU: Chinese-CLIP ViT-B/16 built from its published config with
random weights (bench/_models.py; speed does not depend on weight values), every CLIP_RUNTIME side by side in
one run, against PyTorch eager fp32.

    .venv/bin/python bench/clip_backends.py [--rounds 5] [--backends openvino,onnx,...] [--photos 32]
                                            [--no-record]

Figures per backend (median of `--rounds` rounds that interleave the backends): image-tower throughput at
batch 16 (img/s, the processor's 224 px pixel values as input, preprocessing excluded: the same for all),
text latency for one query at a time (ms/query, tokenizer included), and top-1
agreement with PyTorch fp32 on hard queries: near-duplicate images (6 random scenes x 8 noisy copies, 48
queries against 48 others) and 20 texts against those images. Exports (and their fidelity check) come from
runners/clip/runtimes.py exactly as the server makes them, timed once (export time); the cache is in a temp
folder so every run exports afresh (removed once the backends are loaded). Then the indexer's throughput
per backend on a library of `--photos` generated 12-MP JPEGs (decode + embed + write into an embedded store,
indexer/pipeline.py with its default options), backends one after the other.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "bench")]

from _models import build_real_clip  # noqa: E402
from _report import record  # noqa: E402
from event_loop import make_photos  # noqa: E402
from PIL import Image  # noqa: E402
from runners.clip.runtimes import LOW_PRECISION, installed, top1  # noqa: E402

from runners.clip import ClipEncoder  # noqa: E402

BATCH = 16
HEADING = "### Real size: CLIP encode per backend on CPU (issue 12)"
TEXTS = ["红色的圆形", "一只猫在沙发上", "蓝色的天空和白云", "a photo of a dog", "夜晚的城市灯光", "海边的日落",
         "a bowl of noodles", "绿色的森林", "一辆红色的汽车", "two people walking", "雪山", "a yellow flower",
         "生日蛋糕", "an old building", "桌子上的书", "a cup of coffee", "孩子们在公园里玩", "black and white",
         "一张风景照片", "a blue square"]


def scenes(n_scenes: int, copies: int, seed: int) -> list[Image.Image]:
    """`copies` noisy near-duplicates of each of `n_scenes` random scenes (smooth colour fields + noise)."""
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(n_scenes):
        base = np.kron(rng.uniform(0, 255, (8, 8, 3)), np.ones((40, 40, 1)))  # 320 x 320 blocks of colour
        for _ in range(copies):
            noisy = np.clip(base + rng.normal(0, 24, base.shape), 0, 255).astype(np.uint8)
            images.append(Image.fromarray(noisy))
    return images


def image_rate(encoder: ClipEncoder, pixels: np.ndarray) -> float:
    start = time.perf_counter()
    encoder.runtime.image_features(pixels)
    return len(pixels) / (time.perf_counter() - start)


def text_latency(encoder: ClipEncoder, texts: list[str]) -> float:
    times = []
    for text in texts:
        start = time.perf_counter()
        encoder.encode_texts([text])
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def rankings(encoder: ClipEncoder, library: list[Image.Image], queries: list[Image.Image]) -> np.ndarray:
    items = encoder.encode_images(library)
    return np.concatenate([top1(encoder.encode_images(queries), items), top1(encoder.encode_texts(TEXTS), items)])


def index_rate(encoder: ClipEncoder, library: Path, work: Path) -> float:
    """Photos per second of one indexing run (decode + embed + write) into a fresh embedded store."""
    from indexer.pipeline import Indexer, IndexOptions
    from store.qdrant_edge import EdgeStore

    store = EdgeStore(work, "images")
    store.ensure_collection(encoder.model_id, encoder.dim, recreate=True)
    started = time.perf_counter()
    summary = Indexer(store, encoder, IndexOptions(progress=False)).run(library)
    elapsed = time.perf_counter() - started
    store.close()
    assert summary.added == summary.scanned and summary.failed == 0, summary
    return summary.added / elapsed


def timed(encoders: dict[str, ClipEncoder], pixels: np.ndarray, rounds: int) -> dict[str, dict[str, Any]]:
    """Rounds interleave the backends (one batch and a few queries each per round), so load from other jobs
    on the machine falls on all of them alike; the median round counts."""
    for encoder in encoders.values():  # warm-up
        encoder.runtime.image_features(pixels[:2])
        encoder.encode_texts([TEXTS[0]])
    rates: dict[str, list[float]] = {name: [] for name in encoders}
    latencies: dict[str, list[float]] = {name: [] for name in encoders}
    per_round = TEXTS[:5]
    for r in range(rounds):
        for name, encoder in encoders.items():
            rates[name].append(image_rate(encoder, pixels))
            latencies[name].append(text_latency(encoder, per_round[r % 2:] + per_round[: r % 2]))
        print(f"round {r + 1}: " + ", ".join(f"{n} {rates[n][-1]:.1f} img/s {latencies[n][-1]:.0f} ms"
                                             for n in encoders), flush=True)
    return {name: {"img_s": statistics.median(rates[name]), "ms_query": statistics.median(latencies[name]),
                   "img_range": (min(rates[name]), max(rates[name])),
                   "ms_range": (min(latencies[name]), max(latencies[name]))} for name in encoders}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--backends", default="openvino,onnx,openvino-bf16,torch-bf16,onnx-int8")
    parser.add_argument("--photos", type=int, default=32, help="12-MP JPEGs for the indexer run (0: none)")
    parser.add_argument("--model", type=Path, default=ROOT / "data" / "bench" / "chinese-clip-vit-b16-random")
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    folder = build_real_clip(args.model)
    library, queries = scenes(6, 8, seed=1), scenes(6, 8, seed=1)[::-1]
    queries = [Image.fromarray(np.clip(np.asarray(im, np.int16) + 6, 0, 255).astype(np.uint8)) for im in queries]
    hard = (library, queries)
    cache = Path(tempfile.mkdtemp(prefix="clip-backends-"))

    encoders = {"torch": ClipEncoder(str(folder), "cpu", runtime="torch")}
    exports: dict[str, str] = {}
    for name in [b for b in args.backends.split(",") if b]:
        if not installed(name):
            exports[name] = "not installed"
            continue
        start = time.perf_counter()
        encoders[name] = ClipEncoder(str(folder), "cpu", runtime=name, runtime_cache=cache)
        exports[name] = f"{time.perf_counter() - start:.0f} s"
    shutil.rmtree(cache, ignore_errors=True)
    pixels = encoders["torch"].processor(images=scenes(2, BATCH // 2, seed=2), return_tensors="np")["pixel_values"]
    results: dict[str, dict[str, Any]] = timed(encoders, pixels, args.rounds)
    for name, encoder in encoders.items():
        results[name]["top1"] = rankings(encoder, *hard)
    with tempfile.TemporaryDirectory(prefix="clip-backends-index-") as work:
        if args.photos:
            make_photos(Path(work) / "photos", args.photos)
        for name, encoder in encoders.items():
            rate = index_rate(encoder, Path(work) / "photos", Path(work) / name) if args.photos else None
            results[name]["index"] = rate
            print(f"indexer {name}: {rate} photos/s", flush=True)

    base = results["torch"]
    rows = []
    for name, r in results.items():
        agree = float(np.mean(r["top1"] == base["top1"]))
        rows.append(f"| {name} | {r['img_s']:.1f} ({r['img_range'][0]:.1f}-{r['img_range'][1]:.1f}) | "
                    f"{r['img_s'] / base['img_s']:.2f}x | {r['ms_query']:.0f} ({r['ms_range'][0]:.0f}-"
                    f"{r['ms_range'][1]:.0f}) | {base['ms_query'] / r['ms_query']:.2f}x | {agree:.1%} | "
                    f"{index_cell(r['index'], base['index'])} | {exports.get(name, '-')} |")
    cpu = f"{os.cpu_count()} CPUs"
    body = "\n".join([
        HEADING, "",
        f"`.venv/bin/python bench/clip_backends.py` ({cpu}, load average {os.getloadavg()[0]:.1f} "
        "at the end; all backends in one run, rounds interleaving them, medians). Chinese-CLIP ViT-B/16 at real "
        "size from its published config, random weights. Image tower at batch 16 (224 px pixel values in), text "
        f"tower one query at a time; top-1 agreement with PyTorch fp32 over {len(base['top1'])} hard queries "
        f"(near-duplicate noisy scenes, and texts against them). Indexer: {args.photos} generated 12-MP JPEGs "
        "(4000x3000) decoded, embedded and written to an embedded store per backend, photos/s. `auto` on CPU "
        f"picks the first faithful installed backend (openvino, else onnx); {', '.join(LOW_PRECISION)} are "
        "opt-in. In brackets: the slowest and fastest round; PyTorch's text latency swings widely when other "
        "jobs hold the cores (its OpenMP threads wait on each other), so its text ratio is the least reliable "
        "figure here.", "",
        "| backend | image img/s (range) | vs torch | text ms/query (range) | vs torch | top-1 agreement "
        "| indexer photos/s (vs torch) | export |",
        "|---|---|---|---|---|---|---|---|", *rows,
    ])
    print(body)
    if not args.no_record:
        record("clip-backends", body)


def index_cell(rate: float | None, base: float | None) -> str:
    return "-" if rate is None or not base else f"{rate:.2f} ({rate / base:.2f}x)"


if __name__ == "__main__":
    main()
