"""`/ask` through `bentoml serve`: latency split into retrieval and generation, and answers/s (issue 15).

    .venv/bin/python bench/ask_service.py [--requests 24] [--models tiny,small] [--no-record]

A library of synthetic shapes indexed with the tiny CLIP model; the VQA model is `tiny`
(tests/fixtures/tiny_qwen) or `small` (a random Qwen2.5-VL with an 8 x 512 language model,
bench/_models.py). Each ask retrieves 3 photos and answers about them. Retrieval = the time to the
`sources` event of `/ask/stream` (search done, before generation); generation = the rest of the
stream. Then answers/s of `/ask` at 1 and at 8 concurrent askers (adaptive batching merges their
generate calls: the /health `vqa_batches` count shows how many calls served them).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "bench")]

from _models import build_qwen  # noqa: E402
from _report import record  # noqa: E402
from serving import TINY_QWEN, Server, run_indexer, service_env  # noqa: E402
from shapes import make_library  # noqa: E402

SMALL_QWEN = Path(tempfile.gettempdir()) / "mms-bench-qwen-small"
QUESTIONS = ["What color is the shape?", "图形是什么颜色？"]
QUERIES = ["红色的圆形", "蓝色的正方形", "绿色的三角形"]


def streamed(url: str, i: int) -> tuple[float, float]:
    """(seconds to the `sources` event, seconds from it to the end of the stream)."""
    started = time.perf_counter()
    sources_at = None
    body = {"question": QUESTIONS[i % 2], "query": QUERIES[i % 3], "top_k": 3}
    with httpx.stream("POST", f"{url}/ask/stream", json=body, timeout=300) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if line.startswith("event: sources") and sources_at is None:
                sources_at = time.perf_counter()
    ended = time.perf_counter()
    assert sources_at is not None, "no sources event"
    return sources_at - started, ended - sources_at


def asked(url: str, i: int) -> None:
    body = {"question": QUESTIONS[i % 2], "query": QUERIES[i % 3], "top_k": 3}
    response = httpx.post(f"{url}/ask", json=body, timeout=300)
    if response.status_code != 200:
        raise RuntimeError(f"/ask answered {response.status_code}: {response.text[:300]}")


def throughput(url: str, requests: int, clients: int) -> float:
    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        list(pool.map(lambda i: asked(url, i), range(requests)))
    return requests / (time.perf_counter() - started)


def calls(url: str) -> int:
    return int(httpx.get(f"{url}/health", timeout=30).json()["vqa_batches"]["generate_calls"] or 0)


def bench_model(name: str, model: Path, requests: int) -> list[tuple[str, str]]:
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        make_library(tmp / "lib", n_per_class=4, seed=3)
        env = {**service_env(tmp, ROOT / "tests/fixtures/tiny_clip", tmp / "lib", vqa_model=model),
               "VQA_MAX_NEW_TOKENS": "16"}
        run_indexer(env).check_returncode()
        server = Server(env, tmp / "server.log")
        try:
            server.wait_ready()
            streamed(server.url, 0)  # warm up
            split = [streamed(server.url, i) for i in range(max(6, requests // 4))]
            one = throughput(server.url, requests, 1)
            before = calls(server.url)
            eight = throughput(server.url, requests, 8)
            merged = calls(server.url) - before
        finally:
            server.stop()
    retrieval = statistics.median(s for s, _ in split) * 1000
    generation = statistics.median(g for _, g in split) * 1000
    return [(f"{name}: time to the `sources` event (retrieval), p50", f"{retrieval:.0f} ms"),
            (f"{name}: generation after it, p50", f"{generation:.0f} ms"),
            (f"{name}: /ask answers/s, 1 asker / 8 concurrent askers",
             f"{one:.2f} / {eight:.2f} ({eight / one:.1f}x; {requests} asks served by {merged} generate calls)")]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=24)
    parser.add_argument("--models", default="tiny,small")
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    rows: list[tuple[str, str]] = []
    for name in args.models.split(","):
        model = TINY_QWEN if name == "tiny" else build_qwen(SMALL_QWEN)
        rows += bench_model(name, model, args.requests)
        print(rows[-3:])
    lines = ["| figure | value |", "|---|---|"] + [f"| {a} | {b} |" for a, b in rows]
    body = ("### Ask the library: retrieval vs generation, answers/s at 1 and 8 askers (issue 15)\n\n"
            f"`.venv/bin/python bench/ask_service.py --requests {args.requests} --models {args.models}` "
            "(CPU, tiny CLIP; 3 photos an ask; `small` = random Qwen2.5-VL with an 8 x 512 language model):\n\n"
            + "\n".join(lines))
    print(body)
    if not args.no_record:
        record("ask-service", body)


if __name__ == "__main__":
    main()
