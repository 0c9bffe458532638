"""Quantization for a cluster-size collection: recall@10 and p50 query latency of the embedded store (Qdrant Edge
shard, HNSW m 32 / ef_construct 200, hnsw_ef 512) with QDRANT_QUANTIZATION none / int8 / binary (binary with
QDRANT_ON_DISK: the float vectors memory-mapped), and the memory each needs per million 512-d points.

    .venv/bin/python bench/quantization.py [--size 100000] [--queries 100] [--configs int8,binary,none] [--no-record]
    .venv/bin/python bench/quantization.py --size 1000000 --configs int8      # the default at a million points

Each size records its own block (quantization-<size>). Binary quantization is also searched at growing
oversampling (the candidates rescored with the float vectors, as a multiple of top_k: QDRANT_OVERSAMPLING) until
recall@10 reaches TARGET_RECALL, on the same built store, with the latency each costs. Memory per million points
is arithmetic from the shapes (float32 4 B a dimension, int8 1 B, binary 1 bit; HNSW level-0 links 2·m·4 B),
checked against the shard's size on disk. Data: bench/search_scale.py's `cliplike` vectors. Like every bench it
refuses to record on a busy machine (bench/_quiet.py).
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
    "binary": IndexTuning(quantization_type="binary", on_disk=True),  # with the float vectors on disk
    "none": IndexTuning(quantization=False),
}
LABELS = {"binary": "binary + on-disk vectors"}
TARGET_RECALL = 0.95
OVERSAMPLINGS = (4.0, 8.0, 16.0, 32.0, 64.0)  # from Qdrant's guidance up; BINARY_OVERSAMPLING is the one measured


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


def measure(store: Any, queries: np.ndarray, exact: np.ndarray, row_of: dict[str, int]) -> tuple[float, float]:
    """(recall@K, p50 ms) of `queries` against the exact top K."""
    store.search(queries[0], K)  # warm
    times, recalls = [], []
    for query, top in zip(queries, exact, strict=True):
        started = time.perf_counter()
        hits = store.search(query, K)
        times.append((time.perf_counter() - started) * 1000)
        recalls.append(len({row_of[h.id] for h in hits} & set(top.tolist())) / K)
    return float(np.mean(recalls)), median(times)


def bench(name: str, tuning: IndexTuning, data: np.ndarray, queries: np.ndarray, exact: np.ndarray,
          folder: Path) -> dict[str, Any]:
    store, names, upsert_s, finish_s = build_store(len(data), data, folder, "bench/clip512", tuning)
    row_of = {point_id(n): i for i, n in enumerate(names)}
    recall, p50 = measure(store, queries, exact, row_of)
    sweep = []
    if tuning.quantization_type == "binary" and tuning.quantization:
        for factor in OVERSAMPLINGS:  # a search-time parameter: the same graph, more candidates rescored
            store.tuning = replace(tuning, oversampling=factor, oversampling_set=True)
            sweep.append((factor, *measure(store, queries, exact, row_of)))
            print(f"  binary oversampling {factor:g}: recall {sweep[-1][1]:.3f}, p50 {sweep[-1][2]:.2f} ms", flush=True)
            if sweep[-1][1] >= TARGET_RECALL:
                break
        store.tuning = tuning
    store.close()
    ram, disk = ram_per_million(tuning)
    result = {"name": LABELS.get(name, name), "recall": recall, "p50": p50, "build_s": upsert_s + finish_s,
              "ram_gb": ram, "disk_gb": disk, "disk_measured_mb": folder_bytes(folder) / 1e6, "sweep": sweep}
    print({k: v for k, v in result.items() if k != "sweep"}, flush=True)
    return result


def sweep_lines(results: list[dict[str, Any]]) -> list[str]:
    rows = [(factor, recall, p50) for r in results for factor, recall, p50 in r["sweep"]]
    if not rows:
        return []
    reached = [factor for factor, recall, _ in rows if recall >= TARGET_RECALL]
    verdict = (f"recall@{K} reaches {TARGET_RECALL} at oversampling {reached[0]:g} (QDRANT_OVERSAMPLING={reached[0]:g})"
               if reached else f"recall@{K} stays below {TARGET_RECALL} up to oversampling {rows[-1][0]:g}")
    return ["", f"Binary quantization by oversampling (the same graph; candidates rescored = oversampling x top {K}): "
            f"{verdict}.", "", "| oversampling | recall@10 | p50 query |", "|---|---|---|",
            *[f"| {factor:g} | {recall:.3f} | {p50:.2f} ms |" for factor, recall, p50 in rows]]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=100_000)
    parser.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated: int8, binary, none")
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
        for i, name in enumerate(args.configs.split(",")):
            results.append(bench(name, replace(CONFIGS[name]), data, queries, exact, Path(tmp) / f"q{i}"))
    body = "\n".join([
        f"### Quantization at {args.size:,} points",
        "",
        f"`.venv/bin/python bench/quantization.py --size {args.size} --queries {args.queries} --configs "
        f"{args.configs}` (embedded store, 512-d `cliplike` vectors, top {K}, hnsw_ef 512, one client, in-process; "
        f"{cpu_name()}, {os.cpu_count()} cores, instruction sets {instruction_sets()}"
        f"{'; ' + args.note if args.note else ''}). "
        "RAM and disk per million points are arithmetic from the shapes; the shard's folder at this size is "
        "shown as measured: it adds payloads and the write-ahead log's fixed preallocation.",
        "",
        "| QDRANT_QUANTIZATION | recall@10 | p50 query | build | RAM / 1M points | disk / 1M points "
        f"| shard at {args.size:,} |",
        "|---|---|---|---|---|---|---|",
        *[f"| {r['name']} | {r['recall']:.3f} | {r['p50']:.2f} ms | {r['build_s']:.0f} s | {r['ram_gb']:.2f} GB | "
          f"{r['disk_gb']:.2f} GB | {r['disk_measured_mb']:.0f} MB |" for r in results],
        *sweep_lines(results),
    ])
    print(body)
    if not args.no_record:
        record(f"quantization-{args.size}", body)


if __name__ == "__main__":
    main()
