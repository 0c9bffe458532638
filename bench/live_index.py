"""Search latency over HTTP while `python -m indexer` writes N new images into the running service
(embedded store, through the service's internal write path), against the same searches with the
service idle, side by side in one run.

    .venv/bin/python bench/live_index.py [--images 5000] [--base 1000] [--model tests/fixtures/tiny_clip]

A synthetic library of `--base` images is indexed with the service stopped; the service starts; one
client sends text searches one after another (top_k 5, no image bytes) for `--idle-s` seconds (idle),
then `--images` new images are added and the indexer runs while the same client keeps searching. Also
timed: how long after the indexer's exit a new image is found by search. Figures go to BENCHMARKS.md
(block live_index). On the 2-core machine the indexer's own embedding competes for the CPU with the
service, so the "while indexing" column includes that contention, not only the store writes.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from _report import percentile, record  # noqa: E402
from serving import Server, service_env  # noqa: E402
from shapes import CLASSES, caption, make_library  # noqa: E402


class Searcher(threading.Thread):
    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.phase = "idle"
        self.times: dict[str, list[float]] = {"idle": [], "indexing": []}
        self.errors: dict[str, int] = {"idle": 0, "indexing": 0}
        self.halt = threading.Event()

    def run(self) -> None:
        queries = [caption(s, c) for s, c in CLASSES]
        with httpx.Client(timeout=60) as http:
            i = 0
            while not self.halt.is_set():
                phase = self.phase
                started = time.perf_counter()
                r = http.post(f"{self.url}/text2image_search",
                              data={"text_query": queries[i % len(queries)], "top_k": "5", "include_image": "false"})
                if phase == self.phase and phase != "pause":
                    self.times[phase].append(time.perf_counter() - started)
                    self.errors[phase] += r.status_code != 200
                i += 1


def indexer(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "indexer", "--no-progress", "--json"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=3600)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--base", type=int, default=1000)
    parser.add_argument("--idle-s", type=float, default=30.0)
    parser.add_argument("--model", type=Path, default=ROOT / "tests" / "fixtures" / "tiny_clip")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="live-index-"))
    library = tmp / "photos"
    make_library(library / "base", n_per_class=max(1, args.base // len(CLASSES)), seed=1)
    env = {**service_env(tmp, args.model.resolve(), library), "VQA_ENABLED": "false"}
    base = indexer(env)
    assert base.returncode == 0, base.stderr
    server = Server(env, tmp / "server.log")
    try:
        server.wait_ready()
        searcher = Searcher(server.url)
        searcher.start()
        time.sleep(args.idle_s)
        searcher.phase = "pause"
        new = make_library(library / "new", n_per_class=max(1, args.images // len(CLASSES)), seed=2)
        searcher.phase = "indexing"
        started = time.perf_counter()
        run = indexer(env)
        wall = time.perf_counter() - started
        ended = time.monotonic()
        searcher.phase = "pause"
        assert run.returncode == 0, run.stderr
        summary = json.loads(run.stdout)
        probe = "new/" + sorted(new)[0]
        visible = seen_after(server.url, library / probe, probe, ended)
        searcher.halt.set()
        searcher.join(60)
    finally:
        server.stop()
    report(args, searcher, summary, wall, visible, len(new))


def seen_after(url: str, file: Path, rel: str, since: float) -> float:
    """Seconds from `since` until an image search for `file` ranks `rel` first."""
    while True:
        r = httpx.post(f"{url}/image2image_search", files={"image": (file.name, file.read_bytes())},
                       data={"top_k": "1", "include_image": "false"}, timeout=60)
        if r.status_code == 200 and r.json()["results"] and r.json()["results"][0]["image"] == rel:
            return time.monotonic() - since
        if time.monotonic() - since > 60:
            return float("inf")
        time.sleep(0.05)


def report(args: argparse.Namespace, s: Searcher, summary: dict, wall: float, visible: float, n: int) -> None:
    idle, busy = s.times["idle"], s.times["indexing"]

    def ms(values: list[float], q: float) -> str:
        return f"{percentile(values, q) * 1000:.1f} ms" if values else "-"

    rows = [
        ("searches (count)", str(len(idle)), str(len(busy))),
        ("search p50", ms(idle, 0.5), ms(busy, 0.5)),
        ("search p99", ms(idle, 0.99), ms(busy, 0.99)),
        ("search max", ms(idle, 1.0), ms(busy, 1.0)),
        ("non-200 answers", str(s.errors["idle"]), str(s.errors["indexing"])),
    ]
    lines = ["| figure | service idle | while the indexer writes |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    body = "\n".join([
        "### Indexing while the service serves (embedded store, issue 13)",
        "",
        f"`bench/live_index.py --images {args.images} --base {args.base}`: tiny CLIP (`tests/fixtures/tiny_clip`), "
        f"CPU, the 2-core machine shared with other jobs. One client searching over HTTP (text, top_k 5, no "
        f"image bytes), first {args.idle_s:g} s with the service idle, then while `python -m indexer` "
        f"writes {summary['added']} new images ({n} files) into the running service through its internal "
        f"write path; {args.base // len(CLASSES) * len(CLASSES)} images indexed before.",
        "",
        "\n".join(lines),
        "",
        f"Indexer run: {wall:.1f} s wall ({summary['added'] / wall:.0f} images/s; stages "
        + ", ".join(f"{k} {v:.1f} s" for k, v in summary["seconds"].items())
        + f"). A new image was ranked first by an image search {visible:.2f} s after the indexer exited "
        "(the writes are searchable as soon as they are applied; the run's end only flushes, and the "
        "HNSW build of these points waits for the service's next start, see docs/indexing.md \"Vector store\").",
    ])
    print(body)
    record("live_index", body)


if __name__ == "__main__":
    main()
