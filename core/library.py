"""The one rule for which files are the library's, used by every entry point: the indexer's scan,
GET /images/..., `image_id` on /vqa, /vqa/stream and /image2image_search, and base64 search results.

A library file is named by a library-relative path ("a/b.jpg", posix separators) that is not absolute,
has no `..`, NUL or backslash, no hidden part (a component starting with ".") and ends in an image
or video suffix. After symlinks are resolved it must still be inside the library, must not be
hidden there either (a link to `.secret.png` or into `.cache/` is refused), must keep an image or video suffix
and must be a regular file. Callers answer every refusal exactly as they answer a missing file, so a
caller cannot tell which files exist.

Names are text everywhere above the file system (JSON, the store, `image_id`): a file's *library
name* is its path with each component as its UTF-8 text; a component that is not valid UTF-8 (a GBK
name from a Windows zip archive) has each of its non-ASCII bytes written as the four characters
`\\xNN` (lower-case hex). That is lossless and has one spelling per file: a real backslash is never
part of a library name, and escapes appear only in a component that is not UTF-8. `library_name()`
turns a file system name (str or bytes) into it, `raw_name()` back into bytes; URLs carry the raw
bytes percent-encoded (`url_path()`).

Reading a library file goes through one opened descriptor (`Library.open`, `Library.read_bytes`, for the
API and the indexer alike): the path is checked by the rule, then the file it resolved to is opened from
the library folder down one component at a time, following no symbolic link (`O_NOFOLLOW` on every
step), without blocking (`O_NONBLOCK`: a FIFO never hangs a reader), and that descriptor's `fstat` must
show a regular file of at most LIBRARY_MAX_FILE_MB; only then are its bytes read, at most the size fstat
gave. A file swapped for a link, a FIFO or a device between the check and the read is refused, never read.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import quote

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif"})
# Videos are library files too: the indexer indexes their moments (indexer/video_frames.py), /images serves
# their frames and the files themselves. They are never read whole into memory (core/videos.py streams them).
VIDEO_EXTENSIONS = frozenset({".mp4", ".mov", ".m4v", ".webm", ".mkv", ".avi"})
# Opening a library file: follow no link, never block (a FIFO), never become a controlling terminal.
FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
# Its folders on the way: O_PATH (Linux) needs no read permission on them, as a path lookup needs none.
FOLDER_FLAGS = getattr(os, "O_PATH", os.O_RDONLY) | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


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


def is_video_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in VIDEO_EXTENSIONS


def is_media_name(name: str) -> bool:
    """An image or video suffix: the names a library file may have."""
    return is_image_name(name) or is_video_name(name)


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
    if not is_media_name(path.name):
        return "not an image or video file name"
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
        if any(is_hidden(part) for part in inside) or not is_media_name(real.name):
            raise NotInLibrary(rel, "a symbolic link to a hidden or non-image file")
        if not stat.S_ISREG(info.st_mode):
            raise NotInLibrary(rel, "not a regular file")
        return LibraryFile(str(path), real, info.st_size, info.st_mtime, info.st_mtime_ns)

    def find(self, rel: str) -> LibraryFile | None:
        try:
            return self.resolve(rel)
        except NotInLibrary:
            return None

    @contextmanager
    def open(self, rel: str, max_bytes: int | None = None) -> Iterator[OpenedFile]:
        """The library file `rel`, opened once (see the module docstring): its LibraryFile comes from
        fstat on the descriptor that is read. NotInLibrary for what the rule refuses, a file changed
        into a link, FIFO or device since the check, or one larger than `max_bytes` (default
        LIBRARY_MAX_FILE_MB)."""
        found = self.resolve(rel)
        parts = found.real.relative_to(self.root).parts
        try:
            fd = open_no_follow(self.root, parts)
        except OSError as exc:  # removed, made unreadable, or a link / non-folder swapped in since the check
            raise NotInLibrary(rel, f"changed or unreadable since it was checked: {exc.strerror or exc}") from exc
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise NotInLibrary(rel, "not a regular file")
            limit = max_file_bytes() if max_bytes is None else max_bytes
            if info.st_size > limit:
                raise NotInLibrary(rel, f"larger than LIBRARY_MAX_FILE_MB ({info.st_size} bytes)")
            yield OpenedFile(fd, LibraryFile(found.rel, found.real, info.st_size, info.st_mtime, info.st_mtime_ns))
        finally:
            os.close(fd)

    def read_bytes(self, rel: str, max_bytes: int | None = None) -> bytes:
        """The file's bytes, read through one descriptor (`open`); NotInLibrary if the rule refuses it
        or it cannot be read."""
        with self.open(rel, max_bytes) as opened:
            try:
                return opened.read()
            except OSError as exc:  # an I/O error, or the file truncated under us
                raise NotInLibrary(rel, exc.strerror or str(exc)) from exc


@dataclass(frozen=True)
class OpenedFile:
    """A library file opened by Library.open: `found` holds the descriptor's own fstat figures."""

    fd: int
    found: LibraryFile

    def read(self, start: int = 0, length: int | None = None) -> bytes:
        """Bytes [start, start + length) of the file (default: to the size fstat gave), never more than
        that size even if the file grows meanwhile."""
        end = self.found.size if length is None else min(self.found.size, start + length)
        chunks = []
        while start < end:
            chunk = os.pread(self.fd, min(end - start, 1 << 24), start)
            if not chunk:  # truncated since fstat: what is there
                break
            chunks.append(chunk)
            start += len(chunk)
        return b"".join(chunks)

    def stream(self) -> FileStream:
        """A binary file object over the descriptor (for readers that take one, such as PIL's header
        check); it does not own the descriptor."""
        return FileStream(self)


class FileStream:
    """A minimal read-only, seekable file over an OpenedFile (positioned reads, no ownership)."""

    def __init__(self, opened: OpenedFile) -> None:
        self.opened = opened
        self.position = 0

    def read(self, size: int = -1) -> bytes:
        length = None if size is None or size < 0 else size
        data = self.opened.read(self.position, length)
        self.position += len(data)
        return data

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self.position, os.SEEK_END: self.opened.found.size}[whence]
        self.position = max(0, base + offset)
        return self.position

    def tell(self) -> int:
        return self.position

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True


def open_no_follow(root: Path, parts: Sequence[str]) -> int:
    """A read descriptor of root/parts..., every component opened relative to the one before with
    O_NOFOLLOW (a symbolic link anywhere below `root` fails with ELOOP or ENOTDIR) and the file itself
    with O_NONBLOCK. The caller closes it and checks what it is (fstat)."""
    if not parts:
        raise IsADirectoryError(21, "the library itself is not a file")
    folder = os.open(root, FOLDER_FLAGS)
    try:
        for part in parts[:-1]:
            inner = os.open(part, FOLDER_FLAGS, dir_fd=folder)
            os.close(folder)
            folder = inner
        return os.open(parts[-1], FILE_FLAGS, dir_fd=folder)
    finally:
        os.close(folder)


def max_file_bytes() -> int:
    """LIBRARY_MAX_FILE_MB in bytes (read lazily: core/ imports no settings at import)."""
    from config import get_settings

    return int(get_settings().library_max_file_mb * 2**20)
