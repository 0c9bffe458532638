"""A full disk meets the archive commands and the service's write path (issue 22, item 3): a clear message
and exit 1 (the indexer) or a 507 JSON error (the write path), the store never damaged, and a rerun once
space is freed converges on the whole archive. On a small tmpfs (root mounts one)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers.archives import everything_from, export, fill
from helpers.stores import MODEL, Backend

from indexer.__main__ import run
from indexer.archive import import_archive
from runners.clip import model_id_of
from store.interface import Record, StoreFullError
from store.qdrant_edge import MIN_FREE_BYTES, EdgeStore
from store.via_service import encode_call


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=400m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def leave_free(disk: Path, free: int) -> Path:
    """Fill `disk` with a ballast file until about `free` bytes are left."""
    ballast = disk / "ballast"
    have = shutil.disk_usage(disk).free + (ballast.stat().st_size if ballast.exists() else 0)
    with open(ballast, "wb") as fh:
        fh.truncate(0)
        os.posix_fallocate(fh.fileno(), 0, max(0, have - free))
    return ballast


@pytest.fixture(scope="module")
def big_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp_path = tmp_path_factory.mktemp("archive")
    store = EdgeStore(tmp_path / "src", "images")
    try:
        fill(store, 1500)
        export(store, tmp_path / "big.jsonl")
        return tmp_path / "big.jsonl"
    finally:
        store.close()


def test_import_stops_cleanly_on_a_full_disk_and_a_rerun_converges(small_disk: Path, big_archive: Path) -> None:
    store = EdgeStore(small_disk / "q", "images")
    store.ensure_collection(MODEL, 8)
    ballast = leave_free(small_disk, MIN_FREE_BYTES + 600_000)
    with pytest.raises(StoreFullError, match="disk"):
        import_archive(store, str(big_archive), MODEL)
    written = store.count()
    assert written < 1500
    store.close()
    ballast.unlink()
    again = EdgeStore(small_disk / "q", "images")  # opens: not damaged
    assert again.count() == written
    assert import_archive(again, str(big_archive), MODEL).points == 1500
    assert again.count() == 1500
    again.close()


def test_the_write_path_answers_507_on_a_full_disk(small_disk: Path, big_archive: Path) -> None:
    served = Backend("remote", small_disk)
    try:
        store = served.open()
        store.ensure_collection(MODEL, 8)
        leave_free(small_disk, MIN_FREE_BYTES + 300_000)
        client = served.served.client()  # type: ignore[union-attr]
        records = [Record(pid, np.asarray(v[0], np.float32), v[1], v[2])
                   for pid, v in list(everything_from(big_archive).items())[:256]]
        body = encode_call({"records": records})
        answer = None
        for _ in range(20):
            answer = client.post("/internal/store/restore", json=body, headers={"X-Indexer-Token": "test-token"})
            if answer.status_code != 200:
                break
        assert answer is not None and answer.status_code == 507
        assert answer.json()["error"]["code"] == "store_full" and "free disk space" in answer.json()["error"]["message"]
        with pytest.raises(StoreFullError):  # and the indexer's side of it
            store.restore(records)
    finally:
        served.cleanup()


def test_export_to_a_full_disk_exits_1_and_leaves_no_archive(small_disk: Path, tiny_clip_dir: Path,
                                                             settings_env: Callable[..., Any], tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    settings_env(CLIP_MODEL=tiny_clip_dir, QDRANT_PATH=tmp_path / "q", QDRANT_URL=None)
    store = EdgeStore(tmp_path / "q", "images")
    fill(store, 600, model=model_id_of(str(tiny_clip_dir)))
    store.close()
    ballast = leave_free(small_disk, 50_000)
    target = small_disk / "library.jsonl"
    assert run(["--export", str(target)]) == 1
    err = capsys.readouterr().err
    assert f"cannot write {target}: No space left on device" in err and "Traceback" not in err
    assert [p.name for p in small_disk.iterdir()] == ["ballast"]
    ballast.unlink()
    assert run(["--export", str(target)]) == 0
    assert "exported 600 points" in capsys.readouterr().out


def test_a_run_that_will_not_fit_is_warned_of_before_it_starts(small_disk: Path, random_clip_dir: Path,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    from PIL import Image

    from indexer.pipeline import Indexer, IndexOptions
    from runners.clip import ClipEncoder

    encoder = ClipEncoder(str(random_clip_dir), "cpu", model_id="random-clip")
    store = EdgeStore(small_disk / "q", "images")
    store.ensure_collection(encoder.model_id, encoder.dim)
    assert store.space_problem(10) is None
    library = small_disk.parent / "library"
    library.mkdir()
    for i in range(3):
        Image.new("RGB", (40, 30), (i * 60, 0, 0)).save(library / f"{i}.png")
    leave_free(small_disk, MIN_FREE_BYTES + 1000)
    with caplog.at_level("WARNING"), pytest.raises(StoreFullError):
        Indexer(store, encoder, IndexOptions(progress=False, workers=1)).run(library)
    warned = [r.getMessage() for r in caplog.records if "writing 3 points" in r.getMessage()]
    assert warned and "MiB free" in warned[0] and "run it again once space is freed" in warned[0]
    store.close()
