"""Where an OpenVINO prefill's time and memory go (issue "Real size on the boxes people own"), and what computing
the vision tower's window attention on windows (runners/vlm_windows) gains: the tower alone at three photo sizes,
then one 1-MP question through OpenVINO GenAI's continuous batching as the service runs it, split into the vision
encoding (`add_request`) and the language model's prefill (the pipeline's steps); each as the exporter wrote it
and with runners/vlm_windows applied, side by side.

    .venv/bin/python bench/vlm_cpu_parts.py [--export /tmp/vlm-cpu-bench/openvino-real/int8] [--note ...]

Needs the real-size int8 export bench/vlm_cpu.py makes, and the exporter's own tower it keeps beside it
(<export>-exported-tower, before runners/vlm_windows): the "as exported" variant is a temporary folder of links
to the export with that tower. Each part runs in its own process.
The vision tower (`openvino_vision_embeddings_merger_model`: Qwen2.5-VL's 32 ViT blocks) is fed the inputs GenAI
feeds it, at the patch count of each size; as exported, its 28 window-attention blocks get their windows as an
[N, N] mask, so they cost what full attention costs. The FLOPs columns: the tower's matmuls (2 x 0.63 G
parameters x N) and its attention both ways (as exported: 32 blocks over all N patches; with windows: 4 blocks
over all N, 28 in chunks of 128 queries over 256 keys). Memory: the process's own (anonymous) resident memory
after the run, the tower's int8 weights included.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from _machine import cpu_name, instruction_sets  # noqa: E402
from _report import record  # noqa: E402
from vlm_cpu import rss_bytes  # noqa: E402

SIDES = (504, 728, 1008)  # 0.25, 0.53 and 1.0 MP after Qwen's rounding to 28 px
VISION_PARAMS = 0.63e9  # the 32 blocks' linear layers (the tower's weights, less the patch embedding and merger)
HIDDEN, BLOCKS, WINDOW_BLOCKS, WINDOW = 1280, 32, 28, 64
PROMPT = ("<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>What is in this photo?<|im_end|>\n"
          "<|im_start|>assistant\n")


def own_gib() -> float:
    return rss_bytes("RssAnon") / 2**30


def tower(export: Path, side: int) -> dict[str, Any]:
    import numpy as np
    import openvino as ov

    model = ov.Core().compile_model(export / "openvino_vision_embeddings_merger_model.xml", "CPU",
                                    {"INFERENCE_PRECISION_HINT": "f32"})
    n = (side // 14) ** 2
    rng = np.random.default_rng(0)
    inputs = {"hidden_states": rng.standard_normal((n, HIDDEN), dtype=np.float32),
              "attention_mask": np.zeros((1, n, n), np.float32),
              "window_attention_mask": np.zeros((1, n, n), np.float32),
              "window_index": np.arange(n // 4, dtype=np.int64),
              "rotary_pos_emb": rng.standard_normal((n, 40), dtype=np.float32)}
    request = model.create_infer_request()
    request.infer(inputs)  # the first run allocates and repacks
    started = time.perf_counter()
    request.infer(inputs)
    return {"patches": n, "seconds": time.perf_counter() - started, "own_gib": own_gib()}


def question(export: Path) -> dict[str, Any]:
    import numpy as np
    import openvino as ov
    import openvino_genai

    scheduler = openvino_genai.SchedulerConfig()
    scheduler.cache_size = 1
    pipeline = openvino_genai.ContinuousBatchingPipeline(str(export), scheduler, "CPU",
                                                         {"INFERENCE_PRECISION_HINT": "f32"})
    image = ov.Tensor(np.random.default_rng(0).integers(0, 255, (1, 1000, 1000, 3), dtype=np.uint8))
    config = openvino_genai.GenerationConfig()
    config.max_new_tokens, config.apply_chat_template = 1, False
    figures: dict[str, Any] = {}
    for run in ("first", "second"):
        started = time.perf_counter()
        handle = pipeline.add_request(0 if run == "first" else 1, PROMPT, [image], config)  # kept: a dropped
        vision = time.perf_counter() - started  # handle cancels its request
        started = time.perf_counter()
        while pipeline.has_non_finished_requests():
            pipeline.step()
        assert handle.get_status() == openvino_genai.GenerationStatus.FINISHED, handle.get_status()
        figures[run] = {"vision_s": vision, "language_s": time.perf_counter() - started, "own_gib": own_gib()}
    return figures


def as_exported(export: Path, folder: Path) -> Path:
    """`export` with the exporter's own vision tower (kept by bench/vlm_cpu.py), in `folder`: links."""
    from runners.vlm.windows import TOWER

    kept = export.with_name(f"{export.name}-exported-tower")
    if not (kept / TOWER).is_file():
        raise SystemExit(f"{kept}: no exporter's tower kept beside the export (bench/vlm_cpu.py keeps it)")
    for path in export.iterdir():
        source = kept / path.name if path.name in (TOWER, Path(TOWER).with_suffix(".bin").name) else path
        (folder / path.name).symlink_to(source.resolve())
    return folder


def child(part: str, export: Path, side: int = 0) -> dict[str, Any]:
    done = subprocess.run([sys.executable, __file__, "--part", part, "--export", str(export), "--side", str(side)],
                          capture_output=True, text=True, check=True)
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def report(towers: dict[str, list[dict[str, Any]]], asked: dict[str, dict[str, Any]], export: Path, note: str
           ) -> str:
    rows = []
    for before, after in zip(towers["exported"], towers["windows"], strict=True):
        n = before["patches"]
        matmul = 2 * VISION_PARAMS * n
        computed = BLOCKS * 4 * n * n * HIDDEN
        needed = (BLOCKS - WINDOW_BLOCKS) * 4 * n * n * HIDDEN + WINDOW_BLOCKS * 4 * n * 2 * WINDOW * 2 * HIDDEN
        rows.append(f"| {n * 196 / 1e6:.2f} MP ({n} patches) | {before['seconds']:.1f} s | {after['seconds']:.1f} s "
                    f"({before['seconds'] / after['seconds']:.2f}x) | {matmul / 1e12:.1f} | {computed / 1e12:.1f} | "
                    f"{needed / 1e12:.2f} | {before['own_gib']:.2f} / {after['own_gib']:.2f} GiB |")
    lines = [f"| {name} | {a['second']['vision_s']:.1f} s | {a['second']['language_s']:.1f} s | "
             f"{a['second']['vision_s'] + a['second']['language_s']:.1f} s | {a['second']['own_gib']:.2f} GiB | "
             f"{a['first']['vision_s']:.1f} s + {a['first']['language_s']:.1f} s |"
             for name, a in (("as exported", asked["exported"]), ("windows (runners/vlm_windows)", asked["windows"]))]
    return "\n".join([
        "### Where an OpenVINO prefill goes (vision tower vs language model)",
        "",
        f"`.venv/bin/python bench/vlm_cpu_parts.py --export {export}` — {cpu_name()}, {os.cpu_count()} cores, "
        f"instruction sets {instruction_sets()}; {note}. The real-size int8 export of bench/vlm_cpu.py, f32 compute.",
        "",
        "| photo | vision tower as exported | with windows | matmul TFLOP | attention TFLOP as exported (every "
        "block over all patches) | attention TFLOP with windows (chunks of 128 queries over 256 keys) | own memory "
        "after it, as exported / with windows |",
        "|---|---|---|---|---|---|---|",
        *rows,
        "",
        "One 1000x1000 photo + question through GenAI's continuous batching (the second request; the first "
        "allocates):",
        "",
        "| vision tower | vision encoding | language-model prefill | first token | own memory | first request |",
        "|---|---|---|---|---|---|",
        *lines,
    ])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--export", type=Path, default=Path("/tmp/vlm-cpu-bench/openvino-real/int8"))
    parser.add_argument("--note", default="",
                        help="a remark printed with the figures (never overrides the quiet-machine check)")
    parser.add_argument("--no-record", action="store_true")
    parser.add_argument("--part", choices=("tower", "question"))
    parser.add_argument("--side", type=int, default=0)
    args = parser.parse_args()
    if args.part:
        print(json.dumps(tower(args.export, args.side) if args.part == "tower" else question(args.export)))
        return
    with tempfile.TemporaryDirectory() as temp:
        variants = {"exported": as_exported(args.export, Path(temp)), "windows": args.export}
        towers = {name: [child("tower", folder, side) for side in SIDES] for name, folder in variants.items()}
        print(towers, flush=True)
        asked = {name: child("question", folder) for name, folder in variants.items()}
        print(asked, flush=True)
    text = report(towers, asked, args.export, args.note)
    print(text)
    if not args.no_record:
        record("vlm-cpu-parts", text)


if __name__ == "__main__":
    main()
