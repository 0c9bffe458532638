"""Write a small sample photo library: coloured shapes the tiny test models know, to try the service out of the box.

    .venv/bin/python scripts/sample_library.py                # into IMAGE_LIBRARY (default ./images)
    .venv/bin/python scripts/sample_library.py /tmp/samples   # into another folder
    .venv/bin/python scripts/sample_library.py --if-tiny      # what scripts/serve.sh runs

The photos are drawn by tests/shapes.py, the code the tiny models were trained on
(tests/fixtures/make_tiny_clip.py, make_tiny_qwen.py, make_tiny_describer.py): two of each of 18 classes (a
red, green, blue, yellow, purple or orange circle, square or triangle, 64 to 96 px, some in a colour folder),
and under signs/ a shape above a word band (发票, 出口, SALE, TAXI) that the tiny describer reads. Searching
"红色的圆形" or "a red circle" finds the red circles; asking "What color is the shape?" about one answers "red".

It writes only into a folder that is missing or empty, so a real library is never touched. --if-tiny does
nothing (exit 0) unless CLIP_MODEL is the tiny test model and the library folder is missing or empty: the
real models know nothing of these shapes, so a real setup gets no sample photos unasked.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for entry in (ROOT, ROOT / "tests"):  # config, and tests/shapes.py: the drawing code the tiny models learnt
    if str(entry) not in sys.path:
        sys.path.insert(0, str(entry))

from shapes import WORDS, draw_described, make_library  # noqa: E402

from config import get_settings  # noqa: E402

TINY_CLIP = ROOT / "tests" / "fixtures" / "tiny_clip"
PER_CLASS = 2
SIGNS = (("circle", "red"), ("square", "blue"), ("triangle", "green"), ("circle", "yellow"))


def is_empty(folder: Path) -> bool:
    """Missing, or a folder with nothing in it (not even hidden files)."""
    return not folder.exists() or (folder.is_dir() and not any(folder.iterdir()))


def write(folder: Path) -> dict[str, tuple[str, str]]:
    """Write the sample photos into `folder` (missing or empty). Returns {relative path: (shape, colour)}."""
    if not is_empty(folder):
        raise FileExistsError(f"{folder} is not empty: a sample library is written only into a new or empty folder")
    photos = make_library(folder, n_per_class=PER_CLASS, seed=0)
    (folder / "signs").mkdir()
    for number, ((shape, color), word) in enumerate(zip(SIGNS, WORDS, strict=True)):
        rel = f"signs/{color}_{shape}_{number}.png"
        draw_described(shape, color, word, seed=number).save(folder / rel)
        photos[rel] = (shape, color)
    return photos


def uses_tiny_clip(clip_model: str) -> bool:
    """CLIP_MODEL names the committed tiny CLIP (relative to the project root or absolute)."""
    path = Path(clip_model)
    return (path if path.is_absolute() else ROOT / path).resolve() == TINY_CLIP.resolve()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", nargs="?", type=Path, help="where to write (default: IMAGE_LIBRARY)")
    parser.add_argument("--if-tiny", action="store_true",
                        help="only when CLIP_MODEL is the tiny test model and the folder is missing or empty")
    args = parser.parse_args(argv)
    settings = get_settings()
    folder = args.folder or Path(settings.image_library)
    if args.if_tiny and not (uses_tiny_clip(settings.clip_model) and is_empty(folder)):
        return 0
    try:
        photos = write(folder)
    except FileExistsError as exc:
        print(f"error: {exc}; name another folder (or set IMAGE_LIBRARY)", file=sys.stderr)
        return 1
    print(f"wrote {len(photos)} sample photos (coloured shapes for the tiny models) into {folder}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
