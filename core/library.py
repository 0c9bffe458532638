"""The one rule for which files are the library's, used by every entry point: the indexer's scan,
GET /images/..., `image_id` on /vqa, /vqa/stream and /image2image_search, and base64 search results.

A library file is named by a library-relative path ("a/b.jpg", posix separators) that is not absolute,
has no `..`, NUL or backslash, no hidden part (a component starting with ".") and ends in an image
suffix. After symlinks are resolved it must still be inside the library, must not be
hidden there either (a link to `.secret.png` or into `.cache/` is refused), must keep an image suffix
and must be a regular file. Callers answer every refusal exactly as they answer a missing file, so a
caller cannot tell which files exist.

Names are text everywhere above the file system (JSON, the store, `image_id`): a file's *library
name* is its path with each component as its UTF-8 text; a component that is not valid UTF-8 (a GBK
name from a Windows zip archive) has each of its non-ASCII bytes written as the four characters
`\\xNN` (lower-case hex). That is lossless and has one spelling per file: a real backslash is never
part of a library name, and escapes appear only in a component that is not UTF-8. `library_name()`
turns a file system name (str or bytes) into it, `raw_name()` back into bytes; URLs carry the raw
bytes percent-encoded (`url_path()`).
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import quote

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif"})


# A byte that is not UTF-8 in a library name; only 0x80-0xff can be one (ASCII is always UTF-8).
ESCAPE = re.compile(r"\\x([89a-f][0-9a-f])")


class NotInLibrary(Exception):
    """The path names no file of the library; the message says why (for the log, not for callers),
    `reason` says it without the name (for the indexer's summary)."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"{name!r}: {reason}")
        self.reason = reason


@dataclass(frozen=True)
class LibraryFile:
    rel: str  # library-relative, posix separators, normalised ("./a//b.jpg" -> "a/b.jpg")
    real: Path  # the resolved file
    size: int
    mtime: float  # st_mtime, as the indexer records it
    mtime_ns: int


def is_image_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def is_hidden(name: str) -> bool:
    return name.startswith(".")


def library_name(name: str | bytes) -> str:
    """The library name of a file system path (a str as os.walk gives it, or bytes): each component
    that is valid UTF-8 as is, any other with its non-ASCII bytes written `\\xNN`. NotInLibrary for
    a name holding a backslash, which would make that spelling ambiguous."""
    raw = os.fsencode(name)
    if b"\\" in raw:
        raise NotInLibrary(raw.decode("utf-8", "backslashreplace"), "the file name holds a backslash: rename it")
    return "/".join(component_name(part) for part in raw.split(b"/"))


def component_name(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return "".join(chr(byte) if byte < 0x80 else f"\\x{byte:02x}" for byte in raw)


def raw_name(name: str) -> bytes:
    """The file system bytes a library name stands for; NotInLibrary unless `name` is the one
    spelling `library_name()` gives (a stray backslash, escapes in a name that is UTF-8, upper-case
    hex, or text that is not Unicode, such as a lone surrogate)."""
    pieces = ESCAPE.split(name)  # text, hex, text, hex, ..., text
    try:
        raw = b"".join(bytes.fromhex(p) if i % 2 else p.encode("utf-8") for i, p in enumerate(pieces))
    except UnicodeEncodeError:
        raise NotInLibrary(name, "the name is not valid Unicode text") from None
    if b"\\" in raw or library_name(raw) != name:
        raise NotInLibrary(name, "holds a backslash that is not a \\xNN escape in a name that is not UTF-8")
    return raw


def url_path(name: str) -> str:
    """A library name as a URL path: the file's raw bytes, percent-encoded ("/" kept)."""
    return quote(raw_name(name), safe="/")


def name_problem(rel: str) -> str | None:
    """Why a library-relative path can never name a library file, or None; no file system access."""
    if not rel or "\0" in rel:
        return "empty, or holds a NUL"
    try:
        raw_name(rel)
    except NotInLibrary as exc:
        return exc.reason
    path = PurePosixPath(rel)
    if path.is_absolute() or not path.parts:
        return "not a library-relative path"
    if any(part == ".." or is_hidden(part) for part in path.parts):
        return "leaves the library or is hidden"
    if not is_image_name(path.name):
        return "not an image file name"
    return None


class Library:
    """The image library under `root` (resolved once: a library reached through a symlink is fine)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()

    def resolve(self, rel: str) -> LibraryFile:
        """The library file whose library name is `rel`; NotInLibrary for anything the rule refuses
        or that is missing."""
        problem = name_problem(rel)
        if problem:
            raise NotInLibrary(rel, problem)
        path = PurePosixPath(rel)
        try:
            real = (self.root / os.fsdecode(raw_name(str(path)))).resolve(strict=True)
            info = real.stat()
        except OSError as exc:  # missing, unreadable, a symlink loop (Python 3.13)
            raise NotInLibrary(rel, exc.strerror or "cannot be read") from exc
        except RuntimeError as exc:  # a symlink loop (Python 3.11)
            raise NotInLibrary(rel, "a symbolic link loop") from exc
        except ValueError as exc:  # a name the system cannot take
            raise NotInLibrary(rel, f"not a usable file name: {exc}") from exc
        if not real.is_relative_to(self.root):
            raise NotInLibrary(rel, "a symbolic link that leads out of the library")
        inside = real.relative_to(self.root).parts
        if any(is_hidden(part) for part in inside) or not is_image_name(real.name):
            raise NotInLibrary(rel, "a symbolic link to a hidden or non-image file")
        if not stat.S_ISREG(info.st_mode):
            raise NotInLibrary(rel, "not a regular file")
        return LibraryFile(str(path), real, info.st_size, info.st_mtime, info.st_mtime_ns)

    def find(self, rel: str) -> LibraryFile | None:
        try:
            return self.resolve(rel)
        except NotInLibrary:
            return None

    def read_bytes(self, rel: str) -> bytes:
        """The file's bytes; NotInLibrary if the rule refuses it or it cannot be read."""
        found = self.resolve(rel)
        try:
            return found.real.read_bytes()
        except OSError as exc:  # removed or made unreadable since the lookup
            raise NotInLibrary(rel, exc.strerror or str(exc)) from exc
