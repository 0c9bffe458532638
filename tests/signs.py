"""Photos of signs with Chinese and Latin text, drawn with Debian's CJK fonts, for the OCR tests and bench/ocr.py.

`sign(["金龙面馆", "Golden Dragon"])` is a pale photo-like background with some clutter and a sign holding those
lines; size, font, text height, rotation, contrast, blur and JPEG quality vary as asked. The fonts come from Debian
packages (scripts/setup.sh --dev installs fonts-wqy-zenhei; bench/ocr.py also uses fonts-noto-cjk and
fonts-arphic-ukai / fonts-arphic-uming when present).
"""

from __future__ import annotations

import io
import random
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter, ImageFont

FONTS = {
    "wqy-zenhei": Path("/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc"),
    "noto-sans-cjk": Path("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc"),
    "noto-serif-cjk": Path("/usr/share/fonts/opentype/noto/NotoSerifCJK-Regular.ttc"),
    "arphic-ukai": Path("/usr/share/fonts/truetype/arphic/ukai.ttc"),
    "arphic-uming": Path("/usr/share/fonts/truetype/arphic/uming.ttc"),
}
DEFAULT_FONT = "wqy-zenhei"


class MissingFont(RuntimeError):
    pass


def font(name: str, px: int) -> ImageFont.FreeTypeFont:
    path = FONTS[name]
    if not path.is_file():
        raise MissingFont(f"{path} is missing: install Debian's fonts ({'fonts-wqy-zenhei' if 'wqy' in name else name}"
                          "; scripts/setup.sh --dev installs fonts-wqy-zenhei)")
    return ImageFont.truetype(str(path), px)


def installed_fonts() -> list[str]:
    return [name for name, path in FONTS.items() if path.is_file()]


def sign(lines: list[str], size: tuple[int, int] = (1000, 750), text_px: int = 56, font_name: str = DEFAULT_FONT,
         angle: float = 0.0, contrast: float = 1.0, blur: float = 0.0, seed: int = 0,
         place: tuple[float, float] | None = None) -> Image.Image:
    """A photo with a sign holding `lines`, `text_px` high, rotated by `angle` degrees (counter-clockwise), its
    ink-to-board contrast scaled by `contrast` (1: dark on light, 0.2: faint), blurred by `blur` px; `place` is the
    sign's centre as fractions of the photo (default: seed-dependent)."""
    rng = random.Random(seed)
    width, height = size
    base = tuple(rng.randint(150, 210) for _ in range(3))
    photo = Image.new("RGB", size, base)  # type: ignore[arg-type]
    draw = ImageDraw.Draw(photo)
    for _ in range(8):  # clutter: boxes and blobs in other shades, never text
        x, y = rng.randint(0, width), rng.randint(0, height)
        r = rng.randint(max(4, width // 40), max(8, width // 10))
        shade = tuple(rng.randint(60, 240) for _ in range(3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x - r, y - r, x + r, y + r), fill=shade)
    face = font(font_name, text_px)
    boxes = [draw.textbbox((0, 0), line, font=face) for line in lines]
    text_w = int(max(b[2] - b[0] for b in boxes))
    gap = text_px // 3
    text_h = int(sum(b[3] - b[1] for b in boxes)) + gap * (len(lines) - 1)
    pad = text_px // 2
    board_color = (245, 243, 235)
    ink = tuple(int(245 - (245 - c) * contrast) for c in (25, 25, 35))
    board = Image.new("RGBA", (text_w + 2 * pad, text_h + 2 * pad), (*board_color, 255))
    board_draw = ImageDraw.Draw(board)
    y = pad
    for line, box in zip(lines, boxes, strict=True):
        board_draw.text((pad - box[0], y - box[1]), line, font=face, fill=(*ink, 255))
        y += int(box[3] - box[1]) + gap
    if angle:
        board = board.rotate(angle, expand=True, resample=Image.Resampling.BICUBIC)
    cx, cy = place if place is not None else (rng.uniform(0.35, 0.65), rng.uniform(0.35, 0.65))
    left = int(min(max(0, cx * width - board.width / 2), max(0, width - board.width)))
    top = int(min(max(0, cy * height - board.height / 2), max(0, height - board.height)))
    photo.paste(board, (left, top), board)
    if blur:
        photo = photo.filter(ImageFilter.GaussianBlur(blur))
    return photo


def jpeg(image: Image.Image, quality: int = 90) -> bytes:
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=quality)
    return out.getvalue()


def png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()
