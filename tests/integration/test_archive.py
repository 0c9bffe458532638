"""`python -m indexer --export / --import` (indexer/archive.py) on every backend (tests/helpers/stores.py): a
round trip keeps every point whole and every search answer; a truncated, altered or foreign archive is
refused before anything is written; importing twice changes nothing; another model's archive needs
--drop-vectors and then gives back its descriptions only."""

from __future__ import annotations

import gzip
import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from helpers.archives import answers, everything, everything_from, export, fill
from helpers.stores import BACKENDS, DIM, MODEL, Backend, make_points

from indexer import archive
from indexer.archive import export_archive, import_archive
from store.interface import IndexTuning, ModelMismatchError, Record, VectorStore


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    b = Backend(request.param, tmp_path / "source")
    yield b
    b.cleanup()


@pytest.fixture
def target(tmp_path: Path) -> Iterator[Backend]:
    b = Backend("edge", tmp_path / "target")
    yield b
    b.cleanup()


def test_round_trip_keeps_every_point_and_every_search_answer(backend: Backend, target: Backend,
                                                               tmp_path: Path) -> None:
    """Into the embedded store: every point whole; back into a store of the source's kind: the same answers."""
    source = backend.open()
    ids = fill(source)
    file = tmp_path / "lib.jsonl.gz"
    summary = export(source, file)
    assert summary.points == 40 and summary.described == 30 and file.read_bytes()[:2] == b"\x1f\x8b"
    restored = target.open()
    result = import_archive(restored, str(file), MODEL)
    assert (result.points, result.described) == (40, 30)
    assert everything(restored) == everything(source) and set(everything(restored)) == set(ids)
    assert restored.described_counts() == {"tiny-vlm|p1": 30}
    twin = Backend(backend.kind, tmp_path / "twin")
    try:
        again = twin.open()
        export(restored, tmp_path / "again.jsonl")
        import_archive(again, str(tmp_path / "again.jsonl"), MODEL)
        assert answers(again) == answers(source)
        assert answers(again)[0][0][1]  # not empty
    finally:
        twin.cleanup()


def test_importing_twice_changes_nothing_and_a_rerun_finishes_an_interrupted_import(
        archived: Path, target: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    store = target.open()
    monkeypatch.setattr(archive, "PAGE", 8)
    calls = {"n": 0}
    real = type(store).restore

    def dies_on_third_page(self: VectorStore, records: list[Record]) -> None:
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        real(self, records)  # type: ignore[arg-type]

    monkeypatch.setattr(type(store), "restore", dies_on_third_page)
    with pytest.raises(KeyboardInterrupt):
        import_archive(store, str(archived), MODEL)
    assert store.count() == 16
    monkeypatch.setattr(type(store), "restore", real)
    import_archive(store, str(archived), MODEL)
    first = everything(store)
    assert len(first) == 30
    import_archive(store, str(archived), MODEL)
    assert everything(store) == first and store.count() == 30


def test_points_not_in_the_archive_are_kept(archived: Path, target: Backend) -> None:
    store = target.open()
    store.ensure_collection(MODEL, DIM)
    extra = make_points(3, seed=7)
    store.upsert(extra)
    import_archive(store, str(archived), MODEL)
    assert store.count() == 33 and {p.id for p in extra} <= set(everything(store))


def test_another_models_archive_is_refused_unless_its_vectors_are_dropped(archived: Path, target: Backend) -> None:
    store = target.open()
    with pytest.raises(ModelMismatchError, match="--drop-vectors"):
        import_archive(store, str(archived), "test/clip-b")
    assert store.info() is None
    # --drop-vectors: the points made by the new model get the archived descriptions back (same content only).
    original = {r[2]["path"]: r for r in everything_from(archived).values()}
    store.ensure_collection("test/clip-b", DIM)
    points = make_points(30, seed=0)  # same paths and contents as the archive, new vectors
    for p in points:
        p.payload["model_id"] = "test/clip-b"
        p.vector = -p.vector
    points[1].payload["content_hash"] = "sha256:changed"  # this file changed since: no stale description
    store.upsert(points[:25])  # five are not indexed yet
    result = import_archive(store, str(archived), "test/clip-b", drop_vectors=True)
    described_in_archive = [p for p in points if original[p.payload["path"]][2].get("described_by")]
    now = everything(store)
    got = {now[p.id][2]["path"]: now[p.id][2].get("description") for p in points[:25]}
    assert got[points[1].payload["path"]] is None
    for p in described_in_archive:
        if p.id in now and p is not points[1]:
            assert got[p.payload["path"]] == original[p.payload["path"]][2]["description"]
            assert np.allclose(now[p.id][0], -np.asarray(original[p.payload["path"]][0]), atol=1e-6)  # kept
    assert result.described == len([p for p in described_in_archive if p.id in now]) - 1
    assert result.skipped == len(described_in_archive) - result.described
    assert store.search(None, 5, text="small dog")  # the text vectors came back too
    assert store.info().model_id == "test/clip-b"  # type: ignore[union-attr]


def test_a_collection_of_another_model_is_never_overwritten(archived: Path, target: Backend) -> None:
    store = target.open()
    store.ensure_collection("test/clip-b", DIM)
    with pytest.raises(ModelMismatchError):
        import_archive(store, str(archived), MODEL)
    assert store.count() == 0


def test_pipes_export_to_stdout_and_import_from_stdin(archived: Path, target: Backend,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    b = Backend("memory", archived.parent / "pipe")
    try:
        source = b.open()
        import_archive(source, str(archived), MODEL)
        out = io.BytesIO()
        monkeypatch.setattr("sys.stdout", io.TextIOWrapper(out))
        export_archive(source, "-", IndexTuning(), "images")
        piped = out.getvalue()
        assert piped.splitlines()[1:-1] == archived.read_bytes().splitlines()[1:-1]
        monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(gzip.compress(piped))))
        store = target.open()
        assert import_archive(store, "-", MODEL).points == 30
        assert everything(store) == everything(source)
    finally:
        b.cleanup()


def test_a_failed_export_leaves_no_archive_under_the_final_name(target: Backend, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    store = target.open()
    fill(store, 20)
    monkeypatch.setattr(archive, "PAGE", 4)
    real = type(store).records_page
    calls = {"n": 0}

    def fails(self: VectorStore, offset: object, limit: int) -> tuple[list[Record], object]:
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(28, "No space left on device")
        return real(self, offset, limit)  # type: ignore[arg-type]

    monkeypatch.setattr(type(store), "records_page", fails)
    with pytest.raises(OSError):
        export(store, tmp_path / "out.jsonl")
    assert list(tmp_path.glob("*out.jsonl*")) == []
