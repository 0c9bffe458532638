"""scripts/sample_library.py: the quick start's promise. The sample photos it writes, indexed by the real indexer
into the embedded store, are found by the tiny CLIP (a red circle first for "红色的圆形" and "a red circle"), and it
never writes into a folder that already holds something."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest
from helpers.indexing import index
from helpers.scripts import script

from config import Settings
from runners.clip import ClipEncoder
from store.qdrant_edge import EdgeStore

ROOT = Path(__file__).resolve().parents[2]


def sample_library() -> ModuleType:
    return script("sample_library")


def test_a_sample_red_circle_is_found_first(tmp_path: Path, tiny_clip_dir: Path) -> None:
    photos = sample_library().write(tmp_path / "images")
    encoder = ClipEncoder(str(tiny_clip_dir), device="cpu")
    store = EdgeStore(tmp_path / "qdrant", "images")
    try:
        summary, _ = index(store, encoder, tmp_path / "images")
        assert (summary.added, summary.failed) == (len(photos), 0)
        queries = encoder.encode_texts(["红色的圆形", "a red circle"])
        found = [[photos[hit.payload["path"]] for hit in store.search(query, 3)] for query in queries]
    finally:
        store.close()
    assert [ranked[0] for ranked in found] == [("circle", "red")] * 2, found


def test_it_writes_only_into_a_missing_or_empty_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    script = sample_library()
    library = tmp_path / "photos"
    library.mkdir()
    (library / "mine.jpg").write_bytes(b"a user's photo")
    assert script.main([str(library)]) == 1
    assert "is not empty" in capsys.readouterr().err
    assert [p.name for p in library.iterdir()] == ["mine.jpg"]
    assert script.main([str(tmp_path / "new")]) == 0
    assert any((tmp_path / "new").rglob("*.png"))


def test_if_tiny_writes_only_for_the_tiny_clip(tmp_path: Path, settings_env: Callable[..., Settings]) -> None:
    """serve.sh's unasked sample: the real CLIP knows nothing of these shapes, so it gets none."""
    script = sample_library()
    settings_env(IMAGE_LIBRARY=tmp_path / "images", CLIP_MODEL="OFA-Sys/chinese-clip-vit-base-patch16")
    assert script.main(["--if-tiny"]) == 0
    assert not (tmp_path / "images").exists()
    settings_env(IMAGE_LIBRARY=tmp_path / "images", CLIP_MODEL="tests/fixtures/tiny_clip")
    assert script.main(["--if-tiny"]) == 0
    assert any((tmp_path / "images").rglob("*.jpg"))
