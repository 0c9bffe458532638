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


# ---------------------------------------------------------------- described images (visible text)
# The tiny describer (tests/fixtures/make_tiny_describer.py) reads one of these words from a band at the bottom
# of the image. The words are pasted from glyph bitmaps committed in tests/fixtures/words/ (rendered once from
# WenQuanYi Zen Hei by `make_tiny_describer.py --render-words`), so drawing needs no system font.
WORDS: tuple[str, ...] = ("发票", "出口", "SALE", "TAXI")
WORD_FILES = {"发票": "fapiao", "出口": "chukou", "SALE": "sale", "TAXI": "taxi"}
WORDS_DIR = Path(__file__).resolve().parent / "fixtures" / "words"
BAND = 0.3  # the word band's share of the image height


def word_mask(word: str) -> Image.Image:
    """The committed glyph bitmap of `word`: mode L, ink 255 on 0, cropped to the ink."""
    if word not in WORD_FILES:
        raise ValueError(f"unknown word {word!r}; known: {', '.join(WORDS)}")
    with Image.open(WORDS_DIR / f"{WORD_FILES[word]}.png") as mask:
        return mask.convert("L")


def draw_described(shape: str, color: str, word: str = "", seed: int = 0, size: int = 128) -> Image.Image:
    """A `size`x`size` RGB image: draw_shape's `color` `shape` in the upper part and a pale band along the
    bottom holding `word` (one of WORDS) in large dark letters, or nothing when `word` is "". Position, scale
    and tints vary with `seed`; the same arguments always give the same pixels."""
    band = round(size * BAND)
    top = size - band
    picture = draw_shape(shape, color, top, seed)
    image = Image.new("RGB", (size, size), picture.getpixel((0, 0)))  # type: ignore[arg-type]
    rng = random.Random(f"described/{shape}/{color}/{word}/{size}/{seed}")
    image.paste(picture, (rng.randint(0, size - top), 0))
    paper = rng.randint(225, 255)
    image.paste(_jitter((paper, paper, paper), rng, 8), (0, top, size, size))
    if word:
        mask = word_mask(word)
        height = round(band * rng.uniform(0.7, 0.85))
        width = min(round(mask.width * height / mask.height), round(size * 0.9))
        mask = mask.resize((width, height), Image.Resampling.LANCZOS)
        ink = rng.randint(0, 50)
        x = rng.randint(2, size - width - 2)  # never touching the edge
        y = top + rng.randint(0, band - height)
        image.paste(_jitter((ink, ink, ink), rng, 10), (x, y, x + width, y + height), mask)
    return image
