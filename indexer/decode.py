"""Mapper: read, hash and decode image files (runs in a worker pool)."""

from __future__ import annotations

import hashlib
import io
import warnings
from collections.abc import Callable
from dataclasses import dataclass

from PIL import Image, ImageFile, ImageOps

from indexer.scan import FileEntry
from runners.images import to_rgb

# Refuse decompression bombs (PIL warns above this many pixels and raises above twice as many).
MAX_PIXELS = 16_000 * 16_000
Image.MAX_IMAGE_PIXELS = MAX_PIXELS
ImageFile.LOAD_TRUNCATED_IMAGES = False


@dataclass
class Decoded:
    entry: FileEntry
    content_hash: str
    image: Image.Image | None = None
    width: int = 0
    height: int = 0
    error: str | None = None


def content_hash(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def read_file(entry: FileEntry) -> tuple[bytes | None, str | None]:
    try:
        data = entry.path.read_bytes()
    except OSError as exc:
        return None, f"cannot read: {exc.strerror or exc}"
    if not data:
        return None, "empty file"
    return data, None


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


def decode_entry(
    entry: FileEntry, draft_size: int | None = None, needs_image: Callable[[FileEntry, str], bool] | None = None
) -> Decoded:
    """Read, hash and decode one file; skip decoding when `needs_image(entry, hash)` says the
    vector can be reused. Never raises: errors go into `.error`."""
    data, error = read_file(entry)
    if data is None:
        return Decoded(entry, "", error=error)
    result = Decoded(entry, content_hash(data))
    if needs_image is not None and not needs_image(entry, result.content_hash):
        return result
    try:
        result.image, result.width, result.height = open_image(data, draft_size)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        result.error = f"image too large: {exc}"
    except (OSError, SyntaxError, ValueError, Image.UnidentifiedImageError) as exc:
        result.error = f"not a readable image: {describe(exc)}"
    return result


def describe(exc: BaseException) -> str:
    text = str(exc)
    if "truncated" in text.lower() or isinstance(exc, OSError) and "image file is truncated" in text:
        return "truncated image file"
    if isinstance(exc, Image.UnidentifiedImageError):
        return "unknown image format"
    return text or type(exc).__name__
