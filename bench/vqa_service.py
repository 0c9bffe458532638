"""VQA answers/s through `bentoml serve` at 1 and at 8 concurrent clients (adaptive batching at work).

    .venv/bin/python bench/vqa_service.py [--requests 48] [--models tiny,small] [--max-new-tokens 32] [--no-record]

Each request is the seed's form call (an uploaded image and a question, `max_new_tokens` set). Prints
answers/s at 1 and at 8 concurrent clients, the ratio, and how many generate() calls served the
concurrent run. `tiny` is tests/fixtures/tiny_qwen (generate takes milliseconds: measures HTTP);
`small` is a random Qwen2.5-VL with an 8 x 512 language model (bench/_models.py), where generate
dominates as it does with the real 3B model.
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
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "bench")]

from _models import build_qwen  # noqa: E402
from _report import PLOTS, bar_plot, record, rel, table  # noqa: E402
from serving import TINY_QWEN, Server, service_env  # noqa: E402
from shapes import CLASSES, draw_shape  # noqa: E402


def image_bytes(i: int) -> bytes:
    shape, color = CLASSES[i % len(CLASSES)]
    buf = io.BytesIO()
    draw_shape(shape, color, size=64, seed=10_000 + i).save(buf, format="PNG")
    return buf.getvalue()


SMALL_QWEN = Path(tempfile.gettempdir()) / "mms-bench-qwen-small"


def ask(url: str, i: int, max_new_tokens: int) -> str:
    r = httpx.post(f"{url}/vqa", data={"question": "What color is the shape?", "max_new_tokens": max_new_tokens},
                   files={"image": ("x.png", image_bytes(i), "image/png")}, timeout=300)
    if r.status_code != 200:
        raise RuntimeError(f"/vqa answered {r.status_code}: {r.text[:500]}")
    return str(r.json()["answer"])


def run(url: str, requests: int, clients: int, max_new_tokens: int) -> tuple[float, list[str]]:
    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        answers = list(pool.map(lambda i: ask(url, i, max_new_tokens), range(requests)))
    return requests / (time.perf_counter() - started), answers


def batches(url: str) -> dict:
    return dict(httpx.get(f"{url}/health", timeout=30).json()["vqa_batches"])


def bench_model(name: str, model: Path, requests: int, max_new_tokens: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "lib").mkdir()
        env = service_env(tmp, ROOT / "tests/fixtures/tiny_clip", tmp / "lib", vqa_model=model)
        server = Server(env, tmp / "server.log")
        try:
            server.wait_ready()
            run(server.url, 4, 1, max_new_tokens)  # warm up
            serial, serial_answers = run(server.url, requests, 1, max_new_tokens)
            before = batches(server.url)
            concurrent_rate, answers = run(server.url, requests, 8, max_new_tokens)
            after = batches(server.url)
        finally:
            server.stop()
    res = {"name": name, "serial": serial, "concurrent": concurrent_rate, "ratio": concurrent_rate / serial,
           "calls": after["generate_calls"] - before["generate_calls"], "same": answers == serial_answers}
    print(f"{name}: answers/s at 1 client: {serial:.2f}; at 8 clients: {concurrent_rate:.2f}; "
          f"ratio {res['ratio']:.2f}x; {requests} concurrent answers in {res['calls']} generate() calls; "
          f"answers equal to serial: {res['same']}", flush=True)
    return res


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=48)
    parser.add_argument("--models", default="tiny,small", help="comma-separated: tiny, small")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    results = []
    for name in args.models.split(","):
        model = TINY_QWEN if name == "tiny" else build_qwen(SMALL_QWEN)
        results.append(bench_model(name, model, args.requests, args.max_new_tokens))
    if not args.no_record:
        report(args, results)


def report(args: argparse.Namespace, results: list[dict]) -> None:
    plot = bar_plot(PLOTS / "vqa_batching.png", "VQA answers/s, 8 concurrent clients : 1 client",
                    [r["name"] for r in results], [r["ratio"] for r in results], "ratio")
    rows = [(r["name"], f"{r['serial']:.2f} | {r['concurrent']:.2f} | **{r['ratio']:.2f}×** | "
             f"{r['calls']} for {args.requests} | {'yes' if r['same'] else 'NO'}") for r in results]
    head = ("model", "answers/s, 1 client | answers/s, 8 concurrent clients | ratio (target ≥ 3×) | "
                     "generate() calls | concurrent answers equal to serial ones")
    text = table(rows, head).replace("|---|---|", "|---|---|---|---|---|---|", 1)
    command = "`.venv/bin/python bench/vqa_service.py " + " ".join(sys.argv[1:]) + "`"
    record("vqa_batching", f"""### VQA answers/s at 8 concurrent clients vs serial (adaptive batching of generate)

{command.replace(" `", "`")} ({args.requests} seed-style `/vqa` form calls (a 64 px PNG and a
question, `max_new_tokens` {args.max_new_tokens}, greedy) through the real `bentoml serve`; `tiny` =
tests/fixtures/tiny_qwen (2 x 128 language model), `small` = random Qwen2.5-VL with an 8 x 512
language model, same tokenizer and vision tower):

{text}

![VQA batching]({rel(plot)})
""")


if __name__ == "__main__":
    main()
