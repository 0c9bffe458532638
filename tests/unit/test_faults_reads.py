"""Issue 22 D1, D4 and D12, plain modules: library files are read through one no-follow descriptor
(core/library.py Library.open) by /images and by the indexer alike, so a file swapped for a link, a FIFO or
a folder link between the check and the read is refused, never read or waited on; the scan and --watch walk
a folder 1,000 levels deep; thumbnails are written durably, an emptied one is made again, a full cache warns
once; HEAD reads no body and a byte Range answers 206 / 416."""

from __future__ import annotations

import io
import logging
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from shapes import draw_shape
from starlette.applications import Starlette
from starlette.routing import Mount, Route
from starlette.testclient import TestClient

import core.files
from api import images
from api.errors import handles_errors
from api.images import ImageFiles
from core.library import Library, LibraryFile, NotInLibrary, OpenedFile
from indexer.decode import decode_entry
from indexer.scan import scan_library
from indexer.watch import snapshot


def jpeg(colour: str = "red") -> bytes:
    out = io.BytesIO()
    draw_shape("circle", colour, size=64).save(out, format="JPEG")
    return out.getvalue()


@pytest.fixture
def lib(tmp_path: Path) -> tuple[Path, Path]:
    """(library, outside): the library holds a.jpg and sub/b.jpg; outside a secret image next to it."""
    root, outside = tmp_path / "photos", tmp_path / "outside"
    (root / "sub").mkdir(parents=True)
    outside.mkdir()
    (root / "a.jpg").write_bytes(jpeg("red"))
    (root / "sub" / "b.jpg").write_bytes(jpeg("red"))
    (outside / "secret.jpg").write_bytes(jpeg("blue"))
    (outside / "b.jpg").write_bytes(jpeg("blue"))
    return root, outside


def swap_after_check(monkeypatch: pytest.MonkeyPatch, swap: Callable[[], None]) -> None:
    """Run `swap` right after the library rule has checked a path and before the file is read: the
    window an attacker races for (116 of 1,500 requests won it in the probe)."""
    original = Library.resolve

    def checked_then_swapped(self: Library, rel: str) -> LibraryFile:
        found = original(self, rel)
        swap()
        return found

    monkeypatch.setattr(Library, "resolve", checked_then_swapped)


def to_link(path: Path, target: Path) -> Callable[[], None]:
    def swap() -> None:
        path.unlink()
        path.symlink_to(target)
    return swap


def to_fifo(path: Path) -> Callable[[], None]:
    def swap() -> None:
        path.unlink()
        os.mkfifo(path)
    return swap


def within(seconds: float, func: Callable[[], Any]) -> Any:
    """func() run on a thread; fails the test (instead of hanging it) when it blocks."""
    result: dict[str, Any] = {}

    def run() -> None:
        try:
            result["value"] = func()
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            result["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), "the read blocked (a FIFO was opened for reading and waited on)"
    if "error" in result:
        raise result["error"]
    return result.get("value")


# -- D1: one descriptor ---------------------------------------------------------------------------------


def test_a_file_swapped_for_a_link_out_after_the_check_is_not_read(lib: tuple[Path, Path],
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    root, outside = lib
    swap_after_check(monkeypatch, to_link(root / "a.jpg", outside / "secret.jpg"))
    with pytest.raises(NotInLibrary):
        Library(root).read_bytes("a.jpg")


def test_a_folder_swapped_for_a_link_out_after_the_check_is_not_read(lib: tuple[Path, Path],
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    root, outside = lib

    def swap() -> None:
        os.rename(root / "sub", root / "sub-old")
        (root / "sub").symlink_to(outside, target_is_directory=True)

    swap_after_check(monkeypatch, swap)
    with pytest.raises(NotInLibrary):
        Library(root).read_bytes("sub/b.jpg")


def test_a_file_swapped_for_a_fifo_is_refused_without_blocking(lib: tuple[Path, Path],
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    root, _ = lib
    swap_after_check(monkeypatch, to_fifo(root / "a.jpg"))
    with pytest.raises(NotInLibrary, match="not a regular file"):
        within(5, lambda: Library(root).read_bytes("a.jpg"))


def test_a_file_over_library_max_file_mb_is_refused(lib: tuple[Path, Path]) -> None:
    root, _ = lib
    with pytest.raises(NotInLibrary, match="LIBRARY_MAX_FILE_MB"):
        Library(root).read_bytes("a.jpg", max_bytes=100)
    assert Library(root).read_bytes("a.jpg") == (root / "a.jpg").read_bytes()


def test_the_figures_come_from_the_descriptor_that_is_read(lib: tuple[Path, Path]) -> None:
    root, _ = lib
    with Library(root).open("a.jpg") as opened:
        (root / "a.jpg").unlink()  # gone by name; the descriptor still reads the file it checked
        assert opened.found.size == len(opened.read()) > 0
        assert opened.read(2, 3) == opened.read()[2:5]


def test_the_indexer_reads_through_the_same_rule(lib: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    root, outside = lib
    entry = next(e for e in scan_library(root) if e.rel_path == "a.jpg")
    (root / "a.jpg").unlink()
    (root / "a.jpg").symlink_to(outside / "secret.jpg")  # swapped after the scan
    decoded = decode_entry(entry)
    assert decoded.content_hash == "" and decoded.image is None
    assert decoded.error is not None and "cannot read" in decoded.error


def test_the_indexer_never_blocks_on_a_fifo_swapped_in(lib: tuple[Path, Path]) -> None:
    root, _ = lib
    entry = next(e for e in scan_library(root) if e.rel_path == "a.jpg")
    to_fifo(root / "a.jpg")()
    decoded = within(5, lambda: decode_entry(entry))
    assert decoded.error is not None and "not a regular file" in decoded.error


@pytest.fixture
def client(lib: tuple[Path, Path], tmp_path: Path) -> Iterator[TestClient]:
    files = ImageFiles(lib[0], tmp_path / "thumbnails", workers=1)
    app = Starlette(routes=[Mount("/", routes=[Route("/images/{path:path}", handles_errors(files.respond))])])
    with TestClient(app) as test_client:
        test_client.files = files  # type: ignore[attr-defined]
        yield test_client


def test_images_never_serves_what_was_swapped_in_after_the_check(client: TestClient, lib: tuple[Path, Path],
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    root, outside = lib
    swap_after_check(monkeypatch, to_link(root / "a.jpg", outside / "secret.jpg"))
    for size in ("0", "64"):
        (root / "a.jpg").unlink(missing_ok=True)
        (root / "a.jpg").write_bytes(jpeg("red"))
        response = client.get(f"/images/a.jpg?size={size}")
        assert response.status_code == 404 and response.content != (outside / "secret.jpg").read_bytes()


# -- D4: deep folders -------------------------------------------------------------------------------------


def test_a_folder_1000_levels_deep_is_scanned_and_watched(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    deep = root
    root.mkdir()
    for _ in range(1000):  # one by one: Path.mkdir(parents=True) and os.makedirs recurse themselves
        deep = deep / "d"
        deep.mkdir()
    (deep / "deep.jpg").write_bytes(jpeg())
    (root / "top.jpg").write_bytes(jpeg())
    rel = "d/" * 1000 + "deep.jpg"
    try:
        assert [e.rel_path for e in scan_library(root)] == sorted([rel, "top.jpg"])
        listed = snapshot(root)
        assert listed is not None and set(listed) == {rel, "top.jpg"}
        assert decode_entry(next(e for e in scan_library(root) if e.rel_path == rel)).error is None
    finally:  # pytest's own clean-up (shutil.rmtree) recurses too: take the tree down here, bottom up
        (deep / "deep.jpg").unlink()
        while deep != root:
            deep.rmdir()
            deep = deep.parent


# -- D12: thumbnails, HEAD and Range ---------------------------------------------------------------------


def test_the_atomic_write_reaches_the_disk_before_the_rename(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[int] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(core.files.os, "fsync", fsync)
    core.files.write_atomically(tmp_path / "t.jpg", b"data")
    assert synced and (tmp_path / "t.jpg").read_bytes() == b"data"


def test_an_emptied_cached_thumbnail_is_made_again(client: TestClient, tmp_path: Path) -> None:
    first = client.get("/images/a.jpg?size=32")
    assert first.status_code == 200 and first.content
    [cached] = [p for p in (tmp_path / "thumbnails").rglob("*.jpg")]
    cached.write_bytes(b"")  # what a crash between write and rename could leave before the fsync
    again = client.get("/images/a.jpg?size=32")
    assert again.status_code == 200 and again.content == first.content
    assert Image.open(io.BytesIO(again.content)).size == (32, 32)
    assert cached.read_bytes() == first.content


def test_a_cache_that_cannot_be_written_warns_once(lib: tuple[Path, Path], tmp_path: Path,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    blocked = tmp_path / "not-a-folder"
    blocked.write_bytes(b"")  # the cache "folder" is a file: every write fails, as on a full disk
    files = ImageFiles(lib[0], blocked, workers=1)
    app = Starlette(routes=[Mount("/", routes=[Route("/images/{path:path}", handles_errors(files.respond))])])
    with TestClient(app) as test_client, caplog.at_level(logging.WARNING, logger="service"):
        for size in (16, 24, 32, 40):
            assert test_client.get(f"/images/a.jpg?size={size}").status_code == 200
    warnings = [r for r in caplog.records if "cannot cache thumbnails" in r.getMessage()]
    assert len(warnings) == 1


def test_head_reads_no_body_and_renders_nothing(client: TestClient, lib: tuple[Path, Path],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    reads: list[Any] = []
    rendered: list[Any] = []
    real_read, real_render = OpenedFile.read, images.render

    def read(self: OpenedFile, *args: Any) -> bytes:
        reads.append(args)
        return real_read(self, *args)

    def render(*args: Any) -> bytes:
        rendered.append(args)
        return real_render(*args)

    monkeypatch.setattr(OpenedFile, "read", read)
    monkeypatch.setattr(images, "render", render)
    size = (lib[0] / "a.jpg").stat().st_size
    original = client.head("/images/a.jpg?size=0")
    assert original.status_code == 200 and original.headers["content-length"] == str(size)
    assert original.headers["content-type"] == "image/jpeg" and original.content == b""
    thumbnail = client.head("/images/a.jpg?size=48")
    assert thumbnail.status_code == 200 and thumbnail.headers["content-type"] == "image/jpeg"
    assert not rendered and all(a and a[1] is not None and a[1] < 4096 for a in reads)  # header bytes only
    assert client.get("/images/a.jpg?size=0").content == (lib[0] / "a.jpg").read_bytes()


def test_one_byte_range_is_206_and_past_the_end_is_416(client: TestClient, lib: tuple[Path, Path]) -> None:
    data = (lib[0] / "a.jpg").read_bytes()
    total = len(data)
    cases = {"bytes=0-9": (0, 10), "bytes=10-": (10, total), "bytes=-5": (total - 5, total),
             f"bytes=5-{total + 100}": (5, total)}
    for header, (start, end) in cases.items():
        part = client.get("/images/a.jpg?size=0", headers={"Range": header})
        assert part.status_code == 206, header
        assert part.content == data[start:end]
        assert part.headers["content-range"] == f"bytes {start}-{end - 1}/{total}"
    for header in (f"bytes={total}-", "bytes=-0"):
        refused = client.get("/images/a.jpg?size=0", headers={"Range": header})
        assert refused.status_code == 416 and refused.headers["content-range"] == f"bytes */{total}"
        assert refused.json()["error"]["code"] == "range_not_satisfiable"
    for ignored in ("bytes=0-1,4-5", "lines=1-2", "bytes=abc"):
        whole = client.get("/images/a.jpg?size=0", headers={"Range": ignored})
        assert whole.status_code == 200 and whole.content == data
    tag = client.get("/images/a.jpg?size=0").headers["etag"]
    stale = client.get("/images/a.jpg?size=0", headers={"Range": "bytes=0-9", "If-Range": '"old"'})
    assert stale.status_code == 200 and stale.content == data
    fresh = client.get("/images/a.jpg?size=0", headers={"Range": "bytes=0-9", "If-Range": tag})
    assert fresh.status_code == 206 and fresh.content == data[:10]
    assert client.get("/images/a.jpg?size=0").headers["accept-ranges"] == "bytes"
