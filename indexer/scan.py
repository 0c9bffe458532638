"""Reader: list the image files of a library."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif"})


@dataclass(frozen=True)
class FileEntry:
    rel_path: str  # library-relative, posix separators
    path: Path
    size: int
    mtime: float


def is_image_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def scan_library(root: Path, unreadable: list[tuple[str, str]] | None = None) -> list[FileEntry]:
    """Every image file under `root` (recursive, extensions case-insensitive), sorted by path.

    Hidden files and folders are skipped; so is anything that resolves outside the library
    (a symlink pointing elsewhere). A folder that cannot be listed (permission denied, or `root`
    missing or not a folder) is added to `unreadable` as (library-relative folder, reason); "." is
    the library itself.
    """
    root = root.resolve()
    entries = []

    def on_error(exc: OSError) -> None:
        folder = Path(exc.filename) if exc.filename else root
        rel = folder.relative_to(root).as_posix() if folder.is_relative_to(root) else "."
        if unreadable is not None:
            unreadable.append((rel, f"cannot read folder: {exc.strerror or exc}"))

    for folder, dirs, files in os.walk(root, onerror=on_error, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in files:
            if name.startswith(".") or not is_image_name(name):
                continue
            entry = make_entry(root, Path(folder) / name)
            if entry is not None:
                entries.append(entry)
    return sorted(entries, key=lambda e: e.rel_path)


def make_entry(root: Path, path: Path) -> FileEntry | None:
    try:
        real = path.resolve(strict=True)
        if not real.is_relative_to(root) or not real.is_file():
            return None
        stat = real.stat()
    except OSError:
        return None  # vanished or unreadable while scanning
    return FileEntry(path.relative_to(root).as_posix(), path, stat.st_size, stat.st_mtime)
