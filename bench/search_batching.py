"""Search throughput at 32 concurrent clients with the CLIP runner's adaptive batching on vs off.

    .venv/bin/python bench/search_batching.py [--clients 32] [--seconds 30] [--points 5000] [--no-record]

The real `bentoml serve` twice, side by side in one run: adaptive batching on (the default, up to
CLIP_MAX_BATCH_SIZE=64 queries a call) and off (CLIP_ADAPTIVE_BATCHING=false: every query is its own
encode_texts call). The CLIP model is a
random 512-d Chinese-CLIP with a 6 x 384 text tower (bench/_models.py; the real one is 12 x 768), so
encoding a query costs a few milliseconds on the CPU, as it does on a GPU with the real model under
load. Each client posts `/text2image_search` (top 10, no images) with a different query each time, on
a collection of `--points` 512-d vectors.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "bench")]

from _models import build_clip  # noqa: E402
from _report import PLOTS, bar_plot, median, percentile, record, rel, table  # noqa: E402
from serving import Server, service_env  # noqa: E402
from startup import CLIP_FOLDER, store_for  # noqa: E402

WORDS = ["红色", "蓝色", "绿色", "黄色", "圆形", "方形", "三角形", "一只猫", "海边", "日落", "city", "mountain",
         "a dog", "snow", "flowers", "夜景"]


def query(i: int) -> str:
    return f"{WORDS[i % len(WORDS)]} {WORDS[(i * 7 + 3) % len(WORDS)]} {i}"


def hammer(url: str, clients: int, seconds: float) -> dict[str, Any]:
    deadline = time.monotonic() + seconds

    def worker(n: int) -> tuple[list[float], int]:
        times, bad = [], 0
        with httpx.Client(timeout=120) as http:
            i = n
            while time.monotonic() < deadline:
                started = time.perf_counter()
                r = http.post(f"{url}/text2image_search",
                              json={"text_query": query(i), "top_k": 10, "include_image": False})
                if r.status_code == 200:
                    times.append((time.perf_counter() - started) * 1000)
                else:
                    bad += 1
                i += clients
        return times, bad

    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        outs = list(pool.map(worker, range(clients)))
    elapsed = time.perf_counter() - started
    times = [t for ts, _ in outs for t in ts]
    return {"ok": len(times), "bad": sum(b for _, b in outs), "rate": len(times) / elapsed,
            "p50": median(times), "p99": percentile(times, 0.99)}


def run(name: str, batching: bool, qdrant: Path, clip: Path, tmp: Path, clients: int, seconds: float) -> dict[str, Any]:
    env = service_env(tmp / name, clip, tmp / "library")
    env.update(QDRANT_PATH=str(qdrant), CLIP_ADAPTIVE_BATCHING=str(batching).lower(), MAX_CONCURRENCY="256")
    server = Server(env, tmp / f"{name}.log")
    try:
        server.wait_ready(timeout=600)
        hammer(server.url, 4, 3)  # warm-up
        res = hammer(server.url, clients, seconds)
    finally:
        server.stop()
    print(f"  {name}: {res['rate']:.1f} searches/s, p50 {res['p50']:.0f} ms, p99 {res['p99']:.0f} ms, "
          f"{res['ok']} ok, {res['bad']} failed", flush=True)
    return {"name": name, **res}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--points", type=int, default=5000)
    parser.add_argument("--clip", type=Path, default=CLIP_FOLDER)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    clip = build_clip(args.clip, 512, text_layers=6, text_width=384)
    from runners.clip import model_id_of

    with tempfile.TemporaryDirectory(prefix="bench-batching-") as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "library").mkdir()
        qdrant = store_for(args.points, None, tmp, model_id_of(str(clip)))
        off = run("batching off (CLIP_ADAPTIVE_BATCHING=false)", False, qdrant, clip, tmp, args.clients, args.seconds)
        on = run("batching on (the default)", True, qdrant, clip, tmp, args.clients, args.seconds)
    ratio = on["rate"] / off["rate"]
    print(f"  ratio on : off = {ratio:.2f}x", flush=True)
    if not args.no_record:
        report(args, [off, on], ratio)


def report(args: argparse.Namespace, results: list[dict[str, Any]], ratio: float) -> None:
    plot = bar_plot(PLOTS / "search_batching.png", f"Searches/s at {args.clients} concurrent clients",
                    [r["name"].split(" (")[0] for r in results], [r["rate"] for r in results], "searches/s")
    rows = [(r["name"], f"{r['rate']:.1f} | {r['p50']:.0f} ms | {r['p99']:.0f} ms | {r['ok']:,} | {r['bad']}")
            for r in results]
    text = table(rows, ("CLIP runner", "searches/s | p50 | p99 | ok | failed"))
    text = text.replace("|---|---|", "|---|---|---|---|---|---|", 1)
    command = "`.venv/bin/python bench/search_batching.py " + " ".join(sys.argv[1:]) + "`"
    title = f"Search throughput at {args.clients} concurrent clients, adaptive batching on vs off"
    record("search_batching", f"""### {title}

{command.replace(" `", "`")} (the real `bentoml serve`, {args.seconds:.0f} s per setting, a different
query each request, top 10 without images, {args.points:,} 512-d points; CLIP = random 512-d Chinese-CLIP
with a 6 x 384 text tower):

{text}

Ratio on : off = **{ratio:.2f}×** (target ≥ 2×).

![search batching]({rel(plot)})
""")


if __name__ == "__main__":
    main()
