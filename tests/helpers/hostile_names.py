"""A library of hostile and unlucky file names (issue 11), shared by tests/unit/test_faults_names.py
and tests/integration/test_faults_names_served.py.

INDEXED: raw file system name -> the library name the service answers with (core/library.py): every
name Linux can hold, including bytes that are not UTF-8 (GBK from a Windows zip archive, Latin-1),
shows up in search results, /images URLs and `image_id`. SKIPPED: names the library rule refuses,
which the indexer lists in its summary's failures with the reason.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

from shapes import draw_shape

CAFE_NFC = "caf\u00e9.jpg"
CAFE_NFD = "cafe\u0301.jpg"  # the same word, decomposed (how macOS writes names): another file

INDEXED: dict[bytes, str] = {
    b"plain.jpg": "plain.jpg",
    b"two  spaces and tab\t.jpg": "two  spaces and tab\t.jpg",
    b" leading and trailing .png": " leading and trailing .png",
    b"new\nline.jpg": "new\nline.jpg",
    b"carriage\rreturn.png": "carriage\rreturn.png",
    b"percent %41 %zz %.jpg": "percent %41 %zz %.jpg",
    b"%C9.jpg": "%C9.jpg",  # a percent escape spelled out: not the byte 0xC9 below
    b"a%2Fb.jpg": "a%2Fb.jpg",  # an escaped slash spelled out: still one file, no folder
    b"hash#fragment.jpg": "hash#fragment.jpg",
    b"question?x=1&y=2.jpg": "question?x=1&y=2.jpg",
    b"plus+sign+.jpg": "plus+sign+.jpg",
    b"quotes \"double\" 'single' `back`.png": "quotes \"double\" 'single' `back`.png",
    b"semi;colon=equals,comma.jpg": "semi;colon=equals,comma.jpg",
    b"<img src=x onerror=alert(1)>.png": "<img src=x onerror=alert(1)>.png",
    b"<script>alert(1)</script>.jpg": "<script>alert(1)</script>.jpg",  # a folder "<script>alert(1)<"
    b"&amp; entity.jpg": "&amp; entity.jpg",
    "emoji 😀🎉👨‍👩‍👧.png".encode(): "emoji 😀🎉👨‍👩‍👧.png",
    "上海 外滩/夜景 2024.jpg".encode(): "上海 外滩/夜景 2024.jpg",
    "rtl \u202egnp.jpg".encode(): "rtl \u202egnp.jpg",  # a right-to-left override
    "zero\u200bwidth.jpg".encode(): "zero\u200bwidth.jpg",
    CAFE_NFC.encode(): CAFE_NFC,
    CAFE_NFD.encode(): CAFE_NFD,
    b"x" * 251 + b".jpg": "x" * 251 + ".jpg",  # 255 bytes: the longest name Linux takes
    "长".encode() * 83 + b".jpg": "长" * 83 + ".jpg",  # 253 bytes, 87 characters
    # Not UTF-8: each non-ASCII byte of such a name is \xNN in its library name, percent-encoded in URLs.
    b"\xc9\xcf\xba\xa3.jpg": "\\xc9\\xcf\\xba\\xa3.jpg",  # GBK 上海
    b"\xd5\xd5\xc6\xac/\xb1\xb1\xbe\xa9.png": "\\xd5\\xd5\\xc6\\xac/\\xb1\\xb1\\xbe\\xa9.png",  # GBK 照片/北京
    b"caf\xe9 latin-1.jpg": "caf\\xe9 latin-1.jpg",
    b"\xff\xfe.png": "\\xff\\xfe.png",
    b"\xed\xa0\x80 surrogate.jpg": "\\xed\\xa0\\x80 surrogate.jpg",  # a UTF-16 surrogate, UTF-8 encoded
}

SKIPPED: dict[bytes, str] = {  # raw name -> the name the summary lists
    b"back\\slash.jpg": "back\\slash.jpg",
    b"\\xc9.jpg": "\\xc9.jpg",  # looks like an escape: refused, so no name has two spellings
}

REASON = "the file name holds a backslash: rename it"


def image_bytes(raw: bytes, seed: int) -> bytes:
    """A small image, different for each seed, in the format its suffix says."""
    out = io.BytesIO()
    fmt = "PNG" if raw.lower().endswith(b".png") else "JPEG"
    draw_shape(["circle", "square", "triangle"][seed % 3], "red", size=48, seed=seed).save(out, format=fmt)
    return out.getvalue()


def make_hostile_library(root: Path) -> dict[bytes, bytes]:
    """Write every INDEXED and SKIPPED name under `root`; raw name -> the file's bytes."""
    written = {}
    for seed, raw in enumerate([*INDEXED, *SKIPPED]):
        path = os.path.join(os.fsencode(root), raw)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        written[raw] = image_bytes(raw, seed)
        with open(path, "wb") as handle:
            handle.write(written[raw])
    return written
