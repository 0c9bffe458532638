"""An archive is trusted only once every point in it passes --verify's rules (issue 30). Archives crafted with a
valid trailer (count and sha256 recomputed, as an edited archive given a new checksum would be) that hold a
hostile or broken point are refused at that point's line, exit 1, before anything is written; --drop-vectors
checks the same (all but the vector it drops); a line longer than any point can be is refused as it is read,
from a file or from stdin, in bounded memory: a 3 MB gzip whose one line expands to 3 GiB is refused by an
import process whose peak RSS is measured; --verify names the same problems in a store (one PointCheck)."""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers.archives import as_line, crafted, everything, gzip_bomb, lines_of
from helpers.stores import DIM, MODEL, make_points

from indexer import archive
from indexer.__main__ import run
from store.interface import point_id
from store.qdrant_edge import EdgeStore

REPO = Path(__file__).resolve().parents[2]
BOMB_BYTES = 3 << 30  # the line a 3 MB gzip expands to
PEAK_RSS_LIMIT = 256 << 20


def b64(values: Any, dtype: str = "<f4") -> str:
    return base64.b64encode(np.asarray(values, dtype=dtype).tobytes()).decode("ascii")


def edit_point(line_no: int, edit: Callable[[dict[str, Any]], None]) -> Callable[[list[bytes]], list[bytes]]:
    """A change to the point at `line_no` (1: the header): `edit` changes its parsed JSON in place."""

    def apply(lines: list[bytes]) -> list[bytes]:
        point = json.loads(lines[line_no - 1])
        edit(point)
        return lines[:line_no - 1] + [as_line(point)] + lines[line_no:]

    return apply


def moved_to(rel: str) -> Callable[[dict[str, Any]], None]:
    """The point given path `rel` and the id that path gives: only the path rule can refuse it."""

    def edit(point: dict[str, Any]) -> None:
        point["payload"]["path"] = rel
        point["id"] = point_id(rel)

    return edit


def setting(key: str, value: Any, where: str = "payload") -> Callable[[dict[str, Any]], None]:
    def edit(point: dict[str, Any]) -> None:
        (point[where] if where else point)[key] = value

    return edit


def line_4_twice(lines: list[bytes]) -> list[bytes]:
    return lines[:4] + [lines[3]] + lines[5:]


def long_header(lines: list[bytes]) -> list[bytes]:
    header = json.loads(lines[0])
    header["padding"] = "x" * (2 << 20)
    return [as_line(header)] + lines[1:]


LIBRARY_RULE = "a path the library rule refuses"
# what the archive is made into -> (the change, the line refused, what the message says)
POINT_CASES: dict[str, tuple[Callable[[list[bytes]], list[bytes]], int, str]] = {
    "a path out of the library": (edit_point(4, moved_to("../../../../etc/passwd")), 4,
                                  f"{LIBRARY_RULE} (leaves the library or is hidden)"),
    "an absolute path": (edit_point(4, moved_to("/etc/passwd.jpg")), 4,
                         f"{LIBRARY_RULE} (not a library-relative path)"),
    "a hidden component": (edit_point(4, moved_to("album/.private/me.jpg")), 4,
                           f"{LIBRARY_RULE} (leaves the library or is hidden)"),
    "two points with one id": (line_4_twice, 5, "a second point with the same id"),
    "an id another path gives": (edit_point(4, setting("id", point_id("album/elsewhere.jpg"), "")), 4,
                                 "an id that is not the one its path gives"),
    "a description that is a number": (edit_point(4, setting("description", 5)), 4,
                                       "a description field 'description' that is not text"),
    "tags that are numbers": (edit_point(4, setting("tags", [1, 2])), 4,
                              "description tags that are neither text nor a list of texts"),
    "a payload field that is an object": (edit_point(4, setting("camera", {"make": "x"})), 4,
                                          "a payload field that is not text, a number or a list of texts"),
    "a description too long": (edit_point(4, setting("description", "x" * 70_000)), 4,
                               "a description of over 65536 characters"),
    "text terms and weights that do not pair up": (
        edit_point(4, setting("text", {"terms": b64([1, 2, 3], "<u4"), "weights": b64([0.5, 0.5])}, "")), 4,
        "a text vector whose terms and weights do not pair up"),
    "a line longer than any point (plain)": (edit_point(4, setting("description", "x" * (10 << 20))), 4,
                                             "is longer than a point of 8 values can be"),
    "a header longer than any header": (long_header, 1, "is longer than an archive's header can be"),
}
VECTOR_CASES: dict[str, tuple[Callable[[list[bytes]], list[bytes]], int, str]] = {
    "a NaN vector": (edit_point(4, setting("vector", b64([np.nan] * DIM), "")), 4,
                     "a CLIP vector with values that are not finite"),
    "a zero vector": (edit_point(4, setting("vector", b64([0.0] * DIM), "")), 4,
                      "a CLIP vector that is not of unit length"),
    "a 1e30 vector": (edit_point(4, setting("vector", b64([1e30] * DIM), "")), 4,
                      "a CLIP vector that is not of unit length"),
    "a vector of the wrong size": (edit_point(4, setting("vector", b64(np.ones(DIM - 1) / np.sqrt(DIM - 1)), "")), 4,
                                   f"no CLIP vector of {DIM} values"),
}


@pytest.fixture
def store_folder(settings_env: Callable[..., Any], tmp_path: Path) -> Path:
    """The collection the CLI imports into (CLIP_MODEL is the archive's): 5 points of its own."""
    folder = tmp_path / "q"
    settings_env(CLIP_MODEL=MODEL, QDRANT_PATH=folder, QDRANT_URL=None)
    store = EdgeStore(folder, "images")
    store.ensure_collection(MODEL, DIM)
    store.upsert(make_points(5, seed=7))
    store.close()
    return folder


def contents(folder: Path) -> dict[str, Any]:
    store = EdgeStore(folder, "images")
    try:
        return everything(store)
    finally:
        store.close()


def refused(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """The one-line message of an import the CLI refuses with exit 1 (a bad archive)."""
    assert run(args) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err


def test_a_crafted_archive_left_sound_is_imported(archived: Path, store_folder: Path, tmp_path: Path) -> None:
    """The crafting itself (its trailer) is sound: the refusals below come from what is changed."""
    file = crafted(tmp_path / "same.jsonl", lines_of(archived))
    assert file.read_bytes() == archived.read_bytes()
    assert run(["--import", str(file)]) == 0 and len(contents(store_folder)) == 35


@pytest.mark.parametrize("case", list(POINT_CASES) + list(VECTOR_CASES))
def test_a_bad_point_is_refused_at_its_line_and_nothing_is_written(case: str, archived: Path, store_folder: Path,
                                                                   tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    change, line_no, problem = {**POINT_CASES, **VECTOR_CASES}[case]
    file = crafted(tmp_path / "bad.jsonl", change(lines_of(archived)))
    before = contents(store_folder)
    err = refused(["--import", str(file)], capsys)
    assert f"{file}, line {line_no}" in err and problem in err and "Nothing was written" in err, err
    assert "checksum" not in err and "trailer" not in err  # refused for what it says, not for its trailer
    assert ("--drop-vectors" in err) == (case in VECTOR_CASES)  # the way to take the descriptions alone
    assert contents(store_folder) == before


@pytest.mark.parametrize("case", list(POINT_CASES))
def test_drop_vectors_checks_the_same(case: str, archived: Path, store_folder: Path, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    change, line_no, problem = POINT_CASES[case]
    file = crafted(tmp_path / "bad.jsonl.gz", change(lines_of(archived)))
    file.write_bytes(__import__("gzip").compress(file.read_bytes()))
    before = contents(store_folder)
    err = refused(["--import", str(file), "--drop-vectors"], capsys)
    assert f"{file}, line {line_no}" in err and problem in err, err
    assert contents(store_folder) == before


def test_drop_vectors_still_takes_the_descriptions_of_points_with_damaged_vectors(
        archived: Path, settings_env: Callable[..., Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--verify's REPAIR (export, --recreate, --import --drop-vectors) for a store whose vectors are damaged:
    the vector is the one thing --drop-vectors does not read, so it is the one thing it does not check."""
    lines = lines_of(archived)
    damaged = json.loads(lines[3])
    damaged["vector"] = b64([np.nan] * DIM)
    file = crafted(tmp_path / "damaged.jsonl", lines[:3] + [as_line(damaged)] + lines[4:])
    settings_env(CLIP_MODEL=MODEL, QDRANT_PATH=tmp_path / "q", QDRANT_URL=None)
    store = EdgeStore(tmp_path / "q", "images")
    store.ensure_collection(MODEL, DIM)
    store.upsert(make_points(30, seed=0))  # the same files, re-embedded, not described yet
    store.close()
    assert run(["--import", str(file), "--drop-vectors"]) == 0
    assert "imported the descriptions of" in capsys.readouterr().out
    assert contents(tmp_path / "q")[damaged["id"]][2].get("description") == damaged["payload"].get("description")


class EndlessLine(io.RawIOBase):
    """stdin holding a header, then one line that never ends; counts the bytes it gave."""

    def __init__(self, header: bytes) -> None:
        super().__init__()
        self.head = header
        self.served = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self.served > 1 << 30:
            raise AssertionError("the import read on past any line limit")
        n = len(buffer)
        data = self.head[:n] + b"A" * max(0, n - len(self.head))
        self.head = self.head[n:]
        buffer[:n] = data
        self.served += n
        return n


def test_an_over_long_line_on_stdin_is_refused_as_it_comes(archived: Path, store_folder: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    stdin = EndlessLine(lines_of(archived)[0] + b'{"id":"x","vector":"')
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BufferedReader(stdin)))
    spool = tmp_path / "spool"
    spool.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spool))
    before = contents(store_folder)
    err = refused(["--import", "-"], capsys)
    assert "the archive on stdin, line 2, is longer than a point of 8 values can be" in err, err
    limit = archive.line_limit(DIM)
    assert stdin.served <= limit + (4 << 20)  # at once: the limit and a read buffer, not the line
    assert list(spool.iterdir()) == []  # the spool file is gone
    assert contents(store_folder) == before


@pytest.fixture(scope="module")
def bomb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    file = tmp_path_factory.mktemp("bomb") / "bomb.jsonl.gz"
    header = as_line({"format": "images-archive", "version": 1, "model_id": MODEL, "dim": DIM})
    assert gzip_bomb(file, header, BOMB_BYTES) < 4 << 20
    return file


# Runs the command given after it and prints the peak RSS (KiB) of that one child and its exit status. A child's
# ru_maxrss counts the image it was forked from until exec: forked from this small process, not from pytest's.
MEASURE = ("import resource, subprocess, sys; status = subprocess.call(sys.argv[1:], stdout=subprocess.DEVNULL); "
           "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, status)")


def import_process(args: list[str], env: dict[str, str], stdin: Any = None) -> tuple[int, str, int]:
    """`python -m indexer ARGS` in a process of its own: exit status, stderr, peak RSS in bytes."""
    done = subprocess.run([sys.executable, "-c", MEASURE, sys.executable, "-m", "indexer", *args], cwd=REPO,
                          env=env, stdin=stdin, capture_output=True, text=True, timeout=300)
    peak_kib, status = map(int, done.stdout.split())
    return status, done.stderr, peak_kib * 1024


@pytest.mark.parametrize("source", ["file", "stdin"])
def test_a_gzip_bomb_is_refused_in_bounded_memory(source: str, bomb: Path, store_folder: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    env = {**os.environ, "CLIP_MODEL": MODEL, "QDRANT_PATH": str(store_folder), "QDRANT_URL": ""}
    before = contents(store_folder)
    with open(bomb, "rb") as stdin:
        status, err, peak = import_process(["--import", str(bomb) if source == "file" else "-"], env,
                                           stdin if source == "stdin" else None)
    with capsys.disabled():
        print(f"\n{source}: a {bomb.stat().st_size}-byte gzip of a {BOMB_BYTES}-byte line: peak RSS "
              f"{peak / 2**20:.0f} MiB")
    assert status == 1, err
    assert "line 2, is longer than a point of 8 values can be" in err and "Nothing was written" in err, err
    assert peak <= PEAK_RSS_LIMIT
    assert contents(store_folder) == before


def test_the_densest_line_under_the_limit_is_parsed_in_bounded_memory(store_folder: Path, tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """A line just under the limit that parses into the most Python objects per byte (a million empty
    objects, ~70 bytes of memory for each 3 of JSON): memory stays under the same constant."""
    header = as_line({"format": "images-archive", "version": 1, "model_id": MODEL, "dim": DIM})
    start, end = b'{"id":"x","vector":null,"text":null,"payload":{"x":[{}', b"]}}\n"
    objects = (archive.line_limit(DIM) - len(start) - len(end)) // 3
    file = crafted(tmp_path / "dense.jsonl", [header, start + b",{}" * objects + end])
    env = {**os.environ, "CLIP_MODEL": MODEL, "QDRANT_PATH": str(store_folder), "QDRANT_URL": ""}
    status, err, peak = import_process(["--import", str(file)], env)
    with capsys.disabled():
        print(f"\n{objects} empty objects on one line: peak RSS {peak / 2**20:.0f} MiB")
    assert status == 1 and f"{file}, line 2, point id x:" in err, err
    assert peak <= PEAK_RSS_LIMIT


VERIFIED = ["a path out of the library", "an absolute path", "a hidden component", "an id another path gives",
            "a description that is a number", "a NaN vector"]


def test_verify_names_the_same_problems_in_a_store(archived: Path, store_folder: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """The bad points, written into a store behind the import's back (restore() writes what it is given),
    are named by --verify with the words the import refused them with."""
    cases = {**POINT_CASES, **VECTOR_CASES}
    store = EdgeStore(store_folder, "images")
    for turn, case in enumerate(VERIFIED):
        change, line_no, _ = cases[case]
        header, *points = lines_of(archived)
        turned = [header, *points[turn:], *points[:turn]]  # each case changes another point
        point = json.loads(change(turned)[line_no - 1])
        store.restore([archive.record_from_json(point, case, line_no)])
    store.close()
    assert run(["--verify"]) == 1
    err = capsys.readouterr().err
    for case in VERIFIED:
        assert cases[case][2] in err, (case, err)


class FullDisk(io.BytesIO):
    def write(self, data: Any) -> int:
        raise OSError(28, "No space left on device")


def test_a_full_spool_disk_is_named_as_such(archived: Path, store_folder: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """stdin is spooled as the first pass reads it: a full TMPDIR is a full disk, not a damaged archive."""
    before = contents(store_folder)
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(archived.read_bytes())))
    def full_spool(fd: int, mode: str) -> FullDisk:  # the spool file's handle, on a full disk
        os.close(fd)
        return FullDisk()

    monkeypatch.setattr(archive.os, "fdopen", full_spool)
    status = run(["--import", "-"])
    monkeypatch.undo()
    err = capsys.readouterr().err
    assert status == 1
    assert "cannot write the spool file (TMPDIR)" in err and "No space left on device" in err, err
    assert contents(store_folder) == before
