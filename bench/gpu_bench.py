"""GPU figures of the two models: Qwen2.5-VL load time, memory per quantization, first-token latency,
tokens/s at batch 1 and 8 (runners.vlm.VisionLanguageModel), and CLIP images/s (runners.clip.ClipEncoder).

    bench/gpu.sh [--quantizations none,8bit,4bit] [--new-tokens 64] [--record]      # on a GPU machine
    bench/gpu.sh --cpu [--record]                                                   # CPU smoke run
    bench/gpu.sh --real-size [--record]       # the real architectures, random weights (bench/gpu_real.py)

Installs and downloads nothing: the VQA model is $VQA_MODEL when that is a local folder holding a
config.json (e.g. the real Qwen/Qwen2.5-VL-3B-Instruct weights), else tests/fixtures/tiny_qwen; the
CLIP model is $CLIP_MODEL when it is a local folder, else tests/fixtures/tiny_clip. `--cpu` runs
everything on the CPU (quantization "none" unless asked), so the script is exercised without a GPU.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "bench")]

from _report import PLOTS, bar_plot, median, record, rel, table  # noqa: E402
from shapes import CLASSES, draw_shape  # noqa: E402

TINY_QWEN = ROOT / "tests" / "fixtures" / "tiny_qwen"
TINY_CLIP = ROOT / "tests" / "fixtures" / "tiny_clip"
QUESTION = "What color is the shape in the picture? Answer in one sentence."


def local_model(env: str, fallback: Path) -> Path:
    value = os.environ.get(env, "")
    folder = Path(value).expanduser() if value else None
    if folder is not None and (folder / "config.json").is_file():
        return folder
    if value:
        print(f"{env}={value!r} is not a local model folder (no config.json): using {fallback}", file=sys.stderr)
    return fallback


def gpu_gib() -> dict[str, float | None]:
    import torch

    if not torch.cuda.is_available():
        return {"allocated_gib": None, "peak_gib": None}
    return {"allocated_gib": round(torch.cuda.memory_allocated() / 2**30, 3),
            "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 3)}


def sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def release() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def bench_vlm(folder: Path, device: str, quantization: str, new_tokens: int, repeats: int) -> dict[str, Any]:
    from config import Settings
    from runners.vlm import VQAItem, first_error, item_messages, load_vlm

    settings = Settings(device=device, vqa_max_new_tokens=new_tokens)  # type: ignore[arg-type]
    release()
    started = time.perf_counter()
    vlm = load_vlm(folder, settings, quantization=quantization)  # type: ignore[arg-type]
    sync()
    load_s = time.perf_counter() - started
    memory = gpu_gib()
    images = [draw_shape(s, c, size=448, seed=i) for i, (s, c) in enumerate(CLASSES[:8])]
    convs = [item_messages(VQAItem(images=[img], question=QUESTION)) for img in images]
    first_error(vlm.generate_each(convs[:1], 2))  # warm-up (kernels, allocator)

    first = []
    for _ in range(repeats):  # prefill + one token: time to the first token of an answer
        started = time.perf_counter()
        first_error(vlm.generate_each(convs[:1], 1))
        sync()
        first.append(time.perf_counter() - started)

    rates: dict[int, float] = {}
    tokens: dict[int, int] = {}
    for batch in (1, 8):
        runs = []
        for _ in range(repeats):
            started = time.perf_counter()
            out = first_error(vlm.generate_each(convs[:batch], new_tokens))
            sync()
            elapsed = time.perf_counter() - started
            count = sum(g.completion_tokens for g in out)
            runs.append((count / elapsed, count))
        rates[batch] = median([r for r, _ in runs])
        tokens[batch] = runs[-1][1]
    result = {"quantization": quantization, "load_s": round(load_s, 2), "gpu_allocated_gib": memory["allocated_gib"],
              "gpu_peak_gib": gpu_gib()["peak_gib"], "first_token_ms": round(1000 * median(first), 1),
              "tok_s_b1": round(rates[1], 1), "tok_s_b8": round(rates[8], 1),
              "tokens_b1": tokens[1], "tokens_b8": tokens[8], "dtype": vlm.precision}
    del vlm
    release()
    return result


def bench_clip(folder: Path, device: str, n: int, batch: int) -> dict[str, Any]:
    from runners.clip import ClipEncoder

    release()
    started = time.perf_counter()
    encoder = ClipEncoder(str(folder), device=device)
    load_s = time.perf_counter() - started
    images = [draw_shape(*CLASSES[i % len(CLASSES)], size=224, seed=i) for i in range(n)]
    encoder.encode_images(images[:batch])  # warm-up
    sync()
    started = time.perf_counter()
    for start in range(0, n, batch):
        encoder.encode_images(images[start:start + batch])
    sync()
    elapsed = time.perf_counter() - started
    result = {"load_s": round(load_s, 2), "images_per_s": round(n / elapsed, 1), "batch": batch, "images": n,
              "gpu_peak_gib": gpu_gib()["peak_gib"]}
    del encoder
    release()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cpu", action="store_true", help="run on the CPU (smoke test without a GPU)")
    parser.add_argument("--quantizations", default=None, help="default none,8bit,4bit on GPU, none on CPU")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--clip-images", type=int, default=512)
    parser.add_argument("--clip-batch", type=int, default=64)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument("--record", action="store_true", help="write the figures into BENCHMARKS.md + a plot")
    real = parser.add_argument_group("--real-size (bench/gpu_real.py)")
    real.add_argument("--real-size", action="store_true",
                      help="Qwen2.5-VL-3B and Chinese-CLIP ViT-B/16 from their configs, random weights")
    real.add_argument("--layers", type=int, default=None, help="shrink both Qwen towers to this many blocks")
    real.add_argument("--max-pixels", type=int, default=1280 * 28 * 28, help="VQA_MAX_PIXELS (default 1280*28*28)")
    real.add_argument("--batch", type=int, default=8, help="the batched size (batch 1 is always measured)")
    real.add_argument("--work-dir", type=Path, default=None, help="where the models are built (temp folder)")
    args = parser.parse_args()

    import torch

    if not args.cpu and not torch.cuda.is_available():
        sys.exit("no CUDA device: run on a GPU machine, or pass --cpu for a smoke run with the tiny models")
    device = "cpu" if args.cpu else "cuda"
    quantizations = (args.quantizations or ("none" if args.cpu else "none,8bit,4bit")).split(",")
    if args.real_size:
        from gpu_real import run

        where = torch.cuda.get_device_name(0) if device == "cuda" else f"CPU ({os.cpu_count()} cores)"
        print(f"device: {where}; real-size models", flush=True)
        run(args, device, where, quantizations)
        return
    vqa_folder = local_model("VQA_MODEL", TINY_QWEN)
    clip_folder = local_model("CLIP_MODEL", TINY_CLIP)
    where = torch.cuda.get_device_name(0) if device == "cuda" else f"CPU ({os.cpu_count()} cores)"
    print(f"device: {where}; VQA model {vqa_folder}; CLIP model {clip_folder}", flush=True)

    vlm = []
    for q in quantizations:
        res = bench_vlm(vqa_folder, device, q, args.new_tokens, args.repeats)
        print(json.dumps(res), flush=True)
        vlm.append(res)
    clip = bench_clip(clip_folder, device, args.clip_images, args.clip_batch)
    print(json.dumps({"clip": clip}), flush=True)
    figures = {"device": where, "vqa_model": str(vqa_folder), "clip_model": str(clip_folder), "vlm": vlm, "clip": clip}
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    if not args.record:
        return

    def gib(v: float | None) -> str:
        return "n/a (CPU)" if v is None else f"{v:.2f} GiB"

    rows = []
    for r in vlm:
        q = r["quantization"]
        rows += [(f"VQA {q}: load time", f"{r['load_s']:.2f} s"),
                 (f"VQA {q}: GPU memory after load / peak",
                  f"{gib(r['gpu_allocated_gib'])} / {gib(r['gpu_peak_gib'])}"),
                 (f"VQA {q}: first-token latency (prefill + 1 token)", f"{r['first_token_ms']:.1f} ms"),
                 (f"VQA {q}: tokens/s batch 1 / batch 8", f"{r['tok_s_b1']:.1f} / {r['tok_s_b8']:.1f} "
                  f"({r['tokens_b1']} / {r['tokens_b8']} tokens; "
                  f"ratio {r['tok_s_b8'] / max(r['tok_s_b1'], 1e-9):.2f}×)")]
    rows.append((f"CLIP images/s (batch {clip['batch']}, {clip['images']} pre-decoded 224 px images)",
                 f"{clip['images_per_s']:.1f}"))
    name = "gpu_cpu_smoke" if args.cpu else "gpu"
    plot = bar_plot(PLOTS / f"{name}.png", f"Qwen2.5-VL tokens/s, {where}",
                    [f"{r['quantization']} b{b}" for r in vlm for b in (1, 8)],
                    [r[f"tok_s_b{b}"] for r in vlm for b in (1, 8)], "tokens/s")
    title = ("### GPU script, CPU smoke run (tiny models: checks the script, not GPU figures)" if args.cpu
             else f"### GPU: {where}")
    command = "`bench/gpu.sh " + " ".join(sys.argv[1:]) + "`"
    record(name, f"""{title}

{command.replace(" `", "`")} (VQA model `{vqa_folder.name}`, CLIP model `{clip_folder.name}`, {args.new_tokens} new
tokens at most, greedy; a tiny model may stop early, so tokens/s counts the tokens it produced):

{table(rows)}

![tokens/s]({rel(plot)})
""")


if __name__ == "__main__":
    main()
