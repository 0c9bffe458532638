"""The one rule for which files are the library's, used by every entry point: the indexer's scan,
GET /images/..., `image_id` on /vqa, /vqa/stream and /image2image_search, and base64 search results.

A library file is named by a library-relative path ("a/b.jpg", posix separators) that is not absolute,
has no `..`, NUL or backslash, no hidden part (a component starting with "."), is valid UTF-8 and ends
in an image suffix. After symlinks are resolved it must still be inside the library, must not be
hidden there either (a link to `.secret.png` or into `.cache/` is refused), must keep an image suffix
and must be a regular file. Callers answer every refusal exactly as they answer a missing file, so a
caller cannot tell which files exist.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif"})


class NotInLibrary(Exception):
    """The path names no file of the library; the message says why (for the log, not for callers)."""


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


def name_problem(rel: str) -> str | None:
    """Why a library-relative path can never name a library file, or None; no file system access."""
    if not rel or "\0" in rel or "\\" in rel:
        return "empty, or holds a NUL or a backslash"
    try:
        rel.encode("utf-8")
    except UnicodeEncodeError:
        return "the name is not valid UTF-8"
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
        """The library file at `rel`; NotInLibrary for anything the rule refuses or that is missing."""
        problem = name_problem(rel)
        if problem:
            raise NotInLibrary(f"{rel!r}: {problem}")
        path = PurePosixPath(rel)
        try:
            real = (self.root / path).resolve(strict=True)
            info = real.stat()
        except (OSError, RuntimeError, ValueError) as exc:  # missing, a symlink loop, unreadable
            raise NotInLibrary(f"{rel!r}: {exc}") from exc
        if not real.is_relative_to(self.root):
            raise NotInLibrary(f"{rel!r}: leads out of the library")
        inside = real.relative_to(self.root).parts
        if any(is_hidden(part) for part in inside) or not is_image_name(real.name):
            raise NotInLibrary(f"{rel!r}: leads to a hidden or non-image file")
        if not stat.S_ISREG(info.st_mode):
            raise NotInLibrary(f"{rel!r}: not a regular file")
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
            raise NotInLibrary(f"{rel!r}: {exc}") from exc
