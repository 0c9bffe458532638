"""Hybrid search cost at scale: one store query that fuses the CLIP prefetch and the descriptions' BM25
prefetch (RRF) vs the vector-only query and the text-only query, on the same embedded store (issue 14).

    .venv/bin/python bench/hybrid_search.py [--points 100000] [--queries 200] [--no-record]

Every point gets a 512-d CLIP-like vector (bench/search_scale.py's `cliplike` data) and a description,
visible text and tags drawn from a mixed Chinese/English vocabulary with a Zipf-like word frequency, as
`python -m indexer --describe` writes them (store.set_descriptions). Queries are 1-3 words of the same
vocabulary with a CLIP-like query vector. Latency is per query, in-process (no HTTP, no CLIP encode),
single client, top 10 with payloads, after finish() (HNSW built). Target: hybrid p50 <= 2x vector-only.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from _report import median, percentile, record, table  # noqa: E402
from search_scale import DIM, UPSERT_BATCH, K, cliplike_vectors, make_mix  # noqa: E402

MODEL_ID = "bench/cliplike-512"
DESCRIBED_BY = "bench/describer#0000"
WORDS = ("红色 蓝色 绿色 黄色 白色 黑色 小狗 小猫 日落 海滩 山 雪 城市 街道 汽车 自行车 孩子 朋友 生日 蛋糕 "
         "花 树 公园 餐厅 咖啡 书 电脑 手机 发票 收据 车牌 招牌 商店 火车 飞机 机场 桥 河 湖 夜景 "
         "dog cat sunset beach mountain snow city street car bike child friends birthday cake flower tree "
         "park restaurant coffee book laptop phone receipt invoice sign shop train plane airport bridge river "
         "lake night").split()
SIGNS = ("发票", "出口", "SALE", "TAXI", "OPEN", "收银台", "停车场", "EXIT")


def description(rng: random.Random) -> dict[str, Any]:
    weights = [1 / (rank + 1) for rank in range(len(WORDS))]
    words = rng.choices(WORDS, weights, k=rng.randint(6, 14))
    return {"description": " ".join(words[:-2]), "visible_text": rng.choice(SIGNS) if rng.random() < 0.2 else "",
            "tags": words[-2:], "described_by": DESCRIBED_BY}


def build(folder: Path, n: int, vectors: np.ndarray, rng: random.Random) -> tuple[Any, dict[str, float]]:
    from store.interface import Point, point_id
    from store.qdrant_edge import EdgeStore

    store = EdgeStore(folder, "images")
    store.ensure_collection(MODEL_ID, DIM, recreate=True)
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    for start in range(0, n, UPSERT_BATCH):
        rows = range(start, min(n, start + UPSERT_BATCH))
        store.upsert([Point(point_id(f"p/{i:07d}.jpg"), vectors[i], {
            "path": f"p/{i:07d}.jpg", "content_hash": f"{i:032x}", "size": 100_000, "mtime": 1.7e9,
            "width": 640, "height": 480, "indexed_at": 1.7e9, "model_id": MODEL_ID}) for i in rows])
    seconds["upsert"] = time.perf_counter() - started
    started = time.perf_counter()
    for start in range(0, n, UPSERT_BATCH):
        store.set_descriptions({point_id(f"p/{i:07d}.jpg"): description(rng)
                                for i in range(start, min(n, start + UPSERT_BATCH))})
    seconds["set_descriptions"] = time.perf_counter() - started
    started = time.perf_counter()
    store.finish()
    seconds["finish"] = time.perf_counter() - started
    return store, seconds


def timed(func: Any, queries: list[tuple[np.ndarray, str]]) -> list[float]:
    times = []
    for vector, text in queries:
        started = time.perf_counter()
        func(vector, text)
        times.append((time.perf_counter() - started) * 1000)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--points", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    rng, nrng = random.Random(7), np.random.default_rng(7)
    mix = make_mix(nrng)
    vectors = cliplike_vectors(args.points, mix, 1.0, nrng)
    query_vectors = cliplike_vectors(args.queries, mix, 0.3, nrng)
    queries = [(query_vectors[i], " ".join(rng.sample(WORDS + list(SIGNS), rng.randint(1, 3))))
               for i in range(args.queries)]
    with tempfile.TemporaryDirectory() as tmp:
        store, seconds = build(Path(tmp), args.points, vectors, rng)
        print(f"built {args.points} points: " + ", ".join(f"{k} {v:.1f} s" for k, v in seconds.items()), flush=True)
        modes = {
            "vector": lambda v, t: store.search(v, K),
            "hybrid": lambda v, t: store.search(v, K, text=t),
            "text": lambda v, t: store.search(None, K, text=t),
        }
        for func in modes.values():  # warm-up: page cache, index segments
            timed(func, queries[:20])
        runs = {mode: timed(func, queries) for mode, func in modes.items()}
        found = sum(1 for _, t in queries if store.search(None, K, text=t))
        store.close()
    report(args, seconds, runs, found)


def report(args: argparse.Namespace, seconds: dict[str, float], runs: dict[str, list[float]], found: int) -> None:
    vector_p50 = median(runs["vector"])
    rows = [(f"{mode} p50 / p99", f"{median(t):.2f} / {percentile(t, 0.99):.2f} ms"
             + (f" ({median(t) / vector_p50:.2f}x vector)" if mode != "vector" else "")) for mode, t in runs.items()]
    rows += [("text queries with a match", f"{found} of {args.queries}"),
             ("upsert / set_descriptions / finish", " / ".join(f"{seconds[k]:.1f} s" for k in seconds))]
    ratio = median(runs["hybrid"]) / vector_p50
    body = (f"### Hybrid search at {args.points:,} points (issue 14)\n\n"
            f"`.venv/bin/python bench/hybrid_search.py --points {args.points} --queries {args.queries}` "
            f"(embedded store, in-process, top {K} with payloads, single client, CPU)\n\n"
            + table(rows) + f"\n\nTarget hybrid p50 <= 2x vector-only: **{'met' if ratio <= 2 else 'not met'}** "
            f"({ratio:.2f}x).")
    print(body)
    if not args.no_record:
        record("hybrid_search", body)


if __name__ == "__main__":
    main()
