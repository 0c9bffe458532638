"""Reader: list the image files of a library (core/library.py decides which files those are)."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from core.library import Library, NotInLibrary, is_hidden, is_media_name, library_name

log = logging.getLogger("indexer")


@dataclass(frozen=True)
class FileEntry:
    rel_path: str  # the library name (core/library.py): library-relative, posix separators, always text
    path: Path
    size: int
    mtime: float
    root: Path  # the library's resolved folder: indexer/decode.py reads the file through it (core/library.py)


def scan_library(root: Path, unreadable: list[tuple[str, str]] | None = None,
                 refused: list[tuple[str, str]] | None = None) -> list[FileEntry]:
    """Every library file under `root` (recursive, extensions case-insensitive), sorted by path.

    Each file must pass the library rule (core/library.py). Hidden files and folders and files
    without an image suffix are skipped silently; any other image file the rule refuses (a name
    holding a backslash, a symlink leading out of the library or to a hidden file, a non-regular
    file) is added to `refused` as (library name, reason). Names that are not valid UTF-8 are
    library files like any other, named with `\\xNN` escapes. A folder that cannot be listed
    (permission denied, or `root` missing or not a folder) is added to `unreadable` as
    (library-relative folder, reason); "." is the library itself.
    """
    library = Library(root)
    root = library.root
    entries = []

    def on_error(exc: OSError) -> None:
        folder = Path(exc.filename) if exc.filename else root
        rel = folder.relative_to(root).as_posix() if folder.is_relative_to(root) else "."
        if unreadable is not None:
            unreadable.append((shown_name(rel), f"cannot read folder: {exc.strerror or exc}"))

    for folder, dirs, files in walk(root, on_error):
        dirs[:] = sorted(d for d in dirs if not is_hidden(d))  # the rule refuses them anyway: don't walk them
        for name in files:
            path = Path(folder) / name
            try:
                entries.append(make_entry(library, path, path.relative_to(root).as_posix()))
            except NotInLibrary as exc:
                if is_media_name(name) and not is_hidden(name):  # not plainly skipped: say why
                    log.warning("skipped %s", ascii(str(exc)))  # ascii(): any name prints on any console
                    if refused is not None:
                        refused.append((shown_name(path.relative_to(root).as_posix()), exc.reason))
    return sorted(entries, key=lambda e: e.rel_path)


def walk(root: Path | str, onerror: Callable[[OSError], None] | None = None
         ) -> Iterator[tuple[str, list[str], list[str]]]:
    """os.walk(root, topdown=True, followlinks=False) without recursion: a folder 1,000 levels deep (a
    legal path of a few KB) is walked like any other, where os.walk (recursive before Python 3.12) raises
    RecursionError. The caller may prune `dirs` in place, as with os.walk; links to folders are listed in
    `dirs` but not entered."""
    stack = [os.fspath(root)]
    while stack:
        folder = stack.pop()
        dirs: list[str] = []
        files: list[str] = []
        enter: set[str] = set()
        try:
            with os.scandir(folder) as listing:
                for item in listing:
                    try:
                        is_dir = item.is_dir()
                    except OSError:
                        is_dir = False
                    (dirs if is_dir else files).append(item.name)
                    if is_dir and not item.is_symlink():
                        enter.add(item.name)
        except OSError as exc:
            if onerror is not None:
                onerror(exc)
            continue
        yield folder, dirs, files
        stack.extend(os.path.join(folder, d) for d in reversed(dirs) if d in enter)


def make_entry(library: Library, path: Path, rel: str) -> FileEntry:
    """The entry of the file at `path` (`rel` as os.walk names it); NotInLibrary if the rule refuses it."""
    found = library.resolve(library_name(rel))
    return FileEntry(found.rel, path, found.size, found.mtime, library.root)


def shown_name(rel: str) -> str:
    """A file system name as text for reports (JSON-safe even where it is no library name)."""
    return os.fsencode(rel).decode("utf-8", "backslashreplace")
