"""Image decoding shared by the runners, the indexer and the service (a neutral module: no model, no HTTP)."""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageFile, ImageOps

# Refuse decompression bombs (PIL warns above this many pixels and raises above twice as many).
MAX_PIXELS = 16_000 * 16_000
# Images for CLIP (the indexer's library files and search uploads) decode JPEGs at a reduced scale no
# smaller than this: a 224 px model gains nothing from full-size decoding.
DRAFT_SIZE = 448
Image.MAX_IMAGE_PIXELS = MAX_PIXELS
ImageFile.LOAD_TRUNCATED_IMAGES = False


def to_rgb(image: Image.Image) -> Image.Image:
    """Flatten alpha on white; widen 16-bit and palette images; CMYK via PIL's conversion."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        levels = np.clip(np.asarray(image, dtype=np.int64), 0, 65535) >> 8
        image = Image.fromarray(levels.astype(np.uint8), mode="L")
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA"):
        background = Image.new("RGB", image.size, (255, 255, 255))
        background.paste(image, mask=image.getchannel("A"))
        return background
    return image.convert("RGB")


def open_image(data: bytes, draft_size: int | None = None) -> tuple[Image.Image, int, int]:
    """Decode to an upright RGB image (first frame of an animation). Returns (image, width, height)
    of the original. `draft_size` lets JPEG decode at a reduced scale no smaller than that size."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        source = Image.open(io.BytesIO(data))
        width, height = source.size
        orientation = source.getexif().get(0x0112, 1)
        if width * height > MAX_PIXELS:
            raise Image.DecompressionBombError(f"{width}x{height} pixels is over the limit")
        if draft_size and source.format == "JPEG":
            source.draft("RGB", (draft_size, draft_size))
        source.seek(0)
        source.load()
    image: Image.Image = ImageOps.exif_transpose(source)
    if image.mode != "RGB":
        image = to_rgb(image)
    if orientation in (5, 6, 7, 8):  # rotated by 90 degrees: report the upright size
        width, height = height, width
    return image, width, height


class BadImage(ValueError):
    """The bytes are not a usable image; the message says why, for a person."""


def load_image(data: bytes, draft_size: int | None = None) -> tuple[Image.Image, int, int]:
    """open_image, with every way it can fail turned into BadImage."""
    if not data:
        raise BadImage("empty file")
    try:
        return open_image(data, draft_size)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise BadImage(f"image too large: {exc}") from exc
    except (OSError, SyntaxError, ValueError, Image.UnidentifiedImageError) as exc:
        raise BadImage(f"not a readable image: {describe(exc)}") from exc


def describe(exc: BaseException) -> str:
    text = str(exc)
    if "truncated" in text.lower():
        return "truncated image file"
    if isinstance(exc, Image.UnidentifiedImageError):
        return "unknown image format"
    return text or type(exc).__name__
