"""Query latency at scale: the embedded store (Qdrant Edge shard after finish(), which builds HNSW) vs the
seed's Python dict loop vs numpy brute force (exact), with recall@10 of the store against exact search.

    .venv/bin/python bench/search_scale.py [--sizes 10000,100000] [--queries 100] [--seed-queries 20] [--no-record]

Vectors are random unit vectors (512-d float32), the shape of Chinese-CLIP ViT-B/16 embeddings; each
point carries the indexer's kind of payload. Queries are fresh random unit vectors (like a text
embedding: near no particular image), which is the hard case for an approximate index. Latency is
per query, in-process (no HTTP), single client, top 10 with payloads. The seed loop is timed on
`--seed-queries` queries only (it is slow); the others on all `--queries`.
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
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from _report import PLOTS, grouped_plot, median, percentile, record, rel, table  # noqa: E402
from seed_baselines import exact_search, seed_search  # noqa: E402

DIM = 512
K = 10
UPSERT_BATCH = 1024


def unit_vectors(n: int, rng: np.random.Generator) -> np.ndarray:
    x = rng.standard_normal((n, DIM), dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def clustered_vectors(n: int, centers: np.ndarray, spread: float, rng: np.random.Generator) -> np.ndarray:
    """Unit vectors around random `centers` (cosine to the centre about 1/sqrt(1+spread^2)): the
    structure real image embeddings have (many photos of similar things), unlike uniform noise."""
    noise = rng.standard_normal((n, DIM), dtype=np.float32) * (spread / np.sqrt(DIM))
    x = centers[rng.integers(0, len(centers), n)] + noise
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def make_data(kind: str, n: int, rng: np.random.Generator, centers: np.ndarray) -> np.ndarray:
    return unit_vectors(n, rng) if kind == "random" else clustered_vectors(n, centers, 0.75, rng)


def timed(func: Any, queries: np.ndarray) -> tuple[list[float], list[Any]]:
    times, results = [], []
    for q in queries:
        started = time.perf_counter()
        results.append(func(q))
        times.append((time.perf_counter() - started) * 1000)
    return times, results


def bench_size(n: int, queries: np.ndarray, seed_queries: int, tmp: Path, rng: np.random.Generator,
               kind: str, centers: np.ndarray) -> dict[str, Any]:
    from store.base import Point, point_id
    from store.edge import EdgeStore

    data = make_data(kind, n, rng, centers)
    names = [f"photos/{i // 1000:03d}/img_{i:07d}.jpg" for i in range(n)]
    ids = [point_id(name) for name in names]
    row_of = {pid: i for i, pid in enumerate(ids)}

    store = EdgeStore(tmp / f"store-{n}", "images")
    store.ensure_collection("bench-random-512", DIM)
    started = time.perf_counter()
    for start in range(0, n, UPSERT_BATCH):
        store.upsert([Point(ids[i], data[i], {"path": names[i], "content_hash": f"{i:032x}", "size": 100_000,
                                              "mtime": 1.7e9, "width": 640, "height": 480,
                                              "indexed_at": 1.7e9, "model_id": "bench-random-512"})
                      for i in range(start, min(n, start + UPSERT_BATCH))])
    upsert_s = time.perf_counter() - started
    started = time.perf_counter()
    store.finish()  # flush + optimize: builds HNSW above the engine's indexing threshold
    finish_s = time.perf_counter() - started
    print(f"  n={n}: upsert {upsert_s:.1f}s, finish (HNSW build) {finish_s:.1f}s", flush=True)

    seed_dict = {names[i]: data[i] for i in range(n)}
    store.search(queries[0], K)  # warm-up (page in the index)
    store_ms, store_hits = timed(lambda q: store.search(q, K), queries)
    exact_ms, exact_top = timed(lambda q: exact_search(data, q, K), queries)
    seed_ms, seed_top = timed(lambda q: seed_search(seed_dict, q, K), queries[:seed_queries])
    store.close()

    recall = float(np.mean([len({row_of[h.id] for h in hits} & set(top.tolist())) / K
                            for hits, top in zip(store_hits, exact_top, strict=True)]))
    seed_agrees = all([name for name, _ in s] == [names[i] for i in e]
                      for s, e in zip(seed_top, exact_top, strict=False))
    res = {"n": n, "upsert_s": upsert_s, "finish_s": finish_s, "recall": recall, "seed_agrees": seed_agrees,
           "store_p50": median(store_ms), "store_p99": percentile(store_ms, 0.99),
           "exact_p50": median(exact_ms), "seed_p50": median(seed_ms)}
    res["ratio_seed"] = res["seed_p50"] / res["store_p50"]
    res["ratio_exact"] = res["exact_p50"] / res["store_p50"]
    print(f"  n={n}: p50 store {res['store_p50']:.2f} ms, numpy exact {res['exact_p50']:.2f} ms, "
          f"seed {res['seed_p50']:.1f} ms; store {res['ratio_seed']:.0f}x faster than seed; "
          f"recall@10 {recall:.3f}", flush=True)
    return res


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,100000", help="comma-separated collection sizes (e.g. add 1000000)")
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--seed-queries", type=int, default=20)
    parser.add_argument("--data", choices=("random", "clustered"), default="random",
                        help="uniform random unit vectors (hardest for HNSW), or 1,000 clusters with queries "
                             "near a cluster (closer to real CLIP embeddings)")
    parser.add_argument("--no-record", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    centers = unit_vectors(1000, rng)
    queries = (unit_vectors(args.queries, rng) if args.data == "random"
               else clustered_vectors(args.queries, centers, 1.0, rng))
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-search-") as tmp:
        for n in (int(s) for s in args.sizes.split(",")):
            results.append(bench_size(n, queries, args.seed_queries, Path(tmp), rng, args.data, centers))
    if args.no_record:
        return
    groups = [f"{r['n']:,}" for r in results]
    plot = grouped_plot(PLOTS / f"search_scale_{args.data}.png",
                        f"Query latency p50, top 10, 512-d {args.data} (2 CPU cores)", groups,
                        {"seed dict loop": [r["seed_p50"] for r in results],
                         "numpy exact": [r["exact_p50"] for r in results],
                         "embedded store (HNSW)": [r["store_p50"] for r in results]}, "ms per query (log)")
    rows = [(f"{r['n']:,}", f"{r['seed_p50']:.1f} ms | {r['exact_p50']:.2f} ms | {r['store_p50']:.2f} ms "
             f"(p99 {r['store_p99']:.2f}) | **{r['ratio_seed']:.0f}×** | {r['ratio_exact']:.1f}× | {r['recall']:.3f} | "
             f"{r['upsert_s']:.1f} s + {r['finish_s']:.1f} s") for r in results]
    head = ("vectors", "seed dict loop p50 | numpy exact p50 | store p50 | store vs seed | store vs numpy | "
                       "recall@10 (store vs exact) | build: upsert + finish (HNSW)")
    text = table(rows, head).replace("|---|---|", "|---|---|---|---|---|---|---|---|", 1)
    command = "`.venv/bin/python bench/search_scale.py " + " ".join(sys.argv[1:]) + "`"
    agree = "yes" if all(r["seed_agrees"] for r in results) else "NO"
    what = ("uniform random 512-d unit vectors and random unit queries (the worst case for HNSW)"
            if args.data == "random" else
            "512-d unit vectors around 1,000 random centres (cosine ~0.8 to the centre), queries near a centre")
    record(f"search_scale_{args.data}", f"""### Search latency at scale vs the seed dict loop ({args.data} vectors)

{command.replace(" `", "`")} ({what}, indexer-style payloads, top 10,
in-process, one client; {args.queries} queries, seed loop timed on {args.seed_queries} of them;
seed top-10 equal to numpy's: {agree}):

{text}

![search latency]({rel(plot)})
""")


if __name__ == "__main__":
    main()
