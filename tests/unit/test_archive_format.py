"""The archive format (indexer/archive.py): its header and trailer, and refusals of a truncated, altered or
foreign archive before anything is written (the round trips on every backend: tests/integration/test_archive.py)."""

from __future__ import annotations

import gzip
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.archives import export, fill
from helpers.stores import DIM, MODEL, Backend

from indexer.archive import ArchiveError, import_archive


@pytest.fixture
def target(tmp_path: Path) -> Iterator[Backend]:
    b = Backend("memory", tmp_path / "target")
    yield b
    b.cleanup()


def test_header_records_the_model_and_trailer_counts_and_hashes(tmp_path: Path) -> None:
    b = Backend("memory", tmp_path)
    try:
        store = b.open()
        fill(store, 5)
        file = tmp_path / "a.jsonl"
        export(store, file)
        lines = file.read_bytes().splitlines(keepends=True)
        header, trailer = json.loads(lines[0]), json.loads(lines[-1])
        assert header["format"] == "images-archive" and header["version"] == 1
        assert (header["model_id"], header["dim"], header["described_by"]) == (MODEL, DIM, {"tiny-vlm|p1": 3})
        assert header["index"]["m"] == 32
        assert trailer == {"end": True, "count": 5, "sha256": hashlib.sha256(b"".join(lines[:-1])).hexdigest()}
    finally:
        b.cleanup()


def damaged_versions(file: Path) -> dict[str, bytes]:
    data = file.read_bytes()
    lines = data.splitlines(keepends=True)
    record = json.loads(lines[3])
    record["payload"]["description"] = "altered"
    return {
        "truncated mid-line": data[: len(data) // 2],
        "truncated at a line end (no trailer)": b"".join(lines[:-1]),
        "a record altered": b"".join(lines[:3] + [json.dumps(record).encode() + b"\n"] + lines[4:]),
        "a record removed": b"".join(lines[:3] + lines[4:]),
        "a line garbled": b"".join(lines[:5] + [b"{not json\n"] + lines[6:]),
        "data after the trailer": data + lines[2],
        "not an archive": b'{"hello": 1}\n',
        "empty": b"",
    }


def test_a_damaged_archive_is_refused_and_nothing_is_written(archived: Path, target: Backend, tmp_path: Path) -> None:
    store = target.open()
    for what, data in damaged_versions(archived).items():
        bad = tmp_path / "bad.jsonl"
        bad.write_bytes(data)
        with pytest.raises(ArchiveError) as caught:
            import_archive(store, str(bad), MODEL)
        message = str(caught.value)
        assert str(bad) in message, what
        assert any(w in message for w in ("truncated", "checksum", "damaged", "altered", "not an archive",
                                          "empty", "trailer says")), (what, message)
        assert store.info() is None and store.count() == 0, what  # not even the collection was made


def test_a_cut_gzip_archive_is_refused(archived: Path, target: Backend, tmp_path: Path) -> None:
    zipped = gzip.compress(archived.read_bytes())
    bad = tmp_path / "cut.jsonl.gz"
    bad.write_bytes(zipped[: len(zipped) - 40])
    store = target.open()
    with pytest.raises(ArchiveError, match="truncated|damaged"):
        import_archive(store, str(bad), MODEL)
    assert store.count() == 0
