"""Query latency at scale: the embedded store (Qdrant Edge shard after finish(), which builds HNSW) vs the
seed's Python dict loop vs numpy brute force (exact), with recall@10 of the store against exact search.

    .venv/bin/python bench/search_scale.py [--sizes 10000,100000] [--data cliplike] [--queries 100]
        [--seed-queries 20] [--keep DIR --model-id ID] [--no-record]

Vectors are 512-d float32 unit vectors, the shape of Chinese-CLIP ViT-B/16 embeddings; each point
carries the indexer's kind of payload. `--data`: `random` (uniform on the sphere, random queries: the
worst case for an approximate index, nothing like real embeddings), `clustered` (1,000 tight clusters,
queries near one: easy) or `cliplike` (default: a 64-d latent mapped to 512-d plus noise and a shared
offset, queries from the same latent with a smaller offset, as text embeddings sit apart from image
ones; real CLIP embeddings have an intrinsic dimension of this order). Latency is
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


LATENT = 64


def cliplike_vectors(n: int, mix: np.ndarray, offset: float, rng: np.random.Generator) -> np.ndarray:
    """Unit vectors from a 64-d Gaussian latent through a fixed random map (`mix` rows 0..63), plus
    a little 512-d noise and `offset` times a shared direction (`mix` row 64)."""
    out = np.empty((n, DIM), dtype=np.float32)
    for start in range(0, n, 100_000):  # bounded temporaries at 1M
        k = min(n, start + 100_000) - start
        x = rng.standard_normal((k, LATENT), dtype=np.float32) @ mix[:LATENT]
        x += rng.standard_normal((k, DIM), dtype=np.float32) * (0.5 / np.sqrt(DIM)) + offset * mix[LATENT]
        out[start:start + k] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def make_mix(rng: np.random.Generator) -> np.ndarray:
    mix = rng.standard_normal((LATENT + 1, DIM), dtype=np.float32) / np.sqrt(LATENT)
    mix[LATENT] /= np.linalg.norm(mix[LATENT])
    return mix


def make_data(kind: str, n: int, rng: np.random.Generator, centers: np.ndarray) -> np.ndarray:
    if kind == "cliplike":
        return cliplike_vectors(n, centers, 1.0, rng)
    return unit_vectors(n, rng) if kind == "random" else clustered_vectors(n, centers, 0.75, rng)


def make_queries(kind: str, n: int, rng: np.random.Generator, centers: np.ndarray) -> np.ndarray:
    if kind == "cliplike":
        return cliplike_vectors(n, centers, 0.3, rng)
    return unit_vectors(n, rng) if kind == "random" else clustered_vectors(n, centers, 1.0, rng)


def timed(func: Any, queries: np.ndarray) -> tuple[list[float], list[Any]]:
    times, results = [], []
    for q in queries:
        started = time.perf_counter()
        results.append(func(q))
        times.append((time.perf_counter() - started) * 1000)
    return times, results


EF_SWEEP = (64, 128, 256, 512, 1024, 1536)


def build_store(n: int, data: np.ndarray, folder: Path, model_id: str,
                tuning: Any = None) -> tuple[Any, list[str], float, float]:
    from store.interface import Point, point_id
    from store.qdrant_edge import EdgeStore

    names = [f"photos/{i // 1000:04d}/img_{i:07d}.jpg" for i in range(n)]
    store = EdgeStore(folder, "images", tuning)
    store.ensure_collection(model_id, DIM, recreate=True)
    started = time.perf_counter()
    for start in range(0, n, UPSERT_BATCH):
        store.upsert([Point(point_id(names[i]), data[i], {
            "path": names[i], "content_hash": f"{i:032x}", "size": 100_000, "mtime": 1.7e9, "width": 640,
            "height": 480, "indexed_at": 1.7e9, "model_id": model_id})
            for i in range(start, min(n, start + UPSERT_BATCH))])
    upsert_s = time.perf_counter() - started
    started = time.perf_counter()
    store.finish()  # flush + optimize: builds HNSW (on the int8 copies) above the engine's threshold
    finish_s = time.perf_counter() - started
    print(f"  n={n}: upsert {upsert_s:.1f}s, finish (HNSW build) {finish_s:.1f}s", flush=True)
    return store, names, upsert_s, finish_s


def recall_of(store_hits: list[Any], exact_top: list[Any], row_of: dict[str, int]) -> float:
    return float(np.mean([len({row_of[h.id] for h in hits} & set(top.tolist())) / K
                          for hits, top in zip(store_hits, exact_top, strict=True)]))


def bench_size(n: int, queries: np.ndarray, seed_queries: int, folder: Path, rng: np.random.Generator,
               kind: str, centers: np.ndarray, model_id: str, tuning: Any, reuse: bool = False) -> dict[str, Any]:
    from dataclasses import replace

    from store.interface import point_id

    data = make_data(kind, n, rng, centers)
    if reuse and (folder / "images.meta.json").exists():  # the same data: the rng sequence is the same
        from store.qdrant_edge import EdgeStore

        store, upsert_s, finish_s = EdgeStore(folder, "images", tuning), float("nan"), float("nan")
        names = [f"photos/{i // 1000:04d}/img_{i:07d}.jpg" for i in range(n)]
    else:
        store, names, upsert_s, finish_s = build_store(n, data, folder, model_id, tuning)
    row_of = {point_id(name): i for i, name in enumerate(names)}
    default = store.tuning
    exact_ms, exact_top = timed(lambda q: exact_search(data, q, K), queries)
    sweep = {}
    for ef in EF_SWEEP:
        store.tuning = replace(default, hnsw_ef=ef)
        store.search(queries[0], K)  # warm-up (page in the index)
        ms, hits = timed(lambda q: store.search(q, K), queries)
        sweep[ef] = (median(ms), recall_of(hits, exact_top, row_of))
        print(f"  n={n}: hnsw_ef={ef}: p50 {sweep[ef][0]:.2f} ms, recall@10 {sweep[ef][1]:.3f}", flush=True)
    store.tuning = default
    store_ms, store_hits = timed(lambda q: store.search(q, K), queries)
    store.close()
    seed_dict = {names[i]: data[i] for i in range(n)}
    seed_ms, seed_top = timed(lambda q: seed_search(seed_dict, q, K), queries[:seed_queries])
    seed_agrees = all([name for name, _ in s] == [names[i] for i in e]
                      for s, e in zip(seed_top, exact_top, strict=False))
    res: dict[str, Any] = {
           "n": n, "upsert_s": upsert_s, "finish_s": finish_s, "recall": recall_of(store_hits, exact_top, row_of),
           "seed_agrees": seed_agrees, "store_p50": median(store_ms), "store_p99": percentile(store_ms, 0.99),
           "exact_p50": median(exact_ms), "seed_p50": median(seed_ms), "sweep": sweep, "ef": default.hnsw_ef}
    res["ratio_seed"] = res["seed_p50"] / res["store_p50"]
    res["ratio_exact"] = res["exact_p50"] / res["store_p50"]
    print(f"  n={n}: p50 store {res['store_p50']:.2f} ms, numpy exact {res['exact_p50']:.2f} ms, "
          f"seed {res['seed_p50']:.1f} ms; store {res['ratio_seed']:.0f}x faster than seed; "
          f"recall@10 {res['recall']:.3f}", flush=True)
    return res


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,100000", help="comma-separated collection sizes (e.g. add 1000000)")
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--seed-queries", type=int, default=20)
    parser.add_argument("--data", choices=("random", "clustered", "cliplike"), default="cliplike")
    parser.add_argument("--keep", type=Path, help="build the stores under this folder and keep them "
                                                   "(store-<n>/, for bench/startup.py --store)")
    parser.add_argument("--model-id", default="bench-512", help="model id recorded in the kept collections")
    parser.add_argument("--reuse", action="store_true",
                        help="with --keep: query the collections an earlier run kept (same --sizes, --data)")
    parser.add_argument("--m", type=int, default=32, help="HNSW graph degree (the store's default: 32)")
    parser.add_argument("--ef-construct", type=int, default=200, help="HNSW build beam (default: 200)")
    parser.add_argument("--no-record", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = parser.parse_args()
    from store.interface import IndexTuning

    tuning = IndexTuning(m=args.m, ef_construct=args.ef_construct)
    rng = np.random.default_rng(0)
    centers = make_mix(rng) if args.data == "cliplike" else unit_vectors(1000, rng)
    queries = make_queries(args.data, args.queries, rng, centers)
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-search-") as tmp:
        base = args.keep or Path(tmp)
        for n in (int(s) for s in args.sizes.split(",")):
            results.append(bench_size(n, queries, args.seed_queries, base / f"store-{n}", rng, args.data, centers,
                                      args.model_id, tuning, args.reuse))
    if not args.no_record:
        report(args, results)


def build_text(r: dict[str, Any]) -> str:
    if r["upsert_s"] != r["upsert_s"]:  # NaN: --reuse
        return "built by an earlier run (--reuse)"
    return f"{r['upsert_s']:.1f} s + {r['finish_s']:.1f} s"


def report(args: argparse.Namespace, results: list[dict[str, Any]]) -> None:
    groups = [f"{r['n']:,}" for r in results]
    graph = f"_m{args.m}_efc{args.ef_construct}"
    plot = grouped_plot(PLOTS / f"search_scale_{args.data}{graph}.png",
                        f"Query latency p50, top 10, 512-d {args.data} (2 CPU cores)", groups,
                        {"seed dict loop": [r["seed_p50"] for r in results],
                         "numpy exact": [r["exact_p50"] for r in results],
                         "embedded store (HNSW)": [r["store_p50"] for r in results]}, "ms per query (log)")
    rows = [(f"{r['n']:,}", f"{r['seed_p50']:.1f} ms | {r['exact_p50']:.2f} ms | {r['store_p50']:.2f} ms "
             f"(p99 {r['store_p99']:.2f}) | **{r['ratio_seed']:.0f}×** | {r['ratio_exact']:.1f}× | "
             f"**{r['recall']:.3f}** | {build_text(r)}") for r in results]
    head = ("vectors", "seed dict loop p50 | numpy exact p50 | store p50 | store vs seed | store vs numpy | "
                       "recall@10 (store vs exact) | build: upsert + finish (HNSW)")
    text = table(rows, head).replace("|---|---|", "|---|---|---|---|---|---|---|---|", 1)
    sweep_rows = [(f"{r['n']:,}", " | ".join(f"{r['sweep'][ef][1]:.3f} / {r['sweep'][ef][0]:.2f} ms"
                                             for ef in EF_SWEEP)) for r in results]
    sweep_head = ("vectors", " | ".join(f"hnsw_ef {ef}" for ef in EF_SWEEP))
    sweep = table(sweep_rows, sweep_head).replace("|---|---|", "|---|" + "---|" * len(EF_SWEEP), 1)
    command = "`.venv/bin/python bench/search_scale.py " + " ".join(sys.argv[1:]) + "`"
    agree = "yes" if all(r["seed_agrees"] for r in results) else "NO"
    what = {"random": "uniform random 512-d unit vectors and random unit queries (the worst case for HNSW)",
            "clustered": "512-d unit vectors around 1,000 random centres (cosine ~0.8 to the centre), "
                         "queries near a centre",
            "cliplike": "512-d unit vectors from a 64-d latent plus noise and a shared offset; queries from the "
                        "same latent with a smaller offset (a modality gap)"}[args.data]
    graph = f"_m{args.m}_efc{args.ef_construct}"
    title = f"Search latency at scale vs the seed dict loop ({args.data} vectors{graph.replace('_', ' ')})"
    record(f"search_scale_{args.data}{graph}", f"""### {title}

{command.replace(" `", "`")} ({what}; indexer-style payloads, top 10,
in-process, one client; {args.queries} queries, seed loop timed on {args.seed_queries} of them;
seed top-10 equal to numpy's: {agree}). Store settings: HNSW m {args.m}, ef_construct {args.ef_construct},
int8 scalar quantization with rescoring, oversampling 2, search hnsw_ef {results[0]['ef']}.

{text}

Recall@10 / p50 latency by search-time `hnsw_ef` (`QDRANT_HNSW_EF`), same collections and queries:

{sweep}

![search latency]({rel(plot)})
""")


if __name__ == "__main__":
    main()
