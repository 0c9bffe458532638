"""Mixed search + VQA load against a running service (loopback only), bounded in time.

    .venv/bin/python bench/load.py --url http://127.0.0.1:3000 [--clients 32] [--seconds 60] [--api-key K]
    .venv/bin/python bench/load.py --serve [--clients 32] [--seconds 60]   # starts a tiny-model service
    .venv/bin/python bench/load.py --serve --seconds 600 --clip DIR --qdrant DIR --record   # memory over time

Prints requests, status counts, p50/p99 latency per kind, and exits 1 if any 5xx other than a
deliberate 503 (VQA at capacity) came back, or any request failed at the connection. With `--serve`
it also samples the resident memory (RSS) of the service's whole process tree every 5 s and reports
it after the warm-up minute, at its peak and at the end. `--clip`/`--qdrant` serve a prebuilt
collection (e.g. 1M points from `bench/search_scale.py --keep`) with its CLIP model instead of the
tiny library; `--record` writes the figures into BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import io
import json
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from urllib.parse import urlparse

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "bench")]

from _report import PLOTS, record, rel, table  # noqa: E402
from serving import Server, service_env  # noqa: E402
from shapes import CLASSES, caption, draw_shape, make_library  # noqa: E402
from startup import tree_rss_mb  # noqa: E402

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


class MemoryWatch:
    """Samples the RSS of a process tree every `every` seconds on a thread."""

    def __init__(self, pid: int, every: float = 5.0) -> None:
        self.pid, self.every = pid, every
        self.samples: list[tuple[float, float]] = []  # (seconds since start, MB)
        self.started = time.monotonic()
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        while not self.stop_event.is_set():
            self.samples.append((time.monotonic() - self.started, tree_rss_mb(self.pid)))
            self.stop_event.wait(self.every)

    def stop(self) -> dict:
        self.stop_event.set()
        self.thread.join()
        after_warmup = [mb for t, mb in self.samples if t >= 60] or [mb for _, mb in self.samples]
        return {"start_mb": round(self.samples[0][1]), "after_warmup_mb": round(after_warmup[0]),
                "peak_mb": round(max(mb for _, mb in self.samples)), "end_mb": round(self.samples[-1][1]),
                "growth_mb": round(self.samples[-1][1] - after_warmup[0])}


def serve_and_load(args: argparse.Namespace, tmp: Path) -> dict:
    if args.qdrant:
        (tmp / "lib").mkdir()
        env = service_env(tmp, args.clip, tmp / "lib")
        env["QDRANT_PATH"] = str(args.qdrant)
    else:
        make_library(tmp / "lib", n_per_class=4, seed=3)
        env = service_env(tmp, ROOT / "tests/fixtures/tiny_clip", tmp / "lib")
        import subprocess
        subprocess.run([sys.executable, "-m", "indexer", "--no-progress"], cwd=ROOT, env=env, check=True,
                       capture_output=True)
    server = Server(env, tmp / "server.log")
    try:
        server.wait_ready(timeout=600)
        watch = MemoryWatch(server.proc.pid)
        report = load(server.url, args.clients, args.seconds, None)
        report["memory"] = watch.stop()
        report["memory_samples"] = watch.samples
        report["library_size"] = httpx.get(f"{server.url}/health", timeout=30).json()["image_library_size"]
    finally:
        server.stop()
    return report


def plot_memory(samples: list[tuple[float, float]], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3), dpi=80)
    ax.plot([t / 60 for t, _ in samples], [mb for _, mb in samples])
    ax.set_xlabel("minutes under load")
    ax.set_ylabel("RSS of the service (MB)")
    ax.set_ylim(bottom=0)
    ax.set_title("Service memory under mixed search + VQA load")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def write_record(args: argparse.Namespace, report: dict) -> None:
    mem = report["memory"]
    plot = plot_memory(report["memory_samples"], PLOTS / "load_memory.png")
    rows = [("points in the collection", f"{report['library_size']:,}"),
            ("requests (search : VQA about 2 : 1)", f"{report['requests']:,} ({report['per_second']}/s), "
             f"statuses {report['status']}, bad {report['bad']}"),
            ("search p50 / p99", f"{report['search']['p50_ms']} / {report['search']['p99_ms']} ms"),
            ("VQA p50 / p99", f"{report['vqa']['p50_ms']} / {report['vqa']['p99_ms']} ms"),
            ("RSS at start / after 1 min / peak / end", f"{mem['start_mb']:,} / {mem['after_warmup_mb']:,} / "
             f"{mem['peak_mb']:,} / {mem['end_mb']:,} MB"),
            ("growth from minute 1 to the end", f"**{mem['growth_mb']:+,} MB**")]
    command = "`.venv/bin/python bench/load.py " + " ".join(sys.argv[1:]) + "`"
    record("load_memory", f"""### Service memory with both models loaded, under {args.seconds / 60:.0f} minutes of load

{command.replace(" `", "`")} ({args.clients} clients, mixed search and VQA, the real `bentoml serve`:
API service + CLIP runner + tiny Qwen runner; RSS summed over the whole process tree, sampled every 5 s):

{table(rows)}

![memory over time]({rel(plot)})
""")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url")
    parser.add_argument("--serve", action="store_true", help="start a tiny-model service for the run")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--api-key")
    parser.add_argument("--clip", type=Path, help="with --serve and --qdrant: the CLIP model of that collection")
    parser.add_argument("--qdrant", type=Path, help="with --serve: a QDRANT_PATH folder with a built collection")
    parser.add_argument("--record", action="store_true", help="write the figures into BENCHMARKS.md")
    args = parser.parse_args()
    if args.serve:
        with tempfile.TemporaryDirectory() as tmp_name:
            report = serve_and_load(args, Path(tmp_name))
        if args.record:
            write_record(args, report)
        report.pop("memory_samples")
    else:
        report = load(args.url, args.clients, args.seconds, args.api_key)
    print(json.dumps(report, indent=1))
    sys.exit(1 if report["bad"] else 0)


if __name__ == "__main__":
    main()
