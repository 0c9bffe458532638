"""Moving a library between backends with `python -m indexer --export / --import` (docs/backup-and-migration.md):
embedded store -> a Qdrant server (qdrant-client's local mode on disk, as tests/helpers/stores.py stands in
for one) -> a new embedded store gives back every point and the same answers in every search mode, with
no model call; the command line's exits and messages, --verify on a sound and on a damaged store."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers.archives import answers, export, fill, same_points

from indexer.__main__ import run
from indexer.archive import import_archive
from runners.clip import model_id_of
from store.interface import Point, point_id
from store.qdrant_edge import EdgeStore
from store.qdrant_server import ServerStore


def test_embedded_to_server_and_back_keeps_every_point_and_every_answer(tmp_path: Path) -> None:
    from qdrant_client import QdrantClient

    first = EdgeStore(tmp_path / "first", "images")
    server = ServerStore(QdrantClient(path=str(tmp_path / "server")), "library")
    back = EdgeStore(tmp_path / "back", "images")
    try:
        fill(first, 60)
        export(first, tmp_path / "to-server.jsonl.gz")
        import_archive(server, str(tmp_path / "to-server.jsonl.gz"), "test/clip-a")
        export(server, tmp_path / "from-server.jsonl")
        import_archive(back, str(tmp_path / "from-server.jsonl"), "test/clip-a")
        assert same_points(back, first)
        assert answers(back) == answers(first)  # vector, hybrid with a filter, text
        assert back.described_counts() == first.described_counts() == {"tiny-vlm|p1": 45}
    finally:
        for store in (first, server, back):
            store.close()


def garble_vector(shard: Path, n: int, dim: int = 8) -> None:
    """Overwrite the n-th stored vector of a (closed) embedded shard, as a disk fault would."""
    chunk = next(shard.rglob("vector_storage/vectors/chunk_0.mmap"))
    with open(chunk, "r+b") as fh:
        fh.seek(n * dim * 4)
        fh.write(b"\x7e" * dim * 4)


@pytest.fixture
def no_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any CLIP model load fails the test: backups and checks need none."""
    from runners.clip import ClipEncoder

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the CLIP model was loaded")

    monkeypatch.setattr(ClipEncoder, "__init__", refuse)  # every way of building one (runners/clip/loader.py)


def test_command_line_export_verify_import(tiny_clip_dir: Path, settings_env: Callable[..., Any], tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str], no_model: None) -> None:
    model = model_id_of(str(tiny_clip_dir))
    settings_env(CLIP_MODEL=tiny_clip_dir, QDRANT_PATH=tmp_path / "old", QDRANT_URL=None)
    store = EdgeStore(tmp_path / "old", "images")
    fill(store, 20, model=model)
    store.close()
    archive = tmp_path / "library.jsonl.gz"
    assert run(["--export", str(archive)]) == 0
    assert f"exported 20 points (15 described) to {archive}" in capsys.readouterr().out
    assert run(["--verify"]) == 0
    assert "ok: 20 points checked" in capsys.readouterr().out

    settings_env(QDRANT_PATH=tmp_path / "new")
    assert run(["--import", str(archive)]) == 0
    assert "imported 20 points (15 described)" in capsys.readouterr().out
    assert run(["--import", str(archive)]) == 0  # twice: nothing changes
    assert run(["--verify"]) == 0
    new = EdgeStore(tmp_path / "new", "images")
    assert new.count() == 20
    new.close()

    altered = tmp_path / "altered.jsonl"
    lines = __import__("gzip").decompress(archive.read_bytes()).splitlines(keepends=True)
    # a point edited into another sound point: only the checksum tells
    altered.write_bytes(b"".join(lines[:4] + [lines[4].replace(b'"outdoor"', b'"indoor"', 1)] + lines[5:]))
    settings_env(QDRANT_PATH=tmp_path / "third")
    assert run(["--import", str(altered)]) == 1
    err = capsys.readouterr().err
    assert "checksum" in err and "Nothing was written" in err and str(altered) in err
    assert not (tmp_path / "third" / "images").exists()

    settings_env(CLIP_MODEL="OFA-Sys/chinese-clip-vit-base-patch16")
    assert run(["--import", str(archive)]) == 2
    assert "--drop-vectors" in capsys.readouterr().err
    assert run(["--drop-vectors"]) == 2


def test_verify_names_what_is_damaged_and_the_way_back(tiny_clip_dir: Path, settings_env: Callable[..., Any],
                                                       tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                       no_model: None) -> None:
    model = model_id_of(str(tiny_clip_dir))
    settings_env(CLIP_MODEL=tiny_clip_dir, QDRANT_PATH=tmp_path / "q", QDRANT_URL=None)
    store = EdgeStore(tmp_path / "q", "images")
    fill(store, 12, model=model)
    path = "album/0/photo 3.jpg"
    wrong = Point(point_id("album/elsewhere.jpg"), np.ones(8, np.float32) / np.sqrt(8),
                  {"path": path, "model_id": model, "description": 5})
    store.upsert([wrong])
    store.close()
    garble_vector(tmp_path / "q" / "images", 7)
    assert run(["--verify"]) == 1
    err = capsys.readouterr().err
    assert "damaged:" in err and "13 points read" in err
    assert f"an id that is not the one its path gives: 1 (e.g. {path})" in err
    assert "a description field 'description' that is not text: 1" in err
    assert "a CLIP vector that is not of unit length: 1 (e.g. album/0/photo " in err
    assert "--import" in err and "--recreate" in err
