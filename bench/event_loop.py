"""Is the API's event loop free while big answers are built? (issue 12, point 1)

    .venv/bin/python bench/event_loop.py [--photos 80] [--clients 8] [--seconds 20]

Generates a library of 12-MP JPEGs (4000x3000, ~4-5 MB each), indexes it with the tiny CLIP model
(model speed is not what is measured here), starts `bentoml serve`, then measures `/livez` and a light
search (`include_image: false`) idle, and again while `--clients` processes pull top-10 results with
base64 images (the seed's default) as fast as they can. Targets: `/livez` p99 <= 100 ms and the light
search's p50 <= 3x its idle p50. Writes the block "event-loop" of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import io
import multiprocessing
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "bench")]

from _report import median, percentile, record, table  # noqa: E402
from serving import Server, run_indexer, service_env  # noqa: E402


def photo(seed: int) -> bytes:
    """A 12-MP JPEG that compresses like a photo: smooth colour fields plus sensor-like noise."""
    rng = np.random.default_rng(seed)
    small = Image.fromarray(rng.integers(0, 255, (30, 40, 3), dtype=np.uint8))
    base = small.resize((4000, 3000), Image.Resampling.BICUBIC)
    pixels = np.asarray(base, dtype=np.int16) + rng.integers(-24, 24, (3000, 4000, 3), dtype=np.int16)
    out = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(out, format="JPEG", quality=92)
    return out.getvalue()


def make_photos(folder: Path, count: int) -> int:
    folder.mkdir(parents=True)
    total = 0
    for i in range(count):
        data = photo(i)
        (folder / f"IMG_{i:04d}.jpg").write_bytes(data)
        total += len(data)
    return total


def timed_get(http: httpx.Client, url: str) -> float:
    started = time.perf_counter()
    http.get(url).raise_for_status()
    return (time.perf_counter() - started) * 1000


def timed_search(http: httpx.Client, url: str) -> float:
    started = time.perf_counter()
    http.post(f"{url}/text2image_search", json={"text_query": "红色的圆形", "top_k": 3,
                                                "include_image": False}).raise_for_status()
    return (time.perf_counter() - started) * 1000


def heavy_client(url: str, seconds: float, nice: int = 0) -> tuple[int, int]:
    """One process pulling top-10 base64 answers until `seconds` pass: (answers, bytes). `nice` lowers its
    CPU priority, so that the clients sharing the server's 2 cores stand for clients on other machines."""
    os.nice(nice)
    answers = size = 0
    deadline = time.monotonic() + seconds
    with httpx.Client(timeout=120) as http:
        while time.monotonic() < deadline:
            r = http.post(f"{url}/text2image_search", json={"text_query": "一张照片", "top_k": 10})
            r.raise_for_status()
            answers, size = answers + 1, size + len(r.content)
    return answers, size


def probe(url: str, seconds: float) -> tuple[list[float], list[float]]:
    """/livez every 50 ms and a light search every 250 ms, for `seconds`."""
    livez: list[float] = []
    light: list[float] = []
    deadline = time.monotonic() + seconds

    def searches() -> None:
        with httpx.Client(timeout=60) as http:
            while time.monotonic() < deadline:
                light.append(timed_search(http, url))
                time.sleep(0.25)

    thread = threading.Thread(target=searches)
    thread.start()
    with httpx.Client(timeout=60) as http:
        while time.monotonic() < deadline:
            livez.append(timed_get(http, f"{url}/livez"))
            time.sleep(0.05)
    thread.join()
    return livez, light


def under_load(url: str, clients: int, seconds: float, nice: int) -> tuple[list[float], list[float], int, int]:
    """/livez and light-search times while `clients` processes (at `nice`) pull base64 answers."""
    with concurrent.futures.ProcessPoolExecutor(clients, mp_context=multiprocessing.get_context("spawn")) as pool:
        heavy = [pool.submit(heavy_client, url, seconds + 2, nice) for _ in range(clients)]
        time.sleep(2)  # let the heavy clients get going
        busy_livez, busy_light = probe(url, seconds)
        answers, size = map(sum, zip(*(f.result() for f in heavy), strict=True))
    return busy_livez, busy_light, answers, size


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--photos", type=int, default=80)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--no-record", action="store_true")
    parser.add_argument("--client-nice", type=int, default=10,
                        help="also measure with the heavy clients at this nice level (0: only at equal priority)")
    parser.add_argument("--keep-log", type=Path, help="copy the server's log here (with PYTHONASYNCIODEBUG=1 "
                        "it names every callback that held the event loop over 100 ms)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        total = make_photos(tmp / "photos", args.photos)
        print(f"{args.photos} photos of 12 MP, {total / args.photos / 1e6:.1f} MB each on average")
        env = service_env(tmp, ROOT / "tests/fixtures/tiny_clip", tmp / "photos")
        env.update(VQA_ENABLED="false", SEARCH_MAX_RESPONSE_MB="1000")
        run_indexer(env).check_returncode()
        server = Server(env, tmp / "server.log")
        try:
            server.wait_ready()
            idle_livez, idle_light = probe(server.url, 8)
            loads = {nice: under_load(server.url, args.clients, args.seconds, nice)
                     for nice in sorted({0, args.client_nice})}
        finally:
            server.stop()
            if args.keep_log:
                args.keep_log.write_bytes((tmp / "server.log").read_bytes())
    rows = [("/livez p50 / p99, idle", f"{median(idle_livez):.1f} / {percentile(idle_livez, 0.99):.1f} ms"),
            ("light search p50, idle", f"{median(idle_light):.1f} ms")]
    for nice, (busy_livez, busy_light, answers, size) in loads.items():
        who = "clients at the server's priority" if nice == 0 else f"clients at nice {nice}"
        rows += [
            (f"heavy load, {who}", f"{args.clients} processes pulling top-10 base64 answers: {answers} answers, "
                                   f"{size / 1e6 / (args.seconds + 2):.0f} MB/s"),
            (f"/livez p50 / p99, {who}", f"{median(busy_livez):.1f} / {percentile(busy_livez, 0.99):.1f} ms "
                                         "(target p99 <= 100 ms)"),
            (f"light search p50, {who}", f"{median(busy_light):.1f} ms: "
                                         f"{median(busy_light) / median(idle_light):.1f}x idle (target <= 3x)")]
    body = ("### Event loop under base64 answers of 12-MP photos (issue 12)\n\n"
            f"`.venv/bin/python bench/event_loop.py --photos {args.photos} --clients {args.clients} "
            f"--seconds {args.seconds:g}` (CPU, tiny CLIP model; the figures are about the API process):\n\n"
            + table(rows) + "\n\nBefore the answers were streamed (issue 12's own measurement, 80 photos of 4.7 MB, 8 "
            "clients): `/livez` up to 4.6 s, the light search 20 ms idle, 184 ms p50 under load. The 2 cores are "
            "shared by the API process, both runners and the client processes; the niced clients stand for clients on "
            "other machines. Streamed answers alone gave /livez p99 117 ms and the light search 5.7x idle; yielding "
            "the loop between base64 pieces brought /livez to 44 ms, and SEARCH_STREAM_SLOTS (1 file streaming at a "
            "time) the light search to the figures above, for about 4 % less base64 throughput.")
    print(body)
    if not args.no_record:
        record("event-loop", body)


if __name__ == "__main__":
    main()
