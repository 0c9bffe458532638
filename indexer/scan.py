"""Reader: list the image files of a library (core/library.py decides which files those are)."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from core.library import Library, NotInLibrary, is_hidden, is_image_name

log = logging.getLogger("indexer")


@dataclass(frozen=True)
class FileEntry:
    rel_path: str  # library-relative, posix separators
    path: Path
    size: int
    mtime: float


def scan_library(root: Path, unreadable: list[tuple[str, str]] | None = None) -> list[FileEntry]:
    """Every library file under `root` (recursive, extensions case-insensitive), sorted by path.

    Each file must pass the library rule (core/library.py): hidden files and folders, symlinks that
    lead out of the library or to a hidden file, and names that are not valid UTF-8 are skipped. A
    folder that cannot be listed (permission denied, or `root` missing or not a folder) is added to
    `unreadable` as (library-relative folder, reason); "." is the library itself.
    """
    library = Library(root)
    root = library.root
    entries = []

    def on_error(exc: OSError) -> None:
        folder = Path(exc.filename) if exc.filename else root
        rel = folder.relative_to(root).as_posix() if folder.is_relative_to(root) else "."
        if unreadable is not None:
            unreadable.append((rel, f"cannot read folder: {exc.strerror or exc}"))

    for folder, dirs, files in os.walk(root, onerror=on_error, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not is_hidden(d))  # the rule refuses them anyway: don't walk them
        for name in files:
            path = Path(folder) / name
            entry = make_entry(library, path, path.relative_to(root).as_posix())
            if entry is not None:
                entries.append(entry)
    return sorted(entries, key=lambda e: e.rel_path)


def make_entry(library: Library, path: Path, rel: str) -> FileEntry | None:
    try:
        found = library.resolve(rel)
    except NotInLibrary as exc:
        if is_image_name(path.name) and not is_hidden(path.name):  # not plainly skipped: say why
            log.warning("skipped %s", ascii(str(exc)))  # ascii(): a name that is not UTF-8 still prints
        return None
    return FileEntry(found.rel, path, found.size, found.mtime)
