"""Hostile file names (issue 11) without a server: the scan and the library rule, the round trip of a
library name through JSON and /images URLs (the real Starlette route), the indexer's summary of the
names it skips, printed on any console. The whole path through `bentoml serve` and the web page is
tests/integration/test_faults_names_served.py."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote_to_bytes, urlsplit

import numpy as np
import pytest
from helpers.hostile_names import INDEXED, REASON, SKIPPED, make_hostile_library
from PIL import Image
from starlette.applications import Starlette
from starlette.routing import Mount, Route
from starlette.testclient import TestClient

from api.errors import ApiError, handles_errors
from api.images import ImageFiles
from api.search_fields import image_urls, library_folder
from core.library import Library, NotInLibrary, library_name, raw_name
from indexer.__main__ import print_summary
from indexer.pipeline import Indexer, Summary
from indexer.pipeline import IndexOptions as Options
from indexer.scan import scan_library
from store.interface import point_id
from store.qdrant_edge import EdgeStore


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[bytes, bytes]]:
    root = tmp_path_factory.mktemp("names") / "photos"
    return root, make_hostile_library(root)


def test_the_table_holds_every_kind_of_name() -> None:
    raw = list(INDEXED)
    assert len(INDEXED) + len(SKIPPED) >= 30
    assert any(b"\n" in r for r in raw) and any(len(os.path.basename(r)) == 255 for r in raw)
    assert sum(1 for r in raw if not is_utf8(r)) >= 5
    assert len({library_name(r) for r in raw}) == len(raw)  # one name per file, NFC and NFD apart


def test_the_scan_names_every_file_and_lists_what_it_skips(hostile: tuple[Path, dict[bytes, bytes]]) -> None:
    root, written = hostile
    refused: list[tuple[str, str]] = []
    entries = scan_library(root, refused=refused)
    assert {entry.rel_path for entry in entries} == set(INDEXED.values())
    assert sorted(refused) == sorted((name, REASON) for name in SKIPPED.values())
    library = Library(root)
    for raw, name in INDEXED.items():
        assert library_name(raw) == name and raw_name(name) == raw
        found = library.resolve(name)
        assert found.rel == name and library.read_bytes(name) == written[raw], name


@pytest.mark.parametrize("name", list(INDEXED.values()), ids=ascii)
def test_a_name_round_trips_through_json_urls_and_ids(name: str) -> None:
    sent = json.dumps({"image": name}, ensure_ascii=False).encode("utf-8")  # strict UTF-8: no lone surrogates
    assert json.loads(sent.decode("utf-8"))["image"] == name
    for url in image_urls(name).values():
        assert url.isascii() and " " not in url and "#" not in url
        parts = urlsplit(url)
        assert parts.query in ("size=256", "size=0")
        assert library_name(unquote_to_bytes(parts.path.removeprefix("/images/"))) == name
    assert point_id(name) == point_id(library_name(os.fsdecode(raw_name(name))))  # the id comes from the bytes


@pytest.mark.parametrize("spelling", ["\\xe4\\xb8\\x8a.jpg", "\\xC9\\xcf.jpg", "\\x41.jpg", "\udcc9.jpg",
                                      "back\\slash.jpg", "\\xc9"])
def test_a_file_has_one_spelling_only(hostile: tuple[Path, dict[bytes, bytes]], spelling: str) -> None:
    """Escapes of bytes that are UTF-8, upper-case hex, lone surrogates and stray backslashes name no file."""
    with pytest.raises(NotInLibrary):
        Library(hostile[0]).resolve(spelling)


def test_images_serves_every_name_from_its_urls(hostile: tuple[Path, dict[bytes, bytes]], tmp_path: Path) -> None:
    root, written = hostile
    files = ImageFiles(root, tmp_path / "thumbnails", workers=1)
    app = Starlette(routes=[Mount("/", routes=[Route("/images/{path:path}", handles_errors(files.respond))])])
    # mounted at "/" as BentoML mounts service.py's routes
    with TestClient(app) as client:
        for raw, name in INDEXED.items():
            urls = image_urls(name)
            original = client.get(urls["image_url"])
            assert (original.status_code, original.content) == (200, written[raw]), name
            thumbnail = client.get(urls["thumbnail_url"])
            assert thumbnail.status_code == 200 and thumbnail.headers["content-type"] == "image/jpeg", name
            assert Image.open(io.BytesIO(thumbnail.content)).size == (48, 48)
        for raw in SKIPPED:
            assert client.get("/images/" + quote(raw, safe="/")).status_code == 404
        escaped = client.get("/images/%5Cxc9%CF%BA%5Cxa3.jpg?size=0")  # the library name itself is no URL
        assert escaped.status_code == 404


def test_folders_with_bytes_that_are_not_utf8_can_be_filtered() -> None:
    assert library_folder("/\\xd5\\xd5\\xc6\\xac/") == "\\xd5\\xd5\\xc6\\xac"
    assert library_folder("上海 外滩") == "上海 外滩"
    for bad in ["a\\b", "\\x41"]:
        with pytest.raises(ApiError):
            library_folder(bad)


class RandomEncoder:
    model_id = "random"
    dim = 8

    def encode_images(self, images: list[Image.Image]) -> np.ndarray:
        return np.random.default_rng(len(images)).normal(size=(len(images), self.dim)).astype(np.float32)


def test_an_indexer_run_takes_every_name_and_lists_the_skipped(hostile: tuple[Path, dict[bytes, bytes]],
                                                               tmp_path: Path) -> None:
    store = EdgeStore(tmp_path / "qdrant", "images")
    try:
        store.ensure_collection(RandomEncoder.model_id, RandomEncoder.dim)
        summary = Indexer(store, RandomEncoder(), Options(batch_size=8, workers=2, progress=False)).run(hostile[0])
        stored = {payload["path"] for _, payload in store.payloads()}
    finally:
        store.close()
    assert (summary.scanned, summary.added, summary.failed) == (len(INDEXED) + len(SKIPPED), len(INDEXED),
                                                                 len(SKIPPED))
    assert stored == set(INDEXED.values())
    assert sorted(summary.failures) == sorted((name, REASON) for name in SKIPPED.values())


@pytest.mark.parametrize("encoding", ["utf-8", "ascii", "latin-1"])
def test_the_summary_prints_any_name_on_any_console(encoding: str) -> None:
    names = [*INDEXED.values(), *SKIPPED.values()]
    summary = Summary(failed=len(names), failures=[(name, "a reason") for name in names])
    text = console(encoding)
    print_summary(summary, as_json=False, out=text)
    lines = read(text).splitlines()
    assert len(lines) == 2 + len(names)  # a newline in a name does not break its line
    assert lines[1 + names.index("new\nline.jpg")] == "  failed: new\\nline.jpg: a reason"
    as_json = console(encoding)
    print_summary(summary, as_json=True, out=as_json)
    assert [tuple(f) for f in json.loads(read(as_json))["failures"]] == summary.failures


def console(encoding: str) -> io.TextIOWrapper:
    return io.TextIOWrapper(io.BytesIO(), encoding=encoding, newline="\n")


def read(text: io.TextIOWrapper) -> str:
    text.flush()
    buffer: Any = text.buffer
    return str(buffer.getvalue().decode(text.encoding, "replace"))


def is_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
