"""Where model exports are cached: one folder per model, keyed by its id and files, written atomically.

Used by the CLIP runtimes' exports (runners/clip/select.py) and the OpenVINO VLM export
(runners/vlm/openvino_export.py): an export is built in a staged sibling folder and published by one rename once
its marker is written.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

MARKER = "export.json"  # written last: a folder holding it is a finished export


def cache_folder(
    cache_dir: Path, model_id: str, model_dir: Path, salt: str = "", stat_above: int | None = None
) -> Path:
    """<cache>/<readable model id>-<hash of model id, `salt` and the model's files> (see model_hash)."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", model_id).strip("_")[-60:] or "model"
    return Path(cache_dir) / f"{slug}-{model_hash(model_id, model_dir, salt, stat_above)[:16]}"


def model_hash(model_id: str, model_dir: Path, salt: str = "", stat_above: int | None = None) -> str:
    """sha256 of the model id, `salt` and every file's name and bytes; files larger than `stat_above` bytes are
    keyed by size and modification time instead (hashing gigabytes of weights at every start costs seconds)."""
    digest = hashlib.sha256(f"{model_id}\0{salt}\0".encode())
    for path in sorted(p for p in Path(model_dir).rglob("*") if p.is_file() and not p.name.startswith(".")):
        digest.update(path.relative_to(model_dir).as_posix().encode() + b"\0")
        stat = path.stat()
        if stat_above is not None and stat.st_size > stat_above:
            digest.update(f"{stat.st_size}:{stat.st_mtime_ns}".encode())
            continue
        with path.open("rb") as handle:
            digest.update(hashlib.file_digest(handle, "sha256").digest())
    return digest.hexdigest()


@contextmanager
def staged(folder: Path) -> Iterator[Path]:
    """A temporary sibling of `folder` to build an export in, renamed into place when the block ends well
    (publish); removed in any case, so an interrupted export never leaves a half-written folder behind."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    temp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        yield temp
        publish(temp, folder, MARKER)
    finally:
        shutil.rmtree(temp, ignore_errors=True)


def write_marker(folder: Path, meta: dict[str, object]) -> None:
    """The marker that makes `folder` a finished export (write it last)."""
    (folder / MARKER).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")


def publish(temp: Path, folder: Path, marker: str = MARKER) -> None:
    """Rename a finished export folder into place (atomic); when another process renamed its own first
    (`marker` present there), keep that one."""
    try:
        os.rename(temp, folder)
    except OSError:
        if not (folder / marker).is_file():
            raise
