"""The VLM on a CPU (issue "Real size on the boxes people own"): PyTorch fp32 / bf16 against OpenVINO int8 / int4,
side by side in one run, at real size (Qwen2.5-VL-3B's architecture from bench/_models.py, random weights: speed
and memory do not depend on their values), through the classes the service runs (runners/vlm*.py).

    .venv/bin/python bench/vlm_cpu.py [--folder /tmp/vlm-cpu-bench] [--layers N] [--no-record]

Per runtime, each in its own process: resident memory after load and at peak; prefill (the first token of a
streamed answer about a 1000x1000 photo + question); decode tokens/s (its other 31 tokens); the 32-token answer;
describe photos/min at batch 1 (prefill + 100 tokens, from the two measured figures) and, measured, at batch 2
with DESCRIBE_MAX_PIXELS=501760; resident memory split into the process's own (anonymous) pages and mapped
files (OpenVINO maps its weight files: those pages are the kernel's to drop). Per OpenVINO weight format:
export seconds, exporter peak memory, disk. Plus this CPU's instruction sets and measured limits (memory
bandwidth, fp32 matmul GFLOP/s) for the physical bounds.
Random weights never stop by themselves: end tokens are suppressed so every answer has its full length.
`--layers N` shrinks both towers to N blocks (a smoke run of this script; figures then are not real size).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench"), str(ROOT / "tests")]

from _machine import cpu_name, instruction_sets  # noqa: E402
from _models import build_real_qwen  # noqa: E402
from _report import record, table  # noqa: E402

from runners.device import native_bf16  # noqa: E402

RUNTIMES = ("torch-fp32", "torch-bf16", "openvino-int8", "openvino-int4")
QUESTION = "What is in this photo?"
DESCRIBE_TOKENS = 100  # about what DESCRIBE_PROMPT's JSON answer takes
DESCRIBE_PIXELS = 501760  # DESCRIBE_MAX_PIXELS measured: half the default budget (bench/describe_pixels.py)
DESCRIBE_BATCH = 2  # photos described together in that figure (more would take this 2-core run too long)
GIB = 1024**3


# ----------------------------------------------------------------------------------------- the machine


def bandwidth_gbs() -> float:
    import numpy as np

    data = np.ones(256 * 1024**2 // 8)  # 256 MiB: far past the caches
    out = np.empty_like(data)
    best = 0.0
    for _ in range(5):
        started = time.perf_counter()
        np.copyto(out, data)
        best = max(best, 2 * data.nbytes / (time.perf_counter() - started) / 1e9)  # read + write
    return best


def matmul_gflops(dtype_name: str, side: int = 1024) -> float:
    import torch

    dtype = getattr(torch, dtype_name)
    a, b = torch.randn(side, side, dtype=dtype), torch.randn(side, side, dtype=dtype)
    torch.matmul(a, b)
    started = time.perf_counter()
    for _ in range(3):
        torch.matmul(a, b)
    return 3 * 2 * side**3 / (time.perf_counter() - started) / 1e9


def openvino_matmul_gflops(int8_weights: bool, group_size: str = "0") -> float:
    """The CPU plugin's f32 FullyConnected at the language model's MLP shape (a 1257-token prefill): with f32 weights,
    or int8 weights with DYNAMIC_QUANTIZATION_GROUP_SIZE `group_size` (int8 activations where the CPU has int8
    dot products: VNNI / AMX; "0": off). The fastest matmul this CPU offers the prefill."""
    import numpy as np
    import openvino as ov
    import openvino.opset13 as ops

    rows, inner, outer = 1257, 2048, 11008
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((outer, inner), dtype=np.float32) * 0.02
    x = ops.parameter([rows, inner], np.float32)
    if int8_weights:
        scale = np.abs(weight).max(axis=1, keepdims=True) / 127
        codes = ops.constant(np.round(weight / scale).astype(np.int8))
        weights = ops.multiply(ops.convert(codes, np.float32), ops.constant(scale.astype(np.float32)))
    else:
        weights = ops.constant(weight)
    model = ov.Model([ops.matmul(x, weights, False, True)], [x])
    compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32",
                                                      "DYNAMIC_QUANTIZATION_GROUP_SIZE": group_size})
    request, data = compiled.create_infer_request(), rng.standard_normal((rows, inner), dtype=np.float32)
    request.infer({0: data})
    started = time.perf_counter()
    for _ in range(5):
        request.infer({0: data})
    return 5 * 2 * rows * inner * outer / (time.perf_counter() - started) / 1e9


# ----------------------------------------------------------------------------------- one runtime, measured


def photo(seed: int, side: int = 1000) -> Any:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (side, side, 3), dtype=np.uint8))


def rss_bytes(field: str = "VmRSS") -> int:
    """/proc/self/status's `field` in bytes: VmRSS (all resident), RssAnon (the process's own memory) or RssFile
    (mapped files such as the OpenVINO weights, which the kernel can drop and read again)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    return 0


class AnonPeak:
    """The largest RssAnon seen, polled every 0.2 s: the kernel keeps a high-water mark of VmRSS only, which
    counts the mapped weight files too."""

    def __init__(self) -> None:
        self.peak = rss_bytes("RssAnon")
        self.done = threading.Event()
        threading.Thread(target=self.poll, daemon=True).start()

    def poll(self) -> None:
        while not self.done.wait(0.2):
            self.peak = max(self.peak, rss_bytes("RssAnon"))


def load(runtime: str, model: Path, exports: Path) -> Any:
    """The runtime as the service builds it, with end tokens suppressed (random weights)."""
    from config import Settings
    from runners.vlm import VisionLanguageModel, load_vlm
    from runners.vlm.inputs import VlmInputs

    family, precision = runtime.split("-")
    settings = Settings(_env_file=None, vqa_model=str(model), device="cpu",  # type: ignore[call-arg]
                        vqa_torch_cpu_dtype="bf16" if precision == "bf16" else "fp32", vqa_openvino_precision="f32")
    if family == "torch":
        vlm = load_vlm(model, settings)
        vlm.runtime.model.generation_config.suppress_tokens = sorted(vlm.inputs.eos_token_ids)  # type: ignore[attr-defined]
        return vlm
    from runners.vlm.openvino_runtime import OpenVinoRuntime

    class EndlessRuntime(OpenVinoRuntime):
        def config(self, limit: int, sampling: Any) -> Any:
            config = super().config(limit, sampling)
            config.ignore_eos = True
            config.stop_token_ids = set()
            return config

    inputs = VlmInputs.load(model, settings)
    endless = EndlessRuntime.load(exports / precision, inputs, settings, precision)
    return VisionLanguageModel(inputs, endless, str(model))


def timed(vlm: Any, conversations: list[Any], tokens: int) -> tuple[float, Any]:
    from runners.vlm.inputs import Generation

    started = time.perf_counter()
    results = vlm.generate_each(conversations, tokens)
    seconds = time.perf_counter() - started
    assert all(isinstance(r, Generation) and r.completion_tokens == tokens for r in results), results
    return seconds, results


def measure(runtime: str, model: Path, exports: Path) -> dict[str, Any]:
    """One streamed 32-token answer after a one-token warm-up on another photo of the same size: the first
    token's arrival is the prefill, the other 31 the decode rate."""
    from runners.vlm.inputs import VQAItem, item_messages
    from runners.vlm.runtime import Sampling

    anon = AnonPeak()
    started = time.perf_counter()
    vlm = load(runtime, model, exports)
    loaded = {"load_s": time.perf_counter() - started, "rss_after_load": rss_bytes()}
    # First-call work (kernels for this shape, cache blocks) on another photo of the same size, not timed.
    timed(vlm, [item_messages(VQAItem(images=[photo(1)], question=QUESTION))], 1)
    item = vlm.prepare(item_messages(VQAItem(images=[photo(2)], question=QUESTION)))
    started, stamps = time.perf_counter(), []
    for new in vlm.runtime.stream(item, 32, Sampling(), None, threading.Event()):
        stamps += [time.perf_counter()] * len(new)
    assert len(stamps) == 32, len(stamps)
    prefill, decode = stamps[0] - started, 31 / (stamps[-1] - stamps[0])
    steady = {"rss_answered": rss_bytes(), "anon_answered": rss_bytes("RssAnon")}
    described = describe_batch(vlm)
    anon.done.set()
    return {**loaded, **steady, **described, "prompt_tokens": item.prompt_tokens, "prefill_s": prefill,
            "answer32_s": stamps[-1] - started, "decode_tps": decode,
            "describe_pps": 1 / (prefill + DESCRIBE_TOKENS / decode),
            "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "peak_anon": anon.peak}


def describe_batch(vlm: Any) -> dict[str, Any]:
    """DESCRIBE_BATCH photos described together at DESCRIBE_PIXELS (the describe stage's shrink of 1000x1000
    photos), DESCRIBE_TOKENS tokens each, timed whole: photos a minute."""
    from config import DEFAULT_DESCRIBE_PROMPT
    from core.images import fit_pixels
    from runners.vlm.inputs import VQAItem, item_messages

    photos = [fit_pixels(photo(10 + i), DESCRIBE_PIXELS) for i in range(DESCRIBE_BATCH)]
    conversations = [item_messages(VQAItem(images=[image], question=DEFAULT_DESCRIBE_PROMPT)) for image in photos]
    seconds, _ = timed(vlm, conversations, DESCRIBE_TOKENS)
    return {"describe_small_ppm": 60 * DESCRIBE_BATCH / seconds,
            "describe_small_tokens": vlm.prepare(conversations[0]).prompt_tokens}


# ------------------------------------------------------------------------------------------ the run


def tree_peak(proc: subprocess.Popen[Any]) -> list[int]:
    """Until the process ends, the largest high-water mark of resident memory (the kernel's VmHWM) of any process
    in its tree (optimum-cli runs the export in a child); in a one-item list."""
    import psutil

    peak = [0]

    def high_water(pid: int) -> int:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        return 0

    def poll() -> None:
        parent = psutil.Process(proc.pid)
        while proc.poll() is None:
            try:
                for member in [parent, *parent.children(recursive=True)]:
                    peak[0] = max(peak[0], high_water(member.pid))
            except (psutil.Error, OSError):
                pass
            time.sleep(0.5)

    threading.Thread(target=poll, daemon=True).start()
    return peak


def export(model: Path, out: Path, weights: str) -> dict[str, Any]:
    from config import Settings
    from runners.vlm.openvino_export import WORKER, exporter_python, folder_bytes
    from runners.vlm.windows import apply as apply_windows

    if not (out / "openvino_language_model.xml").is_file():
        python = exporter_python(Settings(_env_file=None))  # type: ignore[call-arg]
        started = time.perf_counter()
        proc = subprocess.Popen([str(python), str(WORKER), str(model), str(out), "--weights", weights],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        peak = tree_peak(proc)
        _, err = proc.communicate()
        assert proc.returncode == 0, err[-3000:]
        meta = {"export_s": time.perf_counter() - started, "export_peak": peak[0]}
        (out / "bench.json").write_text(json.dumps(meta))
    keep_exported_tower(out)
    apply_windows(out)  # as runners/vlm/openvino_export.py does after the exporter (a no-op once done)
    meta = json.loads((out / "bench.json").read_text())
    return {**meta, "disk": folder_bytes(out) - (out / "bench.json").stat().st_size}


def keep_exported_tower(out: Path) -> None:
    """A copy of the exporter's own vision tower beside the export (<out>-exported-tower), made before
    runners/vlm_windows rewrites it: bench/vlm_cpu_parts.py measures the two side by side."""
    from runners.vlm.windows import TOWER

    kept = out.with_name(f"{out.name}-exported-tower")
    if kept.is_dir() or not (out / TOWER).is_file():
        return
    temp = kept.with_name(kept.name + ".tmp")
    shutil.rmtree(temp, ignore_errors=True)
    temp.mkdir()
    for path in (out / TOWER, (out / TOWER).with_suffix(".bin")):
        shutil.copyfile(path, temp / path.name)
    temp.rename(kept)


def child(runtime: str, model: Path, exports: Path) -> dict[str, Any]:
    done = subprocess.run([sys.executable, __file__, "--measure", runtime, "--model", str(model), "--exports",
                           str(exports)], capture_output=True, text=True)
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"}
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def report(figures: dict[str, dict[str, Any]], machine: dict[str, Any], layers: int | None) -> str:
    base = figures["torch-fp32"]

    def cell(name: str, key: str, fmt: str, ratio: bool = False, lower: bool = True) -> str:
        value = figures[name].get(key)
        if value is None:
            return figures[name].get("error", "—") if key == "rss_after_load" else "—"
        text = fmt.format(value)
        if ratio and base.get(key) and name != "torch-fp32":
            factor = base[key] / value if lower else value / base[key]
            text += f" ({factor:.2f}x)"
        return text

    def pair(name: str, whole: str, own: str) -> str:
        if figures[name].get(whole) is None:
            return "—"
        return f"{figures[name][whole]:.2f} / {figures[name][own]:.2f}"

    names = [n for n in RUNTIMES if n in figures]
    rows = [
        ("resident memory after load, GiB", [cell(n, "rss_after_load", "{:.2f}") for n in names]),
        ("resident after the first answers, GiB: all / own (anonymous)",
         [pair(n, "rss_answered", "anon_answered") for n in names]),
        ("peak resident memory, GiB: all (VmHWM) / own (anonymous)", [pair(n, "peak_rss", "peak_anon") for n in names]),
        ("prompt tokens (1000x1000 photo + question)", [cell(n, "prompt_tokens", "{}") for n in names]),
        ("prefill s (first token)", [cell(n, "prefill_s", "{:.1f}", True) for n in names]),
        ("decode tokens/s", [cell(n, "decode_tps", "{:.2f}", True, lower=False) for n in names]),
        ("32-token answer s", [cell(n, "answer32_s", "{:.1f}", True) for n in names]),
        (f"describe photos/min (batch 1, 1 MP, {DESCRIBE_TOKENS} tokens: from prefill + decode)",
         [cell(n, "describe_ppm", "{:.2f}", True, lower=False) for n in names]),
        (f"describe photos/min (batch {DESCRIBE_BATCH}, DESCRIBE_MAX_PIXELS={DESCRIBE_PIXELS}, measured)",
         [cell(n, "describe_small_ppm", "{:.2f}", True, lower=False) for n in names]),
        ("prompt tokens at that budget", [cell(n, "describe_small_tokens", "{}") for n in names]),
        ("load s", [cell(n, "load_s", "{:.1f}") for n in names]),
        ("export s / exporter peak GiB / disk GiB", [figures[n].get("export", "—") for n in names]),
    ]
    head = "| real-size Qwen2.5-VL-3B, random weights | " + " | ".join(names) + " |"
    lines = [head, "|---" * (len(names) + 1) + "|"] + [f"| {label} | " + " | ".join(values) + " |"
                                                     for label, values in rows]
    lines += ["", targets_text(figures)]
    size = "real size" if layers is None else f"SMOKE RUN: {layers} blocks per tower, not real size"
    return (f"### VLM on a CPU ({size})\n\n`.venv/bin/python bench/vlm_cpu.py` — {machine['cpu']}, "
            f"{os.cpu_count()} cores, instruction sets: {machine['isa']}. Ratios against PyTorch fp32, measured side "
            f"by side in one run, each runtime in its own process. {machine['note']}\n\n" + "\n".join(lines) + "\n\n"
            + machine["limits"] + "\n")


def targets_text(figures: dict[str, dict[str, Any]]) -> str:
    """The issue's targets against torch fp32 at today's settings (batch 1, the default 1-MP budget)."""
    base = figures["torch-fp32"]
    said = []
    for name in ("openvino-int8", "openvino-int4"):
        f = figures.get(name, {})
        if "answer32_s" not in f or "answer32_s" not in base:
            continue
        said.append(f"{name}: own memory at peak {f['peak_anon']:.2f} GiB (target {5 if name.endswith('8') else 3.5}"
                    f" GiB); 32-token answer {base['answer32_s'] / f['answer32_s']:.2f}x (target 5x); describe at "
                    f"DESCRIBE_MAX_PIXELS={DESCRIBE_PIXELS}, batch {DESCRIBE_BATCH}: "
                    f"{f['describe_small_ppm'] / base['describe_ppm']:.2f}x torch fp32's default describe (target 4x)")
    return "Targets: " + "; ".join(said) + "." if said else ""


def limits_text(machine: dict[str, Any], figures: dict[str, dict[str, Any]], params: dict[str, int]) -> str:
    bw = machine["bandwidth_gbs"]
    lm, vision = params["lm"], params["vision"]
    tokens = figures["torch-fp32"].get("prompt_tokens") or 1300
    flops = 2 * lm * tokens + 2 * vision * tokens * 4  # each visual token is 4 patches through the tower
    bytes_per = {"torch-fp32": 4, "torch-bf16": 2, "openvino-int8": 1, "openvino-int4": 0.5}
    rows = []
    for name, per in bytes_per.items():
        if name not in figures or "decode_tps" not in figures[name]:
            continue
        weight_gb = (lm + params["embed"]) * per / 1e9
        rows.append((name, f"{weight_gb:.1f} GB a token read → at most {bw / weight_gb:.1f} tokens/s at "
                           f"{bw:.0f} GB/s; measured {figures[name]['decode_tps']:.2f}"))
    fp32, best = machine["fp32_gflops"], machine["openvino_fp32_gflops"]
    rows.append(("prefill", f"~{flops / 1e12:.1f} TFLOP for {tokens} prompt tokens; f32 matmul here: PyTorch "
                            f"{fp32:.0f} GFLOP/s, OpenVINO {best:.0f} (f32 weights), "
                            f"{machine['openvino_int8_gflops']:.0f} (int8 weights), "
                            f"{machine['openvino_int8_dq_gflops']:.0f} (int8 weights, int8 "
                            f"activations: DYNAMIC_QUANTIZATION_GROUP_SIZE=32) → at least "
                            f"{flops / max(fp32, best) / 1e9:.0f} s at the fastest (bf16 matmul here "
                            f"{machine['bf16_gflops']:.0f} GFLOP/s)"))
    base = figures["torch-fp32"].get("answer32_s")
    if base:
        rows.append(("5x a 32-token answer", f"{base / 5:.0f} s against PyTorch fp32's {base:.0f} s; the prefill's "
                                             f"FLOPs alone take {flops / max(fp32, best) / 1e9:.0f} s at the fastest "
                                             "matmul above"))
    return "Physical limits on this machine:\n\n" + table(rows, ("bound", "figure"))


def parameter_split(model: Path) -> dict[str, int]:
    import struct

    counts = {"lm": 0, "vision": 0, "embed": 0}
    for path in model.glob("*.safetensors"):
        with path.open("rb") as handle:
            header = json.loads(handle.read(struct.unpack("<Q", handle.read(8))[0]))
        for name, tensor in header.items():
            if name == "__metadata__":
                continue
            count = 1
            for dim in tensor["shape"]:
                count *= int(dim)
            key = "vision" if "visual" in name else "embed" if "embed_tokens" in name or "lm_head" in name else "lm"
            counts[key] += count
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--folder", type=Path, default=Path("/tmp/vlm-cpu-bench"))
    parser.add_argument("--layers", type=int)
    parser.add_argument("--no-record", action="store_true")
    parser.add_argument("--note", default="")
    parser.add_argument("--measure", choices=RUNTIMES)
    parser.add_argument("--model", type=Path)
    parser.add_argument("--exports", type=Path)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.model, args.exports)))
        return
    model = build_real_qwen(args.folder / f"model-{args.layers or 'real'}", args.layers, save_bf16=True)
    exports = args.folder / f"openvino-{args.layers or 'real'}"
    machine: dict[str, Any] = {"cpu": cpu_name(), "isa": instruction_sets(), "bandwidth_gbs": bandwidth_gbs(),
                               "fp32_gflops": matmul_gflops("float32"), "bf16_gflops": matmul_gflops("bfloat16", 256),
                               "openvino_fp32_gflops": openvino_matmul_gflops(False),
                               "openvino_int8_gflops": openvino_matmul_gflops(True),
                               "openvino_int8_dq_gflops": openvino_matmul_gflops(True, "32"),
                               "note": args.note}
    figures: dict[str, dict[str, Any]] = {}
    for runtime in RUNTIMES:
        if runtime == "torch-bf16" and not native_bf16():
            figures[runtime] = {"error": f"not run: no native bf16 here (bf16 matmul {machine['bf16_gflops']:.1f} "
                                         f"GFLOP/s against fp32 {machine['fp32_gflops']:.0f})"}
            continue
        made = ""
        if runtime.startswith("openvino"):
            weights = runtime.split("-")[1]
            e = export(model, exports / weights, weights)
            peak = f"{e['export_peak'] / GIB:.1f}" if e["export_peak"] else "n/a"  # 0: not measured
            made = f"{e['export_s']:.0f} / {peak} / {e['disk'] / GIB:.2f}"
        figures[runtime] = child(runtime, model, exports)
        for key in ("rss_after_load", "peak_rss", "peak_anon", "rss_answered", "anon_answered"):
            if key in figures[runtime]:
                figures[runtime][key] /= GIB
        if "describe_pps" in figures[runtime]:
            figures[runtime]["describe_ppm"] = figures[runtime]["describe_pps"] * 60
        if made:
            figures[runtime]["export"] = made
        print(runtime, figures[runtime], flush=True)
    machine["limits"] = limits_text(machine, figures, parameter_split(model))
    text = report(figures, machine, args.layers)
    print(text)
    if not args.no_record:
        record("vlm-cpu", text)


if __name__ == "__main__":
    main()
