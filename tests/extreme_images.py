"""Images of extreme shapes and modes, as bytes, for the image fault catalogue
(tests/unit/test_faults_images.py, tests/integration/test_faults_images_served.py).

CASES maps a name to (file suffix, bytes, what loading it must do): None = decoded, else a piece of
the BadImage message. The 16,000 x 16,000 PNGs are written row by row through zlib, so making them
never holds their pixels (about 250 KB and 1 MB on disk, 1.2 and 2.1 GB decoded)."""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable
from functools import cache

from PIL import Image

PNG_COLOR_TYPE = {"L": (0, 1), "RGB": (2, 3), "RGBA": (6, 4)}  # mode: (PNG colour type, bytes a pixel)


def chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


@cache
def blank_png(width: int, height: int, mode: str) -> bytes:
    """An all-zero 8-bit PNG of any size, made without holding its pixels: one block of 16 rows is
    deflated once (a full flush makes it stand alone) and repeated, as an attacker would."""
    color_type, bands = PNG_COLOR_TYPE[mode]
    header = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    rows = bytes(1 + width * bands) * 16  # filter byte 0, then the pixels; height must be a multiple of 16
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = compressor.compress(rows) + compressor.flush(zlib.Z_FULL_FLUSH)
    checksum = (len(rows) * (height // 16)) % 65521 << 16 | 1  # Adler-32 of n zero bytes
    last = zlib.compressobj(9, zlib.DEFLATED, -15).flush()  # the empty final block
    idat = b"\x78\xda" + block * (height // 16) + last + struct.pack(">I", checksum)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def encoded(image: Image.Image, fmt: str, **options: object) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **options)
    return out.getvalue()


def strip(width: int, height: int) -> bytes:
    """1 x 65,000 (or 65,000 x 1): a few hundred bytes, under every pixel limit, and an extreme aspect."""
    return encoded(Image.new("RGB", (width, height), (200, 30, 30)), "PNG")


def sixteen_bit() -> bytes:
    return encoded(Image.new("I;16", (300, 200), 40_000), "PNG")


def cmyk_jpeg() -> bytes:
    return encoded(Image.new("CMYK", (120, 90), (0, 200, 200, 0)), "JPEG")


def palette_with_transparency() -> bytes:
    image = Image.new("P", (80, 80), 0)
    image.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    image.paste(1, (20, 20, 60, 60))
    return encoded(image, "PNG", transparency=0)


def animated_gif() -> bytes:
    frames = [Image.new("RGB", (64, 64), color) for color in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    return encoded(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)


def truncated() -> bytes:
    whole = encoded(Image.effect_noise((200, 200), 60).convert("RGB"), "JPEG")
    return whole[: len(whole) // 2]


CASES: dict[str, tuple[str, Callable[[], bytes], str | None]] = {
    "1x65000": (".png", lambda: strip(1, 65_000), None),
    "65000x1": (".png", lambda: strip(65_000, 1), None),
    "16000x16000-L": (".png", lambda: blank_png(16_000, 16_000, "L"),
                      "image too large to decode: 16000x16000 L needs 1221 MB, over IMAGE_MAX_DECODE_MB=200"),
    "16000x16000-RGBA": (".png", lambda: blank_png(16_000, 16_000, "RGBA"),
                         "image too large to decode: 16000x16000 RGBA needs 2198 MB, over IMAGE_MAX_DECODE_MB=200"),
    "16-bit": (".png", sixteen_bit, None),
    "cmyk": (".jpg", cmyk_jpeg, None),
    "palette-transparent": (".png", palette_with_transparency, None),
    "animated-gif": (".gif", animated_gif, None),
    "truncated": (".jpg", truncated, "not a readable image: truncated image file"),
    "zero-byte": (".png", lambda: b"", "empty file"),
}
