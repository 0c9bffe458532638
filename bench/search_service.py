"""Index throughput, query latency and concurrency of the search service, with a local tiny model.

    .venv/bin/python bench/search_service.py [--images 600] [--model tests/fixtures/tiny_clip]

Builds a synthetic library, runs `python -m indexer` (images/s from its own stage timings), starts
`bentoml serve`, measures sequential query latency (p50/p99) and 16 concurrent clients for 30 s.
Prints the figures; they are CPU figures for a tiny model, meaningful as ratios and for regressions.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from serving import Server, service_env  # noqa: E402
from shapes import CLASSES, caption, make_library  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run_indexer(env: dict[str, str]) -> dict:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "indexer", "--no-progress", "--json"], cwd=ROOT, env=env,
                          capture_output=True, text=True, check=True)
    summary = json.loads(done.stdout)
    summary["wall_s"] = time.perf_counter() - started
    return summary


def latencies(url: str, n: int) -> list[float]:
    queries = [caption(s, c) for s, c in CLASSES]
    times = []
    with httpx.Client(timeout=60) as http:
        for i in range(n):
            started = time.perf_counter()
            r = http.post(f"{url}/text2image_search", json={"text_query": queries[i % len(queries)],
                                                            "top_k": 5, "include_image": False})
            r.raise_for_status()
            times.append((time.perf_counter() - started) * 1000)
    return times


def concurrent_load(url: str, clients: int, seconds: float) -> tuple[int, int]:
    deadline = time.monotonic() + seconds

    def worker(_: int) -> tuple[int, int]:
        ok = failed = 0
        with httpx.Client(timeout=60) as http:
            while time.monotonic() < deadline:
                try:
                    r = http.post(f"{url}/text2image_search", json={"text_query": "红色的圆形", "top_k": 3,
                                                                    "include_image": False})
                    ok, failed = (ok + 1, failed) if r.status_code == 200 else (ok, failed + 1)
                except httpx.HTTPError:
                    failed += 1
        return ok, failed

    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(worker, range(clients)))
    return sum(r[0] for r in results), sum(r[1] for r in results)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=600)
    parser.add_argument("--model", type=Path, default=ROOT / "tests/fixtures/tiny_clip")
    parser.add_argument("--seconds", type=float, default=30)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        make_library(tmp / "lib", n_per_class=max(1, args.images // len(CLASSES)), seed=5)
        env = service_env(tmp, args.model, tmp / "lib")
        first = run_indexer(env)
        embed_s = first["seconds"].get("decode_wait", 0) + first["seconds"].get("embed", 0) \
            + first["seconds"].get("write", 0)
        print(f"indexed {first['added']} images: {first['added'] / embed_s:.1f} images/s in the pipeline "
              f"({first['added'] / first['wall_s']:.1f}/s including process start); stages {first['seconds']}")
        again = run_indexer(env)
        print(f"re-run, nothing changed: {again['unchanged']} unchanged in {again['wall_s']:.2f} s wall")
        server = Server(env, tmp / "server.log")
        try:
            server.wait_ready()
            latencies(server.url, 20)  # warm up
            times = latencies(server.url, 300)
            print(f"query latency over HTTP, sequential: p50 {statistics.median(times):.1f} ms, "
                  f"p99 {percentile(times, 0.99):.1f} ms")
            ok, failed = concurrent_load(server.url, 16, args.seconds)
            print(f"16 concurrent clients for {args.seconds:.0f} s: {ok} ok, {failed} failed "
                  f"({ok / args.seconds:.1f} req/s)")
        finally:
            server.stop()


if __name__ == "__main__":
    main()
