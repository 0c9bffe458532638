"""Mixed search + VQA load against a running service (loopback only), bounded in time.

    .venv/bin/python bench/load.py --url http://127.0.0.1:3000 [--clients 32] [--seconds 60] [--api-key K]
    .venv/bin/python bench/load.py --serve [--clients 32] [--seconds 60]   # starts a tiny-model service

Prints requests, status counts, p50/p99 latency per kind, and exits 1 if any 5xx other than a
deliberate 503 (VQA at capacity) came back, or any request failed at the connection.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import io
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from urllib.parse import urlparse

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from serving import Server, service_env  # noqa: E402
from shapes import CLASSES, caption, draw_shape, make_library  # noqa: E402

LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def image(i: int) -> bytes:
    shape, color = CLASSES[i % len(CLASSES)]
    buf = io.BytesIO()
    draw_shape(shape, color, size=64, seed=20_000 + i).save(buf, format="PNG")
    return buf.getvalue()


def one(http: httpx.Client, url: str, i: int) -> tuple[str, int, float]:
    started = time.perf_counter()
    if i % 3 == 2:
        kind = "vqa"
        r = http.post(f"{url}/vqa", data={"question": "What color is the shape?"},
                      files={"image": ("x.png", image(i), "image/png")})
    else:
        kind = "search"
        shape, color = CLASSES[i % len(CLASSES)]
        r = http.post(f"{url}/text2image_search", json={"text_query": caption(shape, color), "top_k": 5,
                                                        "include_image": i % 2 == 0})
    return kind, r.status_code, (time.perf_counter() - started) * 1000


def load(url: str, clients: int, seconds: float, api_key: str | None) -> dict:
    if urlparse(url).hostname not in LOOPBACK:
        raise SystemExit("load tests target this machine only (loopback)")
    deadline = time.monotonic() + seconds
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}

    def worker(n: int) -> list[tuple[str, int, float]]:
        out = []
        with httpx.Client(timeout=120, headers=headers) as http:
            i = n
            while time.monotonic() < deadline:
                try:
                    out.append(one(http, url, i))
                except httpx.HTTPError as exc:
                    out.append(("error", 0, 0.0))
                    print(f"connection error: {exc!r}", file=sys.stderr)
                i += clients
        return out

    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        results = [r for rs in pool.map(worker, range(clients)) for r in rs]
    return summarise(results, seconds)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1) if ordered else 0.0


def summarise(results: list[tuple[str, int, float]], seconds: float) -> dict:
    report: dict = {"requests": len(results), "per_second": round(len(results) / seconds, 1),
                    "status": dict(Counter(str(s) for _, s, _ in results))}
    for kind in ("search", "vqa"):
        ok = [ms for k, s, ms in results if k == kind and s == 200]
        report[kind] = {"ok": len(ok), "p50_ms": percentile(ok, 0.5), "p99_ms": percentile(ok, 0.99)}
    report["bad"] = sum(1 for _, s, _ in results if s == 0 or (s >= 500 and s != 503))
    return report


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url")
    parser.add_argument("--serve", action="store_true", help="start a tiny-model service for the run")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--api-key")
    args = parser.parse_args()
    if args.serve:
        with tempfile.TemporaryDirectory() as tmp_name:
            tmp = Path(tmp_name)
            make_library(tmp / "lib", n_per_class=4, seed=3)
            env = service_env(tmp, ROOT / "tests/fixtures/tiny_clip", tmp / "lib")
            import subprocess
            subprocess.run([sys.executable, "-m", "indexer", "--no-progress"], cwd=ROOT, env=env, check=True,
                           capture_output=True)
            server = Server(env, tmp / "server.log")
            try:
                server.wait_ready()
                report = load(server.url, args.clients, args.seconds, None)
            finally:
                server.stop()
    else:
        report = load(args.url, args.clients, args.seconds, args.api_key)
    print(json.dumps(report, indent=1))
    sys.exit(1 if report["bad"] else 0)


if __name__ == "__main__":
    main()
