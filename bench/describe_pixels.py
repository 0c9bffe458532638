"""What a smaller describe pixel budget (DESCRIBE_MAX_PIXELS) costs in reading (issue "Real size on the boxes
people own"): the trained tiny describer (tests/fixtures/tiny_describer) describes the same fresh images at
shares of its pixel bound, through the describe stage's own code (indexer.describe_stage.shrink, then
runners.vlm.describe.Describer on runners.vlm.VisionLanguageModel, CPU, greedy).

    .venv/bin/python bench/describe_pixels.py [--photos 120] [--no-record]

The tiny describer was trained on 100..160 px images and its processor's bound is 19,600 pixels (25 visual
tokens); the service's default VQA_MAX_PIXELS is the same share of Qwen2.5-VL-3B's visual tokens (1,280). A share
s of that bound here stands for DESCRIBE_MAX_PIXELS = s x 1003520 on the real model: 0.25 is 250880 (320 visual
tokens). The figures are rates over the same images: the word in the picture read right (visible_text), the
colour, the shape, the whole JSON answer. Prefill time on a CPU grows at least in proportion to the visual
tokens (bench/vlm_cpu.py measures it at real size). Writes the block "describe-pixels" of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench"), str(ROOT / "tests")]

from _report import record  # noqa: E402
from fixtures.make_tiny_describer import random_word  # noqa: E402
from shapes import COLOR_ZH, COLORS, SHAPES, caption, draw_described  # noqa: E402

SHARES = (1.0, 0.5, 0.35, 0.25)  # below ~0.25 the processor's own minimum (4 visual tokens) takes over
MODEL_BOUND = 19600  # the tiny describer's processor: size.longest_edge
REAL_DEFAULT = 1280 * 28 * 28  # VQA_MAX_PIXELS, the share 1.0 on the real model


def cases(n: int, seed: int) -> list[tuple[str, str, str, Any]]:
    """Fresh images (seeds the training never drew), sizes as in the describer's own measurement."""
    rng = random.Random(seed)
    found = []
    for _ in range(n):
        shape, color, word = rng.choice(SHAPES), rng.choice(list(COLORS)), random_word(rng)
        found.append((shape, color, word, draw_described(shape, color, word, 3 * 10**9 + rng.randrange(10**6),
                                                         rng.choice((112, 128, 144)))))
    return found


def rates(describer: Any, share: float, photos: list[tuple[str, str, str, Any]]) -> dict[str, float]:
    from core.images import fit_pixels
    from runners.vlm.describe import Description

    budget = int(MODEL_BOUND * share)
    images = [fit_pixels(image, budget) for *_, image in photos]
    tokens = [describer.vlm.prepare(item).prompt_tokens for item in token_probes(images)]
    started = time.perf_counter()
    results: list[Description | str] = []
    for start in range(0, len(images), 16):
        results += describer.describe(images[start:start + 16])
    seconds = time.perf_counter() - started
    said = [r if isinstance(r, Description) else Description("") for r in results]
    n = len(photos)
    worded = [i for i, (_, _, word, _) in enumerate(photos) if word]
    return {
        "tokens": sum(tokens) / n,
        "word": sum(said[i].visible_text == photos[i][2] for i in worded) / len(worded),
        "no_word": sum(said[i].visible_text == "" for i in range(n) if i not in worded) / (n - len(worded)),
        "colour": sum(s.tags[:1] == [COLOR_ZH[c]] for s, (_, c, _, _) in zip(said, photos, strict=True)) / n,
        "shape": sum(s.description == caption(sh, c) for s, (sh, c, _, _) in zip(said, photos, strict=True)) / n,
        "exact": sum(s.description == caption(sh, c) and s.visible_text == w and len(s.tags) == 2
                     for s, (sh, c, w, _) in zip(said, photos, strict=True)) / n,
        "seconds": seconds,
    }


def token_probes(images: list[Any]) -> list[Any]:
    """Prompt conversations (question + image) as the describer builds them, to count their tokens."""
    from config import DEFAULT_DESCRIBE_PROMPT
    from runners.vlm.inputs import VQAItem, item_messages

    return [item_messages(VQAItem(images=[image], question=DEFAULT_DESCRIBE_PROMPT)) for image in images]


def report(figures: dict[float, dict[str, float]], n: int) -> str:
    lines = ["| share of the pixel bound (real model: DESCRIBE_MAX_PIXELS) | prompt tokens (tiny) | word read right "
             "| no word: empty | colour | shape | whole description | seconds |", "|---|---|---|---|---|---|---|---|"]
    for share, f in figures.items():
        real = "default (VQA_MAX_PIXELS)" if share == 1.0 else str(int(REAL_DEFAULT * share))
        lines.append(f"| {share:g} ({real}) | {f['tokens']:.1f} | {f['word']:.2f} | {f['no_word']:.2f} | "
                     f"{f['colour']:.2f} | {f['shape']:.2f} | {f['exact']:.2f} | {f['seconds']:.1f} |")
    return ("### Describe pixel budget: what reading costs (tiny describer)\n\n"
            f"`.venv/bin/python bench/describe_pixels.py --photos {n}` — the trained tiny describer, the same {n} "
            "fresh images at each share of its pixel bound (19,600 px), shrunk by the describe stage's own code; "
            "rates over those images. The real model's figure in brackets is the same share of its default "
            "budget. The tiny model was trained at full share only, so this is what a model that never saw "
            "smaller images loses: a bound on the risk, not a prediction of Qwen2.5-VL-3B's loss.\n\n"
            + "\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", type=int, default=120)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()

    from config import DEFAULT_DESCRIBE_PROMPT, Settings
    from runners.vlm import load_vlm
    from runners.vlm.describe import Describer

    folder = ROOT / "tests" / "fixtures" / "tiny_describer"
    vlm = load_vlm(folder, Settings(_env_file=None, vqa_model=str(folder), device="cpu"))  # type: ignore[call-arg]
    describer = Describer(vlm, DEFAULT_DESCRIBE_PROMPT, max_new_tokens=64)
    photos = cases(args.photos, args.seed)
    figures = {share: rates(describer, share, photos) for share in SHARES}
    text = report(figures, args.photos)
    print(text)
    if not args.no_record:
        record("describe-pixels", text)


if __name__ == "__main__":
    main()
