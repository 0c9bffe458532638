"""Follow-up questions (issue 29): what the second question about a photo costs against the first, at real size
(Qwen2.5-VL-3B's architecture from bench/_models.py, random weights: speed does not depend on their values),
through the classes the service runs (runners/vlm/*.py).

    .venv/bin/python bench/vlm_followup.py [--folder /tmp/vlm-cpu-bench] [--layers N] [--side 1000]
                                           [--runtimes torch-fp32,torch-fp32-off,openvino-int8] [--no-record]

Per runtime, each in its own process: the first and a second (other) question about one photo: time to the first
token and to a 32-token answer; a three-turn OpenAI-style chat that resends the photo every turn (each turn's
32-token answer goes into the next), against one turn; `/ask` asked twice (reworded) over the same two photos;
the follow-up caches' bytes against their settings. `torch-fp32` keeps the caches (VQA_VISION_CACHE_MB,
VQA_PREFIX_CACHE_MB defaults), `torch-fp32-off` turns both off (the baseline), `openvino-int8` has none
(runners/vlm/openvino_runtime.py says why). Targets: a second question's first token >= 5x faster than the
first's; a three-turn chat <= 1.6x one turn; cache memory within its settings.
`--layers N` shrinks both towers to N blocks and `--side` the photo (a smoke run: figures then are not real size).
Random weights never stop by themselves: end tokens are suppressed so every answer has its full length.
"""

from __future__ import annotations

import argparse
import json
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
from _report import record  # noqa: E402
from vlm_cpu import export, load, photo  # noqa: E402

RUNTIMES = ("torch-fp32", "torch-fp32-off", "openvino-int8")
FIRST, SECOND, THIRD = "What is in this photo?", "What colours stand out?", "Is it taken indoors?"
TOKENS = 32
MIB = 1024 * 1024


# ----------------------------------------------------------------------------------- one runtime, measured


def timed_answer(vlm: Any, conversation: list[Any]) -> tuple[float, float, str]:
    """(seconds to the first token, seconds to the whole TOKENS-token answer, its text), timed from the
    conversation as the runner gets it (preparing included)."""
    from runners.vlm.runtime import Sampling

    started = time.perf_counter()
    item = vlm.prepare(conversation)
    stamps: list[float] = []
    tokens: list[int] = []
    for new in vlm.runtime.stream(item, TOKENS, Sampling(), None, threading.Event()):
        stamps += [time.perf_counter()] * len(new)
        tokens += new
    assert len(stamps) == TOKENS, len(stamps)
    return stamps[0] - started, stamps[-1] - started, vlm.inputs.decode(tokens)


def question(image: Any, text: str) -> list[Any]:
    from runners.vlm.inputs import VQAItem, item_messages

    return item_messages(VQAItem(images=[image], question=text))


def chat_turns(vlm: Any, image: Any) -> dict[str, float]:
    """Three turns, the whole conversation (photo included) resent each turn, as an OpenAI client does."""
    conversation: list[Any] = []
    seconds = []
    for turn, text in enumerate((FIRST, SECOND, THIRD)):
        parts: list[dict[str, Any]] = [{"type": "text", "text": text}]
        if turn == 0:
            parts.insert(0, {"type": "image", "image": image})
        conversation.append({"role": "user", "content": parts})
        _, whole, reply = timed_answer(vlm, conversation)
        conversation.append({"role": "assistant", "content": reply})
        seconds.append(whole)
    return {"chat_turn1_s": seconds[0], "chat3_s": sum(seconds), "chat3_over_one": sum(seconds) / seconds[0]}


def ask_twice(vlm: Any, photos: list[Any]) -> dict[str, float]:
    """/ask's prompt (api/asking.py: numbered photos, then the instruction and question) asked twice, reworded."""
    seconds = []
    for text in ("Which photo shows a beach?", "Is any of these photos of a beach?"):
        content: list[dict[str, Any]] = []
        for number, image in enumerate(photos, 1):
            content += [{"type": "text", "text": f"Photo {number}:"}, {"type": "image", "image": image}]
        content.append({"type": "text", "text": f"Answer from the photos above. {text}"})
        seconds.append(timed_answer(vlm, [{"role": "user", "content": content}])[1])
    return {"ask1_s": seconds[0], "ask2_s": seconds[1]}


def measure(runtime: str, model: Path, exports: Path, side: int) -> dict[str, Any]:
    vlm = load(runtime.removesuffix("-off"), model, exports)
    reuse = getattr(vlm.runtime, "reuse", None)
    if runtime.endswith("-off") and reuse is not None:
        reuse.vision.limit = reuse.prefixes.limit = 0  # both caches off: every question pays in full
    timed_answer(vlm, question(photo(90, min(side, 448)), FIRST))  # first-call work (allocations, kernels), not timed
    image = photo(91, side)
    first_token, first_whole, _ = timed_answer(vlm, question(image, FIRST))
    second_token, second_whole, _ = timed_answer(vlm, question(image, SECOND))
    figures = {"prompt_tokens": vlm.prepare(question(image, FIRST)).prompt_tokens,
               "first_ttft_s": first_token, "first_answer_s": first_whole,
               "second_ttft_s": second_token, "second_answer_s": second_whole,
               "ttft_speedup": first_token / second_token,
               **chat_turns(vlm, photo(92, side)), **ask_twice(vlm, [photo(93, side), photo(94, side)])}
    for name, cache in vlm.caches().items():
        figures[f"{name}_cache_mib"] = cache["bytes"] / MIB
        figures[f"{name}_limit_mib"] = cache["limit_bytes"] / MIB
    return figures


def child(runtime: str, model: Path, exports: Path, side: int) -> dict[str, Any]:
    done = subprocess.run([sys.executable, __file__, "--measure", runtime, "--model", str(model), "--exports",
                           str(exports), "--side", str(side)], capture_output=True, text=True)
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"}
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


# ------------------------------------------------------------------------------------------ the run


def report(figures: dict[str, dict[str, Any]], layers: int | None, side: int) -> str:
    lines = [f"| figure | {' | '.join(figures)} |", "|---" * (len(figures) + 1) + "|"]
    keys = [("prompt tokens (first question)", "prompt_tokens", "{:.0f}"),
            ("first question: first token, s", "first_ttft_s", "{:.2f}"),
            ("first question: 32-token answer, s", "first_answer_s", "{:.2f}"),
            ("second question: first token, s", "second_ttft_s", "{:.2f}"),
            ("second question: 32-token answer, s", "second_answer_s", "{:.2f}"),
            ("first token, first / second (target >= 5)", "ttft_speedup", "{:.1f}x"),
            ("chat: one turn, s", "chat_turn1_s", "{:.2f}"),
            ("chat: three turns, s", "chat3_s", "{:.2f}"),
            ("chat: three turns / one (target <= 1.6)", "chat3_over_one", "{:.2f}x"),
            ("/ask over 2 photos: first, s", "ask1_s", "{:.2f}"),
            ("/ask over 2 photos: asked again, s", "ask2_s", "{:.2f}"),
            ("vision cache: MiB held / setting", "vision_cache_mib", "{:.1f}"),
            ("prefix cache: MiB held / setting", "prefix_cache_mib", "{:.1f}")]
    for label, key, fmt in keys:
        cells = []
        for values in figures.values():
            if key not in values:
                cells.append(values.get("error", "—") if key == "prompt_tokens" else "—")
                continue
            cell = fmt.format(values[key])
            limit = key.replace("_cache_mib", "_limit_mib")
            cells.append(f"{cell} / {values[limit]:.0f}" if limit != key and limit in values else cell)
        lines.append(f"| {label} | {' | '.join(cells)} |")
    size = "real size" if layers is None else f"{layers} layer(s) per tower: a smoke run, not real size"
    command = " ".join(["`.venv/bin/python bench/vlm_followup.py", f"--runtimes {','.join(figures)}",
                        *([f"--layers {layers}"] if layers is not None else []), f"--side {side}`"])
    head = (f"### Follow-up questions (issue 29)\n\n{command} on {cpu_name()} ({instruction_sets()}), each runtime in "
            f"a process of its own: Qwen2.5-VL-3B architecture, random weights ({size}); a {side}x{side} photo; "
            f"{TOKENS}-token answers. PyTorch (f32) keeps the vision and prefix caches at their default settings; "
            "OpenVINO (int8 weights, f32 arithmetic) keeps neither (docs/cpu.md says why).")
    return head + "\n\n" + "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--folder", type=Path, default=Path("/tmp/vlm-cpu-bench"))
    parser.add_argument("--layers", type=int)
    parser.add_argument("--side", type=int, default=1000)
    parser.add_argument("--runtimes", default=",".join(RUNTIMES))
    parser.add_argument("--no-record", action="store_true")
    parser.add_argument("--measure", choices=RUNTIMES)
    parser.add_argument("--model", type=Path)
    parser.add_argument("--exports", type=Path)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.model, args.exports, args.side)))
        return
    model = build_real_qwen(args.folder / f"model-{args.layers or 'real'}", args.layers, save_bf16=True)
    exports = args.folder / f"openvino-{args.layers or 'real'}"
    figures: dict[str, dict[str, Any]] = {}
    for runtime in args.runtimes.split(","):
        if runtime.startswith("openvino"):
            weights = runtime.split("-")[1]
            export(model, exports / weights, weights)
        figures[runtime] = child(runtime, model, exports, args.side)
        print(runtime, figures[runtime], flush=True)
    text = report(figures, args.layers, args.side)
    print(text)
    if not args.no_record:
        record("vlm-followup", text)


if __name__ == "__main__":
    main()
