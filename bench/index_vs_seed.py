"""Indexing throughput: the project's Indexer (threaded decode with JPEG draft mode, batched embedding,
batched upserts into the embedded store) vs the seed's one-image-at-a-time loop, same model, same images.

    .venv/bin/python bench/index_vs_seed.py [--images 300] [--models tiny,medium] [--rounds 1] [--no-record]

The library is `--images` photo-sized JPEGs (640x480, quality 90, with sensor-like noise so they
decode like photos) of the synthetic shapes in tests/shapes.py. Models: `tiny` is
tests/fixtures/tiny_clip (64 px input: measures the pipeline); `medium` is a random ChineseCLIP with a
224 px / patch-16 / 4-layer, 256-wide vision tower, saved to a temp folder, so the model cost is not
negligible. Both paths exclude model loading; the Indexer's time includes scan, hashing, decoding,
embedding, writing and finish(). Rounds alternate seed, project.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "bench")]

from _report import PLOTS, bar_plot, median, record, rel, table  # noqa: E402
from seed_baselines import seed_index  # noqa: E402
from shapes import CLASSES, draw_shape  # noqa: E402

TINY = ROOT / "tests" / "fixtures" / "tiny_clip"


def make_photos(folder: Path, n: int, size: tuple[int, int] = (640, 480), seed: int = 0) -> list[Path]:
    """`n` JPEG photos of coloured shapes at `size`, with a little noise (as a camera would add)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        shape, color = CLASSES[i % len(CLASSES)]
        base = draw_shape(shape, color, size=size[1], seed=seed * 100_000 + i).resize(size)
        pixels = np.asarray(base, dtype=np.int16) + rng.integers(-6, 7, size=(size[1], size[0], 3), dtype=np.int16)
        path = folder / f"{color}" / f"img_{i:05d}.jpg"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path, quality=90)
        paths.append(path)
    return paths


def build_medium_clip(folder: Path) -> Path:
    """A random ChineseCLIP whose vision tower costs something: 224 px, patch 16, 4 layers of 256."""
    import torch
    from fixtures.make_tiny_clip import build_processor, save, tiny_config
    from transformers import ChineseCLIPModel

    torch.manual_seed(0)
    processor = build_processor()
    processor.image_processor.size = {"shortest_edge": 224}
    processor.image_processor.crop_size = {"height": 224, "width": 224}
    config = tiny_config(len(processor.tokenizer), projection_dim=128)
    vision: Any = config.vision_config
    vision.image_size, vision.patch_size, vision.hidden_size = 224, 16, 256
    vision.num_hidden_layers, vision.num_attention_heads, vision.intermediate_size = 4, 4, 1024
    model = ChineseCLIPModel(config).eval()
    return save(model, processor, folder)


def run_project(encoder: Any, library: Path, work: Path) -> tuple[float, dict[str, float]]:
    from indexer.pipeline import Indexer, IndexOptions
    from store.qdrant_edge import EdgeStore

    store = EdgeStore(work, "images")
    store.ensure_collection(encoder.model_id, encoder.dim, recreate=True)
    started = time.perf_counter()
    summary = Indexer(store, encoder, IndexOptions(progress=False)).run(library)
    elapsed = time.perf_counter() - started
    store.close()
    assert summary.added == summary.scanned and summary.failed == 0, summary
    return elapsed, summary.seconds


def bench_model(name: str, folder: Path, library: Path, paths: list[Path], rounds: int, tmp: Path) -> dict[str, Any]:
    from runners.clip import ClipEncoder

    encoder = ClipEncoder(str(folder), device="cpu")
    encoder.encode_images([draw_shape("circle", "red", size=64, seed=1)])  # warm-up
    seed_times: list[float] = []
    project_times: list[float] = []
    stages: dict[str, float] = {}
    for r in range(rounds):
        started = time.perf_counter()
        vectors = seed_index(paths, encoder.model, encoder.processor)
        seed_times.append(time.perf_counter() - started)
        assert len(vectors) == len(paths)
        elapsed, stages = run_project(encoder, library, tmp / f"store-{name}-{r}")
        project_times.append(elapsed)
        print(f"  [{name}] round {r + 1}: seed {len(paths) / seed_times[-1]:.1f} img/s, "
              f"project {len(paths) / elapsed:.1f} img/s", flush=True)
    seed_rate = len(paths) / median(seed_times)
    project_rate = len(paths) / median(project_times)
    return {"model": name, "seed": seed_rate, "project": project_rate, "ratio": project_rate / seed_rate,
            "stages": stages}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--models", default="tiny,medium", help="comma-separated: tiny, medium")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--no-record", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = parser.parse_args()

    results = []
    with tempfile.TemporaryDirectory(prefix="bench-index-") as tmp_name:
        tmp = Path(tmp_name)
        library = tmp / "library"
        started = time.perf_counter()
        paths = make_photos(library, args.images)
        mb = sum(p.stat().st_size for p in paths) / 1e6
        print(f"{len(paths)} JPEGs 640x480 ({mb:.1f} MB) written in {time.perf_counter() - started:.1f}s", flush=True)
        for name in args.models.split(","):
            folder = TINY if name == "tiny" else build_medium_clip(tmp / "medium_clip")
            results.append(bench_model(name, folder, library, paths, args.rounds, tmp))

    for res in results:
        print(f"{res['model']:7s} seed {res['seed']:7.1f} img/s  project {res['project']:7.1f} img/s  "
              f"ratio {res['ratio']:.2f}x  stages {res['stages']}")
    if args.no_record:
        return
    plot = bar_plot(PLOTS / "index_vs_seed.png", f"Indexing {args.images} JPEGs 640x480 (2 CPU cores)",
                    [f"{r['model']}\n{w}" for r in results for w in ("seed", "project")],
                    [r[w] for r in results for w in ("seed", "project")], "images/s")
    rows = []
    for res in results:
        rows += [(f"{res['model']}: seed loop (one image at a time)", f"{res['seed']:.1f} images/s"),
                 (f"{res['model']}: project Indexer", f"{res['project']:.1f} images/s"),
                 (f"{res['model']}: ratio project : seed (target ≥ 3×)", f"**{res['ratio']:.2f}×**"),
                 (f"{res['model']}: Indexer stage seconds", ", ".join(f"{k} {v}" for k, v in res["stages"].items()))]
    command = "`.venv/bin/python bench/index_vs_seed.py " + " ".join(sys.argv[1:]) + "`"
    record("index_vs_seed", f"""### Indexing throughput vs the seed loop

{command.replace(" `", "`")} ({args.images} noisy 640x480 JPEGs, same model object for both paths,
model load excluded; `tiny` = tests/fixtures/tiny_clip, `medium` = random ChineseCLIP with a 224 px,
patch-16, 4x256 vision tower; median of {args.rounds} alternating round(s)):

{table(rows)}

![indexing throughput]({rel(plot)})
""")


if __name__ == "__main__":
    main()
