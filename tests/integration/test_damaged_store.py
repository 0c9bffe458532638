"""A damaged embedded store (issue 22, D5): each kind of damaged file gives a clear error naming the folder
and the way back, in the indexer and in the service; the service refuses the scores a cosine cannot give,
says "damaged" in /health (degraded) and is not ready; no client message carries a server path."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers.archives import fill
from helpers.stores import make_points

from api.errors import ApiError
from api.health import health_report
from api.store_calls import StoreCalls
from indexer.__main__ import run
from runners.clip import model_id_of
from store.interface import StoreDamagedError
from store.qdrant_edge import EdgeStore


class Ready:
    """A runner that is loaded."""

    def __init__(self) -> None:
        self.to_async = self

    async def info(self) -> dict[str, Any]:
        return {"device": "cpu"}


def garble_vectors(shard: Path) -> None:
    chunk = next(shard.rglob("vector_storage/vectors/chunk_0.mmap"))
    with open(chunk, "r+b") as fh:
        fh.seek(5 * 8 * 4)
        fh.write(b"\x7e" * 8 * 4)  # one vector's values become ~8e37


def truncate_vectors(shard: Path) -> None:
    os.truncate(next(shard.rglob("vector_storage/vectors/chunk_0.mmap")), 100)


def garble_wal(shard: Path) -> None:
    with open(shard / "wal" / "open-1", "r+b") as fh:
        fh.write(b"\x00\xff" * 2048)


def garble_segment_state(shard: Path) -> None:
    next(shard.rglob("segment.json")).write_text("{garbage")


DAMAGE: dict[str, Callable[[Path], None]] = {
    "garbled vectors": garble_vectors, "truncated vectors": truncate_vectors, "garbled WAL": garble_wal,
    "garbled segment state": garble_segment_state}


@pytest.fixture
def sound(tmp_path: Path) -> Path:
    folder = tmp_path / "sound"
    store = EdgeStore(folder, "images")
    fill(store, 12)
    store.close()
    return folder


@pytest.mark.parametrize("kind", list(DAMAGE))
def test_the_service_refuses_a_damaged_store_and_says_so(kind: str, sound: Path, tmp_path: Path) -> None:
    folder = tmp_path / "q"
    shutil.copytree(sound, folder)
    DAMAGE[kind](folder / "images")
    store = EdgeStore(folder, "images")
    calls = StoreCalls(store, retry_after_s=3)
    try:
        with pytest.raises(StoreDamagedError) as found:  # what service.py's check_store() runs at start
            store.check()
        assert str(folder) in str(found.value) and "--import" in str(found.value) and "--recreate" in str(found.value)
        calls.mark_damaged(found.value)
        query = make_points(1, seed=9)[0].vector
        for direction in (query, -query):
            with pytest.raises(ApiError) as refused:
                asyncio.run(calls.run(store.search, direction, 12))
            error = refused.value
            assert (error.status, error.code) == (503, "store_damaged")
            assert "/" + "tmp" not in error.message and str(tmp_path) not in error.message
            assert "python -m indexer --verify" in error.message
        report = asyncio.run(health_report(Ready(), Ready(), calls, "test/clip-a", "qwen"))
        assert (report["status"], report["store"]) == ("degraded", "damaged")
    finally:
        calls.thread.shutdown()
        store.close()


def test_without_the_start_probe_a_search_meeting_an_impossible_score_is_refused(sound: Path) -> None:
    garble_vectors(sound / "images")
    store = EdgeStore(sound, "images")
    calls = StoreCalls(store, retry_after_s=3)
    try:
        query = make_points(1, seed=9)[0].vector
        codes = set()
        for direction in (query, -query):
            try:
                hits = asyncio.run(calls.run(store.search, direction, 12))
                assert all(abs(h.score) <= 1.001 for h in hits)
            except ApiError as exc:
                codes.add(exc.code)
        assert codes == {"store_damaged"} and calls.damaged
    finally:
        calls.thread.shutdown()
        store.close()


def test_an_unavailable_store_message_carries_no_server_path(tmp_path: Path) -> None:
    store = EdgeStore(tmp_path / "deep" / "qdrant", "images")
    calls = StoreCalls(store, retry_after_s=3)
    try:
        message = calls.public(f"Qdrant Edge search failed on {tmp_path}/deep/qdrant/images: cannot open "
                               "/var/lib/x/segments/1 (see http://qdrant:6333/collections/images)")
        assert str(tmp_path) not in message and "/var/lib" not in message
        assert "QDRANT_PATH/images" in message and "<server path>" in message
        assert "http://qdrant:6333/collections/images" in message
    finally:
        calls.thread.shutdown()


@pytest.mark.parametrize("kind", ["garbled WAL", "garbled segment state", "garbled vectors"])
def test_the_indexer_names_the_damaged_folder_and_the_way_back(kind: str, sound: Path, tiny_clip_dir: Path,
                                                               settings_env: Callable[..., Any], tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    model = model_id_of(str(tiny_clip_dir))
    folder = tmp_path / "q"
    store = EdgeStore(folder, "images")
    fill(store, 6, model=model)
    store.close()
    DAMAGE[kind](folder / "images")
    library = tmp_path / "library"
    library.mkdir()
    settings_env(CLIP_MODEL=tiny_clip_dir, QDRANT_PATH=folder, QDRANT_URL=None)
    assert run(["--library", str(library), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert (f"the vector store folder {folder} (QDRANT_PATH) is damaged" in err
            or f"collection 'images' in {folder} answered a similarity of" in err)
    assert "--import FILE" in err and "--recreate" in err
    assert run(["--library", str(library), "--no-progress", "--recreate"]) == 0  # the way back works
    assert run(["--verify"]) == 0
