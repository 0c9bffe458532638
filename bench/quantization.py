"""Quantization for a cluster-size collection: recall@10 and p50 query latency of the embedded store (Qdrant Edge
shard, HNSW m 32 / ef_construct 200, hnsw_ef 512) with QDRANT_QUANTIZATION none / int8 / binary (binary with
QDRANT_ON_DISK: the float vectors memory-mapped), and the memory each needs per million 512-d points.

    .venv/bin/python bench/quantization.py [--size 30000] [--queries 100] [--no-record]

The issue asks for 1M points; on this shared 2-core machine one 1M HNSW build takes far longer than the ten
minutes this bench may use, so it measures at --size (default 30,000) and states memory per million by
arithmetic from the shapes (float32 4 B a dimension, int8 1 B, binary 1 bit; HNSW level-0 links 2·m·4 B),
checked against the shard's size on disk at --size. Data: bench/search_scale.py's `cliplike` vectors.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from _machine import cpu_name, instruction_sets  # noqa: E402
from _report import median, record  # noqa: E402
from search_scale import DIM, K, build_store, make_data, make_mix, make_queries  # noqa: E402

from store.interface import IndexTuning, point_id  # noqa: E402

CONFIGS = {  # name -> tuning (everything else as the service runs it); the slowest build last
    "int8": IndexTuning(),
    "binary + on-disk vectors": IndexTuning(quantization_type="binary", on_disk=True),
    "none": IndexTuning(quantization=False),
}


def ram_per_million(tuning: IndexTuning) -> tuple[float, float]:
    """(RAM, disk) in GB per million points: vectors, quantized copies, HNSW level-0 links."""
    floats = 4 * DIM
    codes = 0 if not tuning.quantization else (DIM if tuning.quantization_type == "int8" else DIM / 8)
    graph = 2 * tuning.m * 4 * 1.1  # level-0 links, ~10% for the upper levels
    ram = codes + graph + (0 if tuning.on_disk else floats)
    disk = floats + codes + graph
    return ram * 1e6 / 1e9, disk * 1e6 / 1e9


def folder_bytes(folder: Path) -> int:
    return int(subprocess.run(["du", "-sb", str(folder)], capture_output=True, text=True).stdout.split()[0])


def bench(name: str, tuning: IndexTuning, data: np.ndarray, queries: np.ndarray, exact: np.ndarray,
          folder: Path) -> dict[str, Any]:
    store, names, upsert_s, finish_s = build_store(len(data), data, folder, "bench/clip512", tuning)
    row_of = {point_id(n): i for i, n in enumerate(names)}
    store.search(queries[0], K)  # warm
    times, recalls = [], []
    for query, top in zip(queries, exact, strict=True):
        started = time.perf_counter()
        hits = store.search(query, K)
        times.append((time.perf_counter() - started) * 1000)
        recalls.append(len({row_of[h.id] for h in hits} & set(top.tolist())) / K)
    store.close()
    ram, disk = ram_per_million(tuning)
    result = {"name": name, "recall": float(np.mean(recalls)), "p50": median(times), "build_s": upsert_s + finish_s,
              "ram_gb": ram, "disk_gb": disk, "disk_measured_mb": folder_bytes(folder) / 1e6}
    print(result, flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=30_000)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--no-record", action="store_true")
    parser.add_argument("--note", default="",
                        help="a remark printed with the figures (never overrides the quiet-machine check)")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    mix = make_mix(rng)
    data = make_data("cliplike", args.size, rng, mix)
    queries = make_queries("cliplike", args.queries, rng, mix)
    exact = np.argsort(-(queries @ data.T), axis=1)[:, :K]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, tuning) in enumerate(CONFIGS.items()):
            results.append(bench(name, replace(tuning), data, queries, exact, Path(tmp) / f"q{i}"))
    body = "\n".join([
        "## Quantization for a large collection (issue 21)",
        "",
        f"`.venv/bin/python bench/quantization.py --size {args.size} --queries {args.queries}` (embedded store, "
        f"512-d `cliplike` vectors, top {K}, hnsw_ef 512, one client, in-process; {cpu_name()}, {os.cpu_count()} "
        f"cores, instruction sets {instruction_sets()}; {args.note}; measured at the size shown, not 1M: one 1M "
        "build does not fit this bench's ten minutes here. "
        "RAM and disk per million points are arithmetic from the shapes; the shard's folder at this size is "
        "shown as measured: it adds payloads and the write-ahead log's fixed preallocation).",
        "",
        "| QDRANT_QUANTIZATION | recall@10 | p50 query | build | RAM / 1M points | disk / 1M points "
        f"| shard at {args.size:,} |",
        "|---|---|---|---|---|---|---|",
        *[f"| {r['name']} | {r['recall']:.3f} | {r['p50']:.2f} ms | {r['build_s']:.0f} s | {r['ram_gb']:.2f} GB | "
          f"{r['disk_gb']:.2f} GB | {r['disk_measured_mb']:.0f} MB |" for r in results],
    ])
    print(body)
    if not args.no_record:
        record("quantization", body)


if __name__ == "__main__":
    main()
