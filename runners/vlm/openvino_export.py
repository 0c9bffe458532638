"""The OpenVINO export of VQA_MODEL, made once and cached (`python -m runners.vlm.export` makes it ahead of time).

The export runs in the exporter's own pinned environment (scripts/setup-vlm-export.sh makes it the first time;
optimum-intel needs transformers < 5.6, the service pins 5.24) through scripts/export_vlm_openvino.py. Beside the
IR files it stores the fidelity reference: PyTorch fp32's answers to the probe (runners/vlm/fidelity.py), made
here with the service's own code. Exports live in VQA_OPENVINO_CACHE/<model>-<key>/<weights>/, the key made of the
model id and its files; they are built in a temporary sibling folder and renamed into place when complete.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from config import Settings
from runners.export_cache import MARKER, cache_folder, staged, write_marker
from runners.vlm import windows

log = logging.getLogger(__name__)

# Bump when the export layout or the probe changes: old cache folders are not reused.
# 2: the vision tower's window attention computed on windows (runners/vlm/windows.py).
EXPORT_FORMAT = 2
REFERENCE = "reference.json"
STAT_ABOVE = 64 * 1024**2  # weight files keyed by size and mtime, not hashed at every start
ROOT = Path(__file__).resolve().parents[2]
SETUP = ROOT / "scripts" / "setup-vlm-export.sh"
WORKER = ROOT / "scripts" / "export_vlm_openvino.py"


class ExportFailed(RuntimeError):
    """The exporter could not make the export (the message says why)."""


# VQA_OPENVINO_WEIGHTS=auto: the export that exists, in this order (int8 answers closer to PyTorch's); a new
# export is the first. So `python -m runners.vlm.export --weights int4` alone is what serving then takes.
AUTO_ORDER = ("int8", "int4")


def weights_wanted(settings: Settings) -> tuple[str, ...]:
    """The weights an existing export may have, preferred first."""
    weights = settings.vqa_openvino_weights
    return AUTO_ORDER if weights == "auto" else (weights,)


def export_dir(settings: Settings, model_id: str, model_dir: Path, weights: str | None = None,
               form: int = EXPORT_FORMAT) -> Path:
    """The folder of one export; without `weights`, the one a new export makes."""
    salt = f"vlm-openvino/{form}"
    base = cache_folder(settings.vqa_openvino_cache, model_id, model_dir, salt, STAT_ABOVE)
    return base / (weights or weights_wanted(settings)[0])


def find_export(settings: Settings, model_id: str, model_dir: Path) -> Path | None:
    """The finished export for VQA_OPENVINO_WEIGHTS (`auto`: int8, else int4; a format-1 one upgraded first),
    or None. The folder's name is its weights."""
    for weights in weights_wanted(settings):
        folder = export_dir(settings, model_id, model_dir, weights)
        if not (folder / MARKER).is_file():
            upgrade(settings, model_id, model_dir, weights)
        if (folder / MARKER).is_file():
            return folder
    return None


def upgrade(settings: Settings, model_id: str, model_dir: Path, weights: str) -> None:
    """Make the current export from a format-1 one (before runners/vlm_windows) in seconds, not an export's
    minutes: its files linked into a new folder, the vision tower rewritten there, published as format 2. The old
    folder is left as it is. A failure (a read-only cache) is logged; the caller then finds no current export."""
    old = export_dir(settings, model_id, model_dir, weights, form=1)
    folder = export_dir(settings, model_id, model_dir, weights)
    if not (old / MARKER).is_file():
        return
    try:
        with staged(folder) as temp:
            for path in old.iterdir():
                if path.name != MARKER:
                    link_or_copy(path, temp / path.name)
            windows.apply(temp)
            write_marker(temp, {**json.loads((old / MARKER).read_text(encoding="utf-8")), "format": EXPORT_FORMAT})
        log.info("upgraded the OpenVINO export %s to format %d in %s", old, EXPORT_FORMAT, folder)
    except OSError as exc:
        log.warning("cannot upgrade the OpenVINO export %s to format %d (%s): `python -m runners.vlm.export` "
                    "makes the current one", old, EXPORT_FORMAT, exc)


def link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:  # another filesystem
        shutil.copy2(source, target)


def reference_answers(folder: Path) -> list[str]:
    return list(json.loads((folder / REFERENCE).read_text(encoding="utf-8"))["answers"])


def export(settings: Settings, model_id: str, model_dir: Path, reference: Callable[[], list[str]]) -> Path:
    """The export folder, made now when it is missing; `reference()` gives PyTorch fp32's probe answers, stored
    beside it (runners/vlm/loader.torch_reference)."""
    found = find_export(settings, model_id, model_dir)
    if found is not None:
        return found
    folder = export_dir(settings, model_id, model_dir)
    with staged(folder) as temp:
        log.info("exporting %s to OpenVINO (%s weights) into %s: once per model", model_id, folder.name, folder)
        started = time.monotonic()
        run_exporter(settings, model_dir, temp, folder.name)
        seconds = time.monotonic() - started
        answers = reference()
        (temp / REFERENCE).write_text(json.dumps({"answers": answers}, ensure_ascii=False, indent=2) + "\n",
                                      encoding="utf-8")
        write_marker(temp, {"model_id": model_id, "weights": folder.name, "format": EXPORT_FORMAT,
                            "export_seconds": round(seconds, 1), "bytes": folder_bytes(temp)})
    return folder


def exporter_python(settings: Settings) -> Path:
    """The exporter environment's Python, the environment made first when missing (about 3 minutes)."""
    env = settings.vqa_export_env if settings.vqa_export_env.is_absolute() else ROOT / settings.vqa_export_env
    log.info("checking the OpenVINO exporter environment %s (made once by %s)", env, SETUP.name)
    done = subprocess.run(["bash", str(SETUP), str(env)], capture_output=True, text=True)
    if done.returncode != 0:
        raise ExportFailed(f"making the exporter environment {env} failed: {done.stderr.strip()[-2000:]}")
    return env / "bin" / "python"


def run_exporter(settings: Settings, model_dir: Path, out: Path, weights: str) -> None:
    command = [str(exporter_python(settings)), str(WORKER), str(model_dir), str(out), "--weights", weights]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise ExportFailed(f"the OpenVINO export of {model_dir} failed: {done.stderr.strip()[-3000:]}")
    windows.apply(out)


def folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())
