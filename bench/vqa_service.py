"""VQA answers/s through `bentoml serve` at 1 and at 8 concurrent clients (adaptive batching at work).

    .venv/bin/python bench/vqa_service.py [--requests 48] [--model tests/fixtures/tiny_qwen]

Each request is the seed's form call (an uploaded image and a question). Prints answers/s at each
concurrency, the ratio, and how many generate() calls served the concurrent run.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import io
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from serving import TINY_QWEN, Server, service_env  # noqa: E402
from shapes import CLASSES, draw_shape  # noqa: E402


def image_bytes(i: int) -> bytes:
    shape, color = CLASSES[i % len(CLASSES)]
    buf = io.BytesIO()
    draw_shape(shape, color, size=64, seed=10_000 + i).save(buf, format="PNG")
    return buf.getvalue()


def ask(url: str, i: int) -> str:
    r = httpx.post(f"{url}/vqa", data={"question": "What color is the shape?"},
                   files={"image": ("x.png", image_bytes(i), "image/png")}, timeout=300)
    r.raise_for_status()
    return str(r.json()["answer"])


def run(url: str, requests: int, clients: int) -> tuple[float, list[str]]:
    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        answers = list(pool.map(lambda i: ask(url, i), range(requests)))
    return requests / (time.perf_counter() - started), answers


def batches(url: str) -> dict:
    return dict(httpx.get(f"{url}/health", timeout=30).json()["vqa_batches"])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=48)
    parser.add_argument("--model", type=Path, default=TINY_QWEN)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "lib").mkdir()
        env = service_env(tmp, ROOT / "tests/fixtures/tiny_clip", tmp / "lib", vqa_model=args.model)
        server = Server(env, tmp / "server.log")
        try:
            server.wait_ready()
            run(server.url, 4, 1)  # warm up
            serial, serial_answers = run(server.url, args.requests, 1)
            before = batches(server.url)
            concurrent_rate, answers = run(server.url, args.requests, 8)
            after = batches(server.url)
        finally:
            server.stop()
    calls = after["generate_calls"] - before["generate_calls"]
    print(f"answers/s at 1 client: {serial:.2f}; at 8 clients: {concurrent_rate:.2f}; "
          f"ratio {concurrent_rate / serial:.2f}x; {args.requests} concurrent answers in {calls} generate() calls; "
          f"answers equal to serial: {answers == serial_answers}")


if __name__ == "__main__":
    main()
