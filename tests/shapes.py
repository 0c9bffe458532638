"""Synthetic images of coloured shapes with Chinese and English captions.

Used to train the tiny CLIP fixture (tests/fixtures/make_tiny_clip.py) and by tests that need
images whose content is known: `draw_shape("circle", "red", seed=3)` is a red circle at a
seed-dependent position and scale on a seed-dependent pale background.
"""

from __future__ import annotations

import math
import random
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter

SHAPES: tuple[str, ...] = ("circle", "square", "triangle")

# Saturated, well separated hues; a pale low-saturation background never looks like one of them.
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (215, 25, 30),
    "green": (30, 160, 45),
    "blue": (30, 70, 215),
    "yellow": (240, 210, 20),
    "purple": (135, 40, 170),
    "orange": (245, 130, 20),
}

SHAPE_ZH = {"circle": "圆形", "square": "正方形", "triangle": "三角形"}
COLOR_ZH = {"red": "红色", "green": "绿色", "blue": "蓝色", "yellow": "黄色", "purple": "紫色", "orange": "橙色"}

# Training-time paraphrases; `caption()` is always the first one.
ZH_TEMPLATES = ("{c}的{s}", "一个{c}的{s}", "{c}{s}", "一张{c}的{s}的图片", "图片里有一个{c}的{s}")
EN_TEMPLATES = ("a {c} {s}", "a photo of a {c} {s}", "{c} {s}", "an image with a {c} {s}")

CLASSES: tuple[tuple[str, str], ...] = tuple((s, c) for c in COLORS for s in SHAPES)


def caption(shape: str, color: str, lang: str = "zh") -> str:
    """Canonical caption: caption("circle", "red") == "红色的圆形"; lang="en" gives "a red circle"."""
    return captions(shape, color, lang)[0]


def captions(shape: str, color: str, lang: str = "zh") -> list[str]:
    """All caption paraphrases of one class in one language ("zh" or "en")."""
    if shape not in SHAPES or color not in COLORS:
        raise ValueError(f"unknown shape/colour {shape!r}/{color!r}")
    if lang == "zh":
        return [t.format(c=COLOR_ZH[color], s=SHAPE_ZH[shape]) for t in ZH_TEMPLATES]
    if lang == "en":
        return [t.format(c=color, s=shape) for t in EN_TEMPLATES]
    raise ValueError(f"unknown language {lang!r}")


def _jitter(rgb: tuple[int, int, int], rng: random.Random, amount: int) -> tuple[int, int, int]:
    r, g, b = (min(255, max(0, v + rng.randint(-amount, amount))) for v in rgb)
    return (r, g, b)


def _background(rng: random.Random) -> tuple[int, int, int]:
    grey = rng.randint(185, 250)
    return _jitter((grey, grey, grey), rng, 12)


def draw_shape(shape: str, color: str, size: int = 64, seed: int = 0) -> Image.Image:
    """An RGB `size`x`size` image of one `color` `shape`; position, scale, tint, rotation and
    background vary with `seed` (the same arguments always give the same pixels)."""
    if shape not in SHAPES or color not in COLORS:
        raise ValueError(f"unknown shape/colour {shape!r}/{color!r}")
    rng = random.Random(f"{shape}/{color}/{size}/{seed}")
    image = Image.new("RGB", (size, size), _background(rng))
    draw = ImageDraw.Draw(image)
    fill = _jitter(COLORS[color], rng, 18)
    radius = size * rng.uniform(0.2, 0.34)  # a circle's radius; polygons get a similar area
    # Polygon vertices lie on a circle of radius `outer` (a square's half-side is outer/sqrt(2)).
    outer = radius * {"circle": 1.0, "square": 1.25, "triangle": 1.3}[shape]
    cx = rng.uniform(outer + 1, size - outer - 1)
    cy = rng.uniform(outer + 1, size - outer - 1)
    if shape == "circle":
        draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=fill)
    else:
        sides, start = (4, math.pi / 4) if shape == "square" else (3, -math.pi / 2)
        start += math.radians(rng.uniform(-12, 12))
        angles = [start + 2 * math.pi * k / sides for k in range(sides)]
        points = [(cx + outer * math.cos(a), cy + outer * math.sin(a)) for a in angles]
        draw.polygon(points, fill=fill)
    if rng.random() < 0.3:
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 0.8)))
    return image


def make_library(folder: str | Path, n_per_class: int = 2, seed: int = 0) -> dict[str, tuple[str, str]]:
    """Write `n_per_class` images of every (shape, colour) class under `folder`: a mix of .png and
    .jpg, some at the top level and some in colour subfolders. Returns {posix rel_path: (shape, colour)}."""
    root = Path(folder)
    rng = random.Random(seed)
    library: dict[str, tuple[str, str]] = {}
    for shape, color in CLASSES:
        for i in range(n_per_class):
            image_seed = rng.randrange(2**31)
            ext = "jpg" if rng.random() < 0.5 else "png"
            sub = f"{color}/" if rng.random() < 0.5 else ""
            rel = f"{sub}{shape}_{color}_{i}.{ext}"
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            image = draw_shape(shape, color, size=rng.choice((64, 80, 96)), seed=image_seed)
            if ext == "jpg":
                image.save(path, quality=92)
            else:
                image.save(path)
            library[rel] = (shape, color)
    return library
