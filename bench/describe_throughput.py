"""Describe throughput: photos/s of the indexer's describe stage, one photo per generate call vs batched
(issue 14). CPU, a small Qwen2.5-VL built from config (bench/_models.py: random weights, 8 x 512 language
model, the tiny vision tower), through runners.vlm.describe.Describer, the class `python -m indexer --describe`
runs, with DEFAULT_DESCRIBE_PROMPT.

    .venv/bin/python bench/describe_throughput.py [--photos 16] [--batch 8] [--new-tokens 32] [--no-record]

Random weights emit random tokens and could stop at any of them, so every answer is forced to exactly
--new-tokens tokens (min_new_tokens = max_new_tokens): batch 1 and batched decode the same count. Photos
are 1-MP noise images, scaled by the VQA pixel budget (VQA_MAX_PIXELS) as in the service. The real model at
real size on a GPU: `bench/gpu.sh --real-size` (its describe rows).
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

from _models import build_qwen  # noqa: E402
from _report import record, table  # noqa: E402

from config import DEFAULT_DESCRIBE_PROMPT, Settings  # noqa: E402


def photos(n: int) -> list[Image.Image]:
    rng = np.random.default_rng(3)
    return [Image.fromarray(rng.integers(0, 255, (866, 1155, 3), dtype=np.uint8)) for _ in range(n)]


def rate(describer: object, images: list[Image.Image], batch: int) -> float:
    """Photos per second describing `images` `batch` at a time (after one warm-up batch)."""
    describer.describe(images[:batch])  # type: ignore[attr-defined]
    started = time.perf_counter()
    for start in range(0, len(images), batch):
        answers = describer.describe(images[start:start + batch])  # type: ignore[attr-defined]
        assert len(answers) == len(images[start:start + batch])
    return len(images) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", type=int, default=16)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    from runners.vlm import load_vlm
    from runners.vlm.describe import Describer

    with tempfile.TemporaryDirectory() as tmp:
        folder = build_qwen(Path(tmp) / "qwen-small")
        settings = Settings(_env_file=None, vqa_model=str(folder), device="cpu",  # type: ignore[call-arg]
                            vqa_quantization="none")
        vlm = load_vlm(folder, settings)
        # random weights stop anywhere
        vlm.runtime.model.generation_config.min_new_tokens = args.new_tokens  # type: ignore[attr-defined]
        describer = Describer(vlm, DEFAULT_DESCRIBE_PROMPT, args.new_tokens)
        images = photos(args.photos)
        one = rate(describer, images, 1)
        batched = rate(describer, images, args.batch)
    rows = [("batch 1", f"{one:.2f} photos/s"), (f"batch {args.batch}", f"{batched:.2f} photos/s"),
            ("batched / one at a time", f"{batched / one:.2f}x")]
    body = ("### Describe throughput (issue 14, CPU)\n\n"
            f"`.venv/bin/python bench/describe_throughput.py --photos {args.photos} --batch {args.batch} "
            f"--new-tokens {args.new_tokens}`: runners.vlm.describe.Describer on a small Qwen2.5-VL built from config "
            f"(random weights, 8 x 512 language model), DEFAULT_DESCRIBE_PROMPT, 1-MP photos, exactly "
            f"{args.new_tokens} new tokens per answer, 2-core CPU.\n\n" + table(rows))
    print(body)
    if not args.no_record:
        record("describe_throughput", body)


if __name__ == "__main__":
    main()
