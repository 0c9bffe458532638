"""Image decoding shared by the runners, the indexer and the service (a neutral module: no model, no HTTP).

Every image that enters (uploads, chat data URLs, library files, the runners' inputs) goes through
`load_image`, which bounds the memory a decode can take before decoding anything, and every image that
goes to CLIP goes through `clip_view`, which bounds what the CLIP processor's resize can cost."""

from __future__ import annotations

import io
import math
import warnings

import numpy as np
from PIL import Image, ImageFile, ImageOps

# Refuse decompression bombs (PIL warns above this many pixels and raises above twice as many).
MAX_PIXELS = 16_000 * 16_000
# Images for CLIP (the indexer's library files and search uploads) decode JPEGs at a reduced scale no
# smaller than this: a 224 px model gains nothing from full-size decoding.
DRAFT_SIZE = 448
# What CLIP is given (clip_view): at most this many times longer than wide (or wide than tall), and the
# short side at most CLIP_MAX_SIDE. A model's processor resizes the short side to its size (224) and
# crops the centre square, or squashes the whole image to a square: either way it needs no more.
CLIP_MAX_ASPECT = 10
CLIP_MAX_SIDE = 2 * DRAFT_SIZE
DEFAULT_MAX_DECODE_MB = 200.0
MB = 1024 * 1024
Image.MAX_IMAGE_PIXELS = MAX_PIXELS
ImageFile.LOAD_TRUNCATED_IMAGES = False

# Bytes a pixel takes in PIL's memory, by mode: PIL stores every mode of more than one band (RGB too)
# in 4 bytes a pixel; modes not listed here are counted at 4.
STORED_BYTES = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16B": 2, "I;16L": 2, "I;16N": 2, "I": 4, "F": 4}
# What to_rgb holds besides the source and the RGB result, in bytes a pixel (the RGBA copy of a
# palette image and its alpha band, the alpha band of RGBA/LA, numpy's copies of 16/32-bit levels).
CONVERSION_BYTES = {"P": 5, "PA": 5, "RGBA": 1, "LA": 1, "I;16": 4, "I;16B": 4, "I;16L": 4, "I;16N": 4,
                    "I": 6, "F": 1}
RGB_BYTES = 4


class BadImage(ValueError):
    """The bytes are not a usable image; the message says why, for a person."""


def decode_bytes(mode: str, width: int, height: int) -> int:
    """The peak memory of decoding a `mode` image of width x height to upright RGB: the decoded
    source, plus either its turned copy (EXIF orientation) or what to_rgb makes of it."""
    stored = STORED_BYTES.get(mode, 4)
    per_pixel = stored + max(stored, CONVERSION_BYTES.get(mode, 0) + RGB_BYTES)
    return width * height * per_pixel


def too_large(mode: str, width: int, height: int, max_decode_mb: float) -> str | None:
    """Why decoding this image is refused, or None when it fits under IMAGE_MAX_DECODE_MB."""
    needed = decode_bytes(mode, width, height)
    if needed <= max_decode_mb * MB:
        return None
    return (f"image too large to decode: {width}x{height} {mode} needs {math.ceil(needed / MB)} MB, "
            f"over IMAGE_MAX_DECODE_MB={max_decode_mb:g}")


def jpeg_request(source: Image.Image, draft_size: int | None, max_decode_mb: float) -> tuple[int, int] | None:
    """The size to ask JPEG's draft mode for: at least `draft_size` when given, and reduced (by 2, 4
    or 8) as far as needed to fit the decode bound. None: decode at full scale."""
    width, height = source.size
    wanted = (draft_size, draft_size) if draft_size else None
    for scale in (1, 2, 4, 8):
        smaller = (math.ceil(width / scale), math.ceil(height / scale))
        if too_large(source.mode, *smaller, max_decode_mb) is None:
            break
    if scale == 1:
        return wanted
    fits = (max(1, width // scale), max(1, height // scale))  # draft's scale is then >= `scale`
    return fits if wanted is None else (min(wanted[0], fits[0]), min(wanted[1], fits[1]))


def to_rgb(image: Image.Image) -> Image.Image:
    """Flatten alpha on white; widen 16-bit and palette images; CMYK via PIL's conversion."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        levels = np.array(image)  # one writable copy, shifted in place (decode_bytes counts it)
        np.clip(levels, 0, 65535, out=levels)
        levels >>= 8
        image = Image.fromarray(levels.astype(np.uint8), mode="L")
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA"):
        background = Image.new("RGB", image.size, (255, 255, 255))
        background.paste(image, mask=image.getchannel("A"))
        return background
    return image.convert("RGB")


def open_image(
    data: bytes, draft_size: int | None = None, max_decode_mb: float = DEFAULT_MAX_DECODE_MB
) -> tuple[Image.Image, int, int]:
    """Decode to an upright RGB image (first frame of an animation). Returns (image, width, height)
    of the original. `draft_size` lets JPEG decode at a reduced scale no smaller than that size.
    The decode's memory is checked from the header first: over `max_decode_mb`, JPEGs decode at a
    reduced scale that fits and anything else is refused (BadImage) before any pixel is decoded."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        source = Image.open(io.BytesIO(data))
        width, height = source.size
        if width * height > MAX_PIXELS:
            raise Image.DecompressionBombError(f"{width}x{height} pixels is over the limit")
        mode = source.mode
        if source.format == "JPEG":
            request = jpeg_request(source, draft_size, max_decode_mb)
            if request:
                source.draft("RGB", request)
        if too_large(source.mode, *source.size, max_decode_mb):  # even a JPEG's 1/8 scale can be over
            raise BadImage(too_large(mode, width, height, max_decode_mb))
        # Only now: a PNG's getexif() decodes the whole image to look for an EXIF chunk after the pixels.
        orientation = source.getexif().get(0x0112, 1)
        source.seek(0)
        source.load()
    ImageOps.exif_transpose(source, in_place=True)  # no copy of an image that is already upright
    image = source if source.mode == "RGB" else to_rgb(source)
    if orientation in (5, 6, 7, 8):  # rotated by 90 degrees: report the upright size
        width, height = height, width
    return image, width, height


def load_image(
    data: bytes, draft_size: int | None = None, max_decode_mb: float | None = None
) -> tuple[Image.Image, int, int]:
    """open_image, with every way it can fail turned into BadImage. `max_decode_mb` defaults to the
    IMAGE_MAX_DECODE_MB setting."""
    if not data:
        raise BadImage("empty file")
    if max_decode_mb is None:
        from config import get_settings

        max_decode_mb = get_settings().image_max_decode_mb
    try:
        return open_image(data, draft_size, max_decode_mb)
    except BadImage:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise BadImage(f"image too large: {exc}") from exc
    except (OSError, SyntaxError, ValueError, Image.UnidentifiedImageError) as exc:
        raise BadImage(f"not a readable image: {describe(exc)}") from exc


def clip_view(image: Image.Image, max_side: int = CLIP_MAX_SIDE, max_aspect: float = CLIP_MAX_ASPECT) -> Image.Image:
    """What CLIP is given of `image`: the centre of an image longer than `max_aspect`:1 (cropped to
    that ratio), and the short side brought down to `max_side`. CLIP's processor resizes the short
    side to the model's size and keeps the centre square (inside the crop), so ordinary images give
    the same vectors, while a 1 x 65,000 strip no longer asks the processor for gigabytes."""
    width, height = image.size
    short, long = min(width, height), max(width, height)
    if long > short * max_aspect:
        keep = max(1, round(short * max_aspect))
        if width > height:
            left = (width - keep) // 2
            image = image.crop((left, 0, left + keep, height))
        else:
            top = (height - keep) // 2
            image = image.crop((0, top, width, top + keep))
        width, height = image.size
    if short > max_side:
        scale = max_side / short
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        image = image.resize(size, Image.Resampling.BICUBIC, reducing_gap=3.0)
    return image


def fit_pixels(image: Image.Image, max_pixels: int) -> Image.Image:
    """`image` as is when it holds at most `max_pixels` (0: no bound), else resized to fit, keeping its shape: what
    a model with a pixel budget is given (the describe and OCR stages, the OCR reader)."""
    if max_pixels <= 0 or image.width * image.height <= max_pixels:
        return image
    scale = (max_pixels / (image.width * image.height)) ** 0.5
    size = (max(1, int(image.width * scale)), max(1, int(image.height * scale)))
    return image.resize(size, Image.Resampling.BICUBIC, reducing_gap=3.0)


def check_aspect(image: Image.Image, max_ratio: float) -> None:
    """BadImage ("aspect ratio 250:1 is over 200:1") for an image more than `max_ratio` times longer
    than wide or wider than tall (Qwen's processor refuses over 200)."""
    width, height = image.size
    ratio = max(width, height) / max(1, min(width, height))
    if ratio > max_ratio:
        raise BadImage(f"aspect ratio {ratio_text(ratio)}:1 is over {ratio_text(max_ratio)}:1")


def ratio_text(ratio: float) -> str:
    return f"{ratio:.1f}".removesuffix(".0")


def describe(exc: BaseException) -> str:
    text = str(exc)
    if "truncated" in text.lower():
        return "truncated image file"
    if isinstance(exc, Image.UnidentifiedImageError):
        return "unknown image format"
    return text or type(exc).__name__
