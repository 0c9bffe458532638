"""The indexer job in this process: each stage on its own, then whole runs (incremental, failures, model
change), and the command line's refusals. The CLI run in a subprocess is tests/integration/test_indexer_cli.py."""

from __future__ import annotations

import io
import os
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
from helpers.indexing import contents, corrupt_files, index
from PIL import Image
from qdrant_client import QdrantClient
from shapes import draw_shape, make_library

from core.images import open_image
from indexer.decode import decode_entry
from indexer.plan import make_plan
from indexer.scan import scan_library
from runners.clip import ClipEncoder
from store.interface import ModelMismatchError, point_id
from store.qdrant_edge import EdgeStore
from store.qdrant_server import ServerStore


@pytest.fixture(scope="module")
def encoder(random_clip_dir: Path) -> ClipEncoder:
    return ClipEncoder(str(random_clip_dir), "cpu", model_id="random-clip")


@pytest.fixture(params=["edge", "server"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    if request.param == "edge":
        made: Any = EdgeStore(tmp_path / "qdrant", "images")
    else:
        made = ServerStore(QdrantClient(":memory:"), "images")
    yield made
    made.close()


# ---------------------------------------------------------------- stages


def test_scan_finds_images_recursively_case_insensitive(tmp_path: Path) -> None:
    for rel in ["a.JPG", "sub/b.jpeg", "sub/deep/c.PNG", "d.webp", "e.bmp", "f.GIF", "g.txt", ".hidden.jpg",
                ".cache/h.jpg"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    outside = tmp_path.parent / f"{tmp_path.name}-outside.jpg"
    outside.write_bytes(b"x")
    (tmp_path / "link.jpg").symlink_to(outside)
    found = [e.rel_path for e in scan_library(tmp_path)]
    assert found == ["a.JPG", "d.webp", "e.bmp", "f.GIF", "sub/b.jpeg", "sub/deep/c.PNG"]


def test_decode_handles_modes_animation_exif_and_bombs(tmp_path: Path) -> None:
    def encoded(image: Image.Image, fmt: str, **kw: Any) -> bytes:
        buf = io.BytesIO()
        image.save(buf, format=fmt, **kw)
        return buf.getvalue()

    base = draw_shape("square", "blue", size=64, seed=1)
    for image in [base.convert("RGBA"), base.convert("P"), base.convert("CMYK"), base.convert("L"),
                  Image.new("I;16", (40, 30), 40000)]:
        fmt = "JPEG" if image.mode == "CMYK" else "PNG"
        rgb, w, h = open_image(encoded(image, fmt))
        assert rgb.mode == "RGB" and (w, h) == image.size
    frames = [Image.new("RGB", (32, 32), c) for c in ((255, 0, 0), (0, 255, 0))]
    gif = encoded(frames[0], "GIF", save_all=True, append_images=frames[1:])
    first, _, _ = open_image(gif)
    assert first.getpixel((5, 5)) == (255, 0, 0)
    wide = Image.new("RGB", (80, 40), "white")
    exif = wide.getexif()
    exif[0x0112] = 6  # stored sideways: must come out rotated upright
    upright, w, h = open_image(encoded(wide, "JPEG", exif=exif))
    assert upright.size == (40, 80) and (w, h) == (40, 80)
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(encoded(Image.new("1", (20_000, 20_000)), "PNG"))
    entry = scan_library(tmp_path)[0]
    assert "too large" in (decode_entry(entry).error or "")


def test_plan_sorts_files_into_unchanged_check_and_stale(tmp_path: Path) -> None:
    make_library(tmp_path, n_per_class=1)
    entries = scan_library(tmp_path)
    kept, touched = entries[0], entries[1]
    payloads = {
        point_id(kept.rel_path): {"size": kept.size, "mtime": kept.mtime, "model_id": "m", "content_hash": "h1"},
        point_id(touched.rel_path): {"size": touched.size, "mtime": 1.0, "model_id": "m", "content_hash": "h2"},
        point_id("gone.jpg"): {"size": 1, "mtime": 1.0, "model_id": "m", "content_hash": "h3"},
    }
    plan = make_plan(entries, payloads, "m")
    assert plan.unchanged == [kept]
    assert len(plan.check) == len(entries) - 1 and touched in plan.check
    assert plan.stale_ids == [point_id("gone.jpg")]
    assert plan.reuse_source(touched, "h2") == point_id(touched.rel_path)
    assert plan.reuse_source(entries[2], "h3") == point_id("gone.jpg")
    assert make_plan(entries, payloads, "other-model").unchanged == []


# ---------------------------------------------------------------- whole runs


def test_first_run_indexes_everything_and_reports_failures(store: Any, encoder: ClipEncoder,
                                                            tmp_path: Path) -> None:
    library = tmp_path / "lib"
    shapes = make_library(library, n_per_class=1)
    broken = corrupt_files(library)
    summary, counting = index(store, encoder, library, batch_size=4, workers=2)
    assert (summary.scanned, summary.added, summary.failed) == (len(shapes) + 3, len(shapes), 3)
    assert counting.embedded == len(shapes)
    reasons = dict(summary.failures)
    for rel, word in broken.items():
        assert word in reasons[rel]
    stored = contents(store)
    assert set(stored) == {point_id(rel) for rel in shapes}
    payload = stored[point_id(next(iter(shapes)))]
    assert payload["path"] == next(iter(shapes)) and payload["model_id"] == "random-clip"
    assert payload["width"] in (64, 80, 96) and payload["size"] > 0 and len(payload["content_hash"]) == 32
    # vectors are the model's own image embeddings
    rel = sorted(shapes)[3]
    expected = encoder.encode_images([Image.open(library / rel).convert("RGB")])[0]
    assert store.vectors([point_id(rel)])[point_id(rel)] == pytest.approx(expected, abs=1e-4)


def test_incremental_runs_add_update_remove_rename_touch(store: Any, encoder: ClipEncoder,
                                                         tmp_path: Path) -> None:
    library = tmp_path / "lib"
    shapes = sorted(make_library(library, n_per_class=1))
    index(store, encoder, library)
    again, counting = index(store, encoder, library)
    assert (again.unchanged, again.added, again.updated, again.removed, counting.embedded) == (len(shapes), 0, 0, 0, 0)

    changed, deleted, renamed, touched = shapes[0], shapes[1], shapes[2], shapes[3]
    old_vector = store.vectors([point_id(renamed)])[point_id(renamed)]
    draw_shape("triangle", "purple", seed=7).save(library / changed)
    os.utime(library / changed, (time.time() + 5, time.time() + 5))
    (library / deleted).unlink()
    (library / "moved").mkdir()
    shutil.move(library / renamed, library / "moved" / Path(renamed).name)
    os.utime(library / touched, (time.time() + 10, time.time() + 10))
    new = library / "new.png"
    draw_shape("circle", "orange", seed=5).save(new)

    summary, counting = index(store, encoder, library)
    assert summary.updated == 1 and summary.removed == 2 and summary.added == 2
    assert summary.reused == 2  # the renamed file and the touched one kept their vectors
    assert counting.embedded == 2  # only the changed and the new file were embedded
    moved = f"moved/{Path(renamed).name}"
    stored = contents(store)
    assert point_id(moved) in stored and point_id(renamed) not in stored and point_id(deleted) not in stored
    assert store.vectors([point_id(moved)])[point_id(moved)] == pytest.approx(old_vector, abs=1e-6)
    assert stored[point_id(touched)]["mtime"] == pytest.approx((library / touched).stat().st_mtime)
    assert store.count() == len(shapes)

    final, counting = index(store, encoder, library)
    assert (final.unchanged, counting.embedded) == (len(shapes), 0)


def test_a_file_that_turns_corrupt_is_removed_and_reported(store: Any, encoder: ClipEncoder,
                                                            tmp_path: Path) -> None:
    library = tmp_path / "lib"
    shapes = sorted(make_library(library, n_per_class=1))
    index(store, encoder, library)
    (library / shapes[0]).write_bytes(b"garbage")
    summary, _ = index(store, encoder, library)
    assert summary.failed == 1 and summary.failures[0][0] == shapes[0]
    assert point_id(shapes[0]) not in contents(store)


def test_model_change_is_refused_unless_recreate(store: Any, encoder: ClipEncoder, tmp_path: Path) -> None:
    library = tmp_path / "lib"
    make_library(library, n_per_class=1)
    index(store, encoder, library)
    with pytest.raises(ModelMismatchError):
        store.ensure_collection("another-model", encoder.dim)
    store.ensure_collection("another-model", encoder.dim, recreate=True)
    assert store.count() == 0


# ---------------------------------------------------------------- failures while reading; the CLI in-process


def deny_listing(monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
    """Make `folder` unlistable: chmod 000, and for root (whom permissions do not stop) os.scandir refusing it.
    The caller restores the mode."""
    folder.chmod(0)
    if os.geteuid() != 0:
        return
    real = os.scandir

    def scandir(path: Any = ".") -> Any:
        if os.path.realpath(path) == os.path.realpath(folder):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)


def test_a_file_deleted_after_the_scan_is_gone_not_failed(tmp_path: Path) -> None:
    draw_shape("circle", "red").save(tmp_path / "a.png")
    entry = scan_library(tmp_path)[0]
    (tmp_path / "a.png").unlink()
    decoded = decode_entry(entry)
    assert decoded.gone and decoded.error is None


def test_unreadable_folder_is_reported_and_its_points_kept(store: Any, encoder: ClipEncoder, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    library = tmp_path / "lib"
    shapes = sorted(make_library(library, n_per_class=1))
    index(store, encoder, library)
    hidden = sorted(rel for rel in shapes if "/" in rel)
    folder = hidden[0].split("/")[0]
    outside = next(rel for rel in shapes if not rel.startswith(folder + "/"))
    (library / outside).unlink()
    try:
        with monkeypatch.context() as patch:
            deny_listing(patch, library / folder)
            summary, _ = index(store, encoder, library)
    finally:
        (library / folder).chmod(0o755)
    assert summary.failures == [(f"{folder}/", "cannot read folder: Permission denied")]
    assert (summary.failed, summary.removed) == (1, 1)  # the file deleted elsewhere still goes
    stored = {p["path"] for p in contents(store).values()}
    assert stored == set(shapes) - {outside}  # nothing under the unreadable folder was removed
    again, counting = index(store, encoder, library)
    assert (again.failed, again.unchanged, counting.embedded) == (0, len(shapes) - 1, 0)


def test_a_missing_library_or_a_file_as_library_removes_nothing(store: Any, encoder: ClipEncoder,
                                                                tmp_path: Path) -> None:
    library = tmp_path / "lib"
    shapes = make_library(library, n_per_class=1)
    index(store, encoder, library)
    for root, reason in [(tmp_path / "nowhere", "No such file or directory"),
                         (library / next(iter(shapes)), "Not a directory")]:
        summary, _ = index(store, encoder, root)
        assert summary.failures == [("./", f"cannot read folder: {reason}")]
        assert (summary.scanned, summary.removed) == (0, 0)
        assert store.count() == len(shapes)


def test_cli_refuses_a_library_that_is_a_file_or_unreadable(settings_env: Any, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    from indexer.__main__ import run

    settings_env(QDRANT_URL=None, QDRANT_PATH=tmp_path / "qdrant")
    a_file = tmp_path / "photo.jpg"
    a_file.write_bytes(b"x")
    assert run(["--library", str(a_file)]) == 2
    assert "is not a folder" in capsys.readouterr().err
    library = tmp_path / "lib"
    library.mkdir()
    try:
        deny_listing(monkeypatch, library)
        assert run(["--library", str(library)]) == 2
    finally:
        library.chmod(0o755)
    assert "cannot be read (Permission denied)" in capsys.readouterr().err
    assert not (tmp_path / "qdrant").exists()


def test_cli_exits_2_when_the_store_is_locked(random_clip_dir: Path, settings_env: Any, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    from indexer.__main__ import run

    library = tmp_path / "lib"
    make_library(library, n_per_class=1)
    settings_env(QDRANT_URL=None, QDRANT_PATH=tmp_path / "qdrant", CLIP_MODEL=random_clip_dir, DEVICE="cpu")
    assert run(["--library", str(library), "--no-progress"]) == 0
    holder = EdgeStore(tmp_path / "qdrant", "images")
    assert holder.count() > 0  # this handle holds the folder now
    try:
        assert run(["--library", str(library), "--no-progress"]) == 2
    finally:
        holder.close()
    assert "is in use" in capsys.readouterr().err
