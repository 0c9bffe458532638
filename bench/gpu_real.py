"""`bench/gpu.sh --real-size`: the real architectures with random weights (speed does not depend on their
values), so no weights and no network are needed (issue 12 item 4, issue 14 item 6).

- Qwen2.5-VL-3B (bench/_models.build_real_qwen) through runners.vlm.VisionLanguageModel, the class the
  service runs, at each quantization (none / 8bit / 4bit: bitsandbytes): GPU memory after load, time to
  the first token for one 1-MP photo (processor + vision tower + prefill + 1 token) under VQA_MAX_PIXELS,
  decode tokens/s and describe throughput (images/s) at batch 1 and batch 8 with
  config.DEFAULT_DESCRIBE_PROMPT. Random weights emit random tokens, so every answer is forced to exactly
  --new-tokens tokens (min_new_tokens = max_new_tokens): each run decodes the same count.
- Chinese-CLIP ViT-B/16 (bench/_models.build_real_clip) through runners.clip.ClipEncoder (fp16 on CUDA):
  images/s at batch --clip-batch.

Both models are built in a temporary folder under --work-dir (default the system's temp folder: the 3B
model takes ~7.5 GB there in bf16), never in the repository. A quantization that cannot load (bitsandbytes
missing, say) is reported as such and the others still run.

    bench/gpu.sh --real-size [--record]                                  # on a GPU machine
    bench/gpu.sh --real-size --cpu --layers 2 --max-pixels 50176 --new-tokens 8 --repeats 1 --clip-images 32
                                                                         # CPU smoke run of the script
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from _models import build_real_clip, build_real_qwen
from _report import median, record, table
from gpu_bench import bench_clip, gpu_gib, release, sync
from vqa_pixels import SIZES, photo

from runners.vlm import first_error

PHOTO = SIZES["1 MP"]


def describe_conversation(image: Any) -> list[dict[str, Any]]:
    from config import DEFAULT_DESCRIBE_PROMPT

    return [{"role": "user", "content": [{"type": "image", "image": image},
                                         {"type": "text", "text": DEFAULT_DESCRIBE_PROMPT}]}]


def timed_generate(vlm: Any, conversations: list[Any], tokens: int) -> float:
    """Seconds for one generate of exactly `tokens` new tokens per conversation."""
    vlm.runtime.model.generation_config.min_new_tokens = tokens  # random weights could end an answer at any token
    started = time.perf_counter()
    results = first_error(vlm.generate_each(conversations, tokens))
    sync()
    elapsed = time.perf_counter() - started
    counts = {g.completion_tokens for g in results}
    if counts != {tokens}:
        raise RuntimeError(f"expected {tokens} new tokens per answer, got {sorted(counts)}")
    return elapsed


def timed_load(folder: Path, device: str, quantization: str, args: argparse.Namespace) -> tuple[Any, float]:
    from config import Settings
    from runners.vlm import load_vlm

    settings = Settings(_env_file=None, device=device, vqa_max_pixels=args.max_pixels,  # type: ignore[call-arg,arg-type]
                        vqa_max_new_tokens=args.new_tokens, vqa_max_new_tokens_cap=max(2048, args.new_tokens))
    release()
    started = time.perf_counter()
    vlm = load_vlm(folder, settings, quantization=quantization)  # type: ignore[arg-type]
    sync()
    return vlm, time.perf_counter() - started


def bench_real_vlm(folder: Path, device: str, quantization: str, args: argparse.Namespace) -> dict[str, Any]:
    """One quantization's figures, or {"quantization", "error"} when it cannot load or fails."""
    try:
        vlm, load_s = timed_load(folder, device, quantization, args)
    except Exception as exc:  # noqa: BLE001 - reported in the table: the other quantizations still run
        traceback.print_exc()
        return {"quantization": quantization, "error": f"cannot load: {type(exc).__name__}: {exc}"}
    try:
        return {"quantization": quantization, "load_s": round(load_s, 2), **measure(vlm, args)}
    except Exception as exc:  # noqa: BLE001 - e.g. out of memory at batch 8: reported, the run goes on
        traceback.print_exc()
        return {"quantization": quantization,
                "error": f"failed while measuring: {type(exc).__name__}: {exc} (the cause is in the log)"}
    finally:
        del vlm
        release()


def measure(vlm: Any, args: argparse.Namespace) -> dict[str, Any]:
    memory = gpu_gib()
    image = photo(*PHOTO)
    convs = [describe_conversation(image) for _ in range(args.batch)]
    # also warms up kernels and the allocator
    prompt_tokens = first_error(vlm.generate_each(convs[:1], 1))[0].prompt_tokens
    first_error(vlm.generate_each(convs, 2))
    sizes = (1, args.batch)
    first = {b: median([timed_generate(vlm, convs[:b], 1) for _ in range(args.repeats)]) for b in sizes}
    full = {b: median([timed_generate(vlm, convs[:b], args.new_tokens) for _ in range(args.repeats)])
            for b in sizes}
    figures: dict[str, Any] = {"prompt_tokens": prompt_tokens, "gpu_allocated_gib": memory["allocated_gib"],
                               "dtype": str(vlm.runtime.model.dtype), "first_token_ms": round(1000 * first[1], 1)}
    for b in sizes:
        decode_s = max(full[b] - first[b], 1e-9)  # the other new_tokens - 1 steps of every row
        figures[f"first_token_ms_b{b}"] = round(1000 * first[b], 1)
        figures[f"decode_tok_s_b{b}"] = round(b * (args.new_tokens - 1) / decode_s, 1)
        figures[f"images_s_b{b}"] = round(b / full[b], 3)
    figures["gpu_peak_gib"] = gpu_gib()["peak_gib"]
    return figures


def rows_of(vlm: list[dict[str, Any]], clip: dict[str, Any], batch: int) -> list[tuple[str, str]]:
    def gib(v: float | None) -> str:
        return "n/a (CPU)" if v is None else f"{v:.2f} GiB"

    rows: list[tuple[str, str]] = []
    for r in vlm:
        q = r["quantization"]
        if "error" in r:
            rows.append((f"Qwen2.5-VL-3B {q}", r["error"].replace("|", "/").replace("\n", " ")))
            continue
        rows += [(f"Qwen2.5-VL-3B {q}: load time / GPU memory after load / peak",
                  f"{r['load_s']:.1f} s / {gib(r['gpu_allocated_gib'])} / {gib(r['gpu_peak_gib'])} ({r['dtype']})"),
                 (f"Qwen2.5-VL-3B {q}: first token, one 1-MP photo ({r['prompt_tokens']} prompt tokens)",
                  f"{r['first_token_ms']:.0f} ms"),
                 (f"Qwen2.5-VL-3B {q}: decode tokens/s, batch 1 / batch {batch}",
                  f"{r['decode_tok_s_b1']:.1f} / {r[f'decode_tok_s_b{batch}']:.1f}"),
                 (f"Qwen2.5-VL-3B {q}: describe images/s, batch 1 / batch {batch}",
                  f"{r['images_s_b1']:.2f} / {r[f'images_s_b{batch}']:.2f} "
                  f"({r[f'images_s_b{batch}'] / max(r['images_s_b1'], 1e-9):.1f}×)")]
    rows.append((f"Chinese-CLIP ViT-B/16 images/s (batch {clip['batch']}, {clip['images']} pre-decoded 224 px "
                 "images)", f"{clip['images_per_s']:.1f}"))
    return rows


def run(args: argparse.Namespace, device: str, where: str, quantizations: list[str]) -> None:
    with tempfile.TemporaryDirectory(prefix="real-size-", dir=args.work_dir) as tmp:
        started = time.perf_counter()
        qwen = build_real_qwen(Path(tmp) / "qwen", layers=args.layers, device=device)
        clip_folder = build_real_clip(Path(tmp) / "clip")
        print(f"built the models in {time.perf_counter() - started:.0f} s under {tmp}", flush=True)
        vlm = []
        for q in quantizations:
            vlm.append(bench_real_vlm(qwen, device, q, args))
            print(json.dumps(vlm[-1]), flush=True)
        clip = bench_clip(clip_folder, device, args.clip_images, args.clip_batch)
        print(json.dumps({"clip": clip}), flush=True)
    figures = {"device": where, "layers": args.layers, "max_pixels": args.max_pixels, "vlm": vlm, "clip": clip}
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    body = report(args, where, rows_of(vlm, clip, args.batch))
    print(body)
    if args.record:
        record("gpu-real-cpu-smoke" if args.cpu else "gpu-real", body)


def report(args: argparse.Namespace, where: str, rows: list[tuple[str, str]]) -> str:
    size = "real size" if args.layers is None else f"both Qwen towers shrunk to {args.layers} blocks: a smoke run"
    title = f"### Real size (GPU): {where}" if not args.cpu else f"### Real size, CPU smoke run: {where}"
    command = "bench/gpu.sh " + " ".join(sys.argv[1:])
    return f"""{title}

`{command}`: Qwen2.5-VL-3B and Chinese-CLIP ViT-B/16 built from their published configs with random weights
({size}), side by side in one process, through the classes the service runs (`runners.vlm.VisionLanguageModel`,
`runners.clip.ClipEncoder`). VQA input: one {PHOTO[0]}x{PHOTO[1]} photo per answer under
VQA_MAX_PIXELS={args.max_pixels}, the describe stage's prompt (`config.DEFAULT_DESCRIBE_PROMPT`; the test
tokenizer makes it longer than the real one would), exactly {args.new_tokens} new tokens per answer, greedy,
median of {args.repeats}. First token = processor + vision tower + prefill + 1 token; decode tokens/s =
rows × ({args.new_tokens} − 1) / (full answer − first token); describe images/s = rows / full answer.

{table(rows)}
"""
