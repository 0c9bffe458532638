"""core/library.py: the one rule for which files are the library's, and the indexer's scan applying it."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.library import Library, NotInLibrary, is_image_name
from indexer.scan import scan_library

CHINESE = "相册 2024/海边 😀 a b.png"  # Chinese, emoji and spaces
NOT_UTF8 = "bad-\udcff.jpg"  # the bytes b"bad-\xff.jpg" as os.walk names them (surrogateescape)
NOT_UTF8_NAME = "bad-\\xff.jpg"  # ... and as the library names them (core/library.py: library_name)


@pytest.fixture
def library(tmp_path: Path) -> Library:
    root = tmp_path / "photos"
    for rel in ["ok.jpg", "sub/deep.PNG", CHINESE, "new\nline.jpg", ".secret.png", ".cache/a.jpg", "notes.txt"]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"x")
    (root / "folder.jpg").mkdir()
    (tmp_path / "outside.jpg").write_bytes(b"x")
    (root / "link_out.jpg").symlink_to(tmp_path / "outside.jpg")
    (root / "link_hidden.jpg").symlink_to(root / ".secret.png")
    (root / "link_hidden_folder.jpg").symlink_to(root / ".cache" / "a.jpg")
    (root / "link_text.jpg").symlink_to(root / "notes.txt")
    (root / "link_ok.jpg").symlink_to(root / "sub" / "deep.PNG")
    (root / "loop.jpg").symlink_to(root / "loop.jpg")
    (root / NOT_UTF8).write_bytes(b"x")  # Linux file systems take any bytes but NUL and "/"
    return Library(root)


ALLOWED = {  # path asked for -> the path the library answers with
    "ok.jpg": "ok.jpg",
    "./ok.jpg": "ok.jpg",
    "sub//deep.PNG": "sub/deep.PNG",
    CHINESE: CHINESE,
    "new\nline.jpg": "new\nline.jpg",
    "link_ok.jpg": "link_ok.jpg",  # a symlink to a library file
    NOT_UTF8_NAME: NOT_UTF8_NAME,
}
REFUSED = {
    "absolute": "/etc/passwd.jpg",
    "dotdot": "../outside.jpg",
    "dotdot inside": "sub/../ok.jpg",
    "hidden file": ".secret.png",
    "hidden folder": ".cache/a.jpg",
    "symlink out": "link_out.jpg",
    "symlink to a hidden file": "link_hidden.jpg",
    "symlink into a hidden folder": "link_hidden_folder.jpg",
    "symlink to a non-image": "link_text.jpg",
    "symlink loop": "loop.jpg",
    "non-image suffix": "notes.txt",
    "directory": "folder.jpg",
    "folder without suffix": "sub",
    "missing": "missing.jpg",
    "NUL": "ok.jpg\0.txt",
    "backslash": "sub\\deep.PNG",
    "empty": "",
    "a lone surrogate (a name as os.walk gives it, not its library name)": NOT_UTF8,
    "an escape of a byte that is UTF-8": "\\x6f\\x6b.jpg",
}


@pytest.mark.parametrize("asked", list(ALLOWED))
def test_library_files_are_found(library: Library, asked: str) -> None:
    found = library.resolve(asked)
    assert found.rel == ALLOWED[asked]
    assert found.real.is_file() and found.size == 1 and library.read_bytes(asked) == b"x"
    assert library.find(asked) == found


@pytest.mark.parametrize("case", list(REFUSED))
def test_everything_else_is_refused_like_a_missing_file(library: Library, case: str) -> None:
    with pytest.raises(NotInLibrary):
        library.resolve(REFUSED[case])
    with pytest.raises(NotInLibrary):
        library.read_bytes(REFUSED[case])
    assert library.find(REFUSED[case]) is None


def test_image_names_are_case_insensitive() -> None:
    assert all(is_image_name(n) for n in ["a.jpg", "a.JPEG", "a.Png", "a.webp", "a.bmp", "a.GIF"])
    assert not any(is_image_name(n) for n in ["a.txt", "jpg", "a.jpg.txt", "a.svg", "a.html"])


def test_scan_lists_exactly_what_the_rule_allows(library: Library) -> None:
    found = {entry.rel_path for entry in scan_library(library.root)}
    assert found == {"ok.jpg", "sub/deep.PNG", CHINESE, "new\nline.jpg", "link_ok.jpg", NOT_UTF8_NAME}
    for entry in scan_library(library.root):
        assert library.resolve(entry.rel_path).rel == entry.rel_path
