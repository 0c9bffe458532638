"""What the VQA pixel budget saves on photos (issue 12, point 2).

    .venv/bin/python bench/vqa_pixels.py [--own-bound-max-mp 13]

A small Qwen2.5-VL built from config (bench/_models.py: random weights, 8 x 512 language model, the tiny
vision tower) with the REAL Qwen2.5-VL-3B image processor bounds (3,136 .. 12,845,056 pixels). For a
448x448 image, a 1-MP and a 12-MP photo: prompt tokens and prefill time (generate of one token) with
the default VQA_MAX_PIXELS (1280*28*28) and with VQA_MAX_PIXELS=0 (the model's own bound). Prefill at
the model's own bound is timed only up to --own-bound-max-mp megapixels (a 12-MP photo is ~15,000
visual tokens: minutes and many GB on a CPU); its token count is always shown. Writes the block
"vqa-pixels" of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from _models import build_qwen, with_real_bounds  # noqa: E402
from _report import record  # noqa: E402

from config import Settings  # noqa: E402

SIZES = {"448x448": (448, 448), "1 MP": (1155, 866), "12 MP": (4000, 3000)}


def photo(width: int, height: int) -> Image.Image:
    rng = np.random.default_rng(width)
    return Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8))


def prefill(model: object, image: Image.Image) -> tuple[int, float]:
    """(prompt tokens, seconds for a one-token answer)."""
    conversation = [{"role": "user", "content": [{"type": "image", "image": image},
                                                 {"type": "text", "text": "What is in the photo?"}]}]
    started = time.perf_counter()
    result = model.generate_each([conversation], 1)[0]  # type: ignore[attr-defined]
    return result.prompt_tokens, time.perf_counter() - started


def tokens_only(model: object, image: Image.Image) -> int:
    conversation = [{"role": "user", "content": [{"type": "image", "image": image},
                                                 {"type": "text", "text": "What is in the photo?"}]}]
    inputs = model.build_inputs([conversation])  # type: ignore[attr-defined]
    return int(inputs["attention_mask"][0].sum())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--own-bound-max-mp", type=float, default=13)
    args = parser.parse_args()
    from runners.vlm import load_vlm

    with tempfile.TemporaryDirectory() as tmp:
        folder = build_qwen(Path(tmp) / "qwen")
        with_real_bounds(folder)
        budget = load_vlm(folder, Settings(_env_file=None, device="cpu"))  # type: ignore[call-arg]
        own_settings = Settings(_env_file=None, device="cpu", vqa_max_pixels=0)  # type: ignore[call-arg]
        own = load_vlm(folder, own_settings)
        prefill(budget, photo(448, 448))  # warm up
        rows = []
        for name, (width, height) in SIZES.items():
            image = photo(width, height)
            tokens, seconds = prefill(budget, image)
            if width * height / 1e6 <= args.own_bound_max_mp:
                own_tokens, own_seconds = prefill(own, image)
                own_text = f"{own_tokens} tokens, {own_seconds * 1000:.0f} ms"
                ratio = f"prefill {own_seconds / seconds:.1f}x as long at the own bound"
            else:
                own_tokens = tokens_only(own, image)
                own_text = f"{own_tokens} tokens (prefill not timed)"
                ratio = f"{own_tokens / tokens:.1f}x fewer tokens"
            rows.append((name, f"{tokens} tokens, {seconds * 1000:.0f} ms", own_text, ratio))
            print(rows[-1])
    lines = ["| image | default budget (1280·28·28) | model's own bound (VQA_MAX_PIXELS=0) | budget vs own |",
             "|---|---|---|---|"] + [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    body = ("### VQA pixel budget: prompt tokens and prefill vs photo size (issue 12)\n\n"
            "`.venv/bin/python bench/vqa_pixels.py` (CPU; a small Qwen2.5-VL built from config, 8 x 512 language "
            "model and the tiny vision tower, with the real 3B processor's pixel bounds; prefill = generate of "
            "one token):\n\n" + "\n".join(lines))
    print(body)
    record("vqa-pixels", body)


if __name__ == "__main__":
    main()
