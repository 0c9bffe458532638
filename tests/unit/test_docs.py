"""The documentation: a short README, docs/settings.md generated from config.py and current, every relative link
and #anchor of README.md and docs/*.md resolving, and every section of the old long README still at home."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest

from config import Settings

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
README_MAX_LINES = 300

# Every heading of README.md as it was before the cut (`git show main:README.md`, issue 23): each must still be
# a heading of README.md or of a docs/*.md file, or be listed in RENAMED.
OLD_README_HEADINGS = [
    "Multimodal model server",
    "Quick start",
    "Web page",
    "API",
    "`POST /text2image_search`",
    "`POST /image2image_search`",
    "`GET /images/{path}`",
    "`POST /vqa`",
    "OpenAI-compatible chat",
    "Asking the library: `POST /ask`",
    "`GET /health`",
    "Python client",
    "Errors and API contract",
    "Security and limits",
    "Indexing a photo library",
    "Watch mode: `python -m indexer --watch`",
    "Descriptions and hybrid search",
    "Vector store",
    "Processes",
    "Models",
    "CLIP backends",
    "Running in production",
    "Build a Bento and a GPU image",
    "Qdrant server or cluster",
    "The indexer as a separate job",
    "The indexer in watch mode, as a service",
    "Behind a reverse proxy",
    "Scaling",
    "Metrics",
    "Logs and request ids",
    "Settings",
    "Development",
    "Benchmarks on a GPU",
    "Layout",
    "How a request flows",
]
# old heading -> its heading now, where the text changed
RENAMED: dict[str, str] = {"CLIP backends": "CLIP runtimes"}


def settings_doc() -> ModuleType:
    """scripts/settings_doc.py, loaded from its file (scripts/ is not a package)."""
    spec = importlib.util.spec_from_file_location("settings_doc", ROOT / "scripts" / "settings_doc.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("settings_doc", module)
    spec.loader.exec_module(module)
    return module


def doc_files() -> list[Path]:
    return [README, *sorted((ROOT / "docs").glob("*.md"))]


def prose(text: str) -> str:
    """The text without fenced code blocks (lines kept, emptied) and without inline code spans."""
    lines, fence = [], ""
    for line in text.split("\n"):
        marker = re.match(r"\s*(`{3,}|~{3,})", line)
        if marker and (not fence or marker.group(1).startswith(fence)):
            fence = "" if fence else marker.group(1)
            lines.append("")
            continue
        lines.append("" if fence else line)
    return re.sub(r"(`+)(?!`).+?(?<!`)\1(?!`)", "", "\n".join(lines), flags=re.DOTALL)


def headings(text: str) -> list[str]:
    """The ATX headings' text, fenced code excluded (inline code kept, as it is part of the heading)."""
    found, fence = [], ""
    for line in text.split("\n"):
        marker = re.match(r"\s*(`{3,}|~{3,})", line)
        if marker and (not fence or marker.group(1).startswith(fence)):
            fence = "" if fence else marker.group(1)
        elif not fence and (match := re.match(r"#{1,6}\s+(.+?)\s*#*\s*$", line)):
            found.append(match.group(1))
    return found


def slug(heading: str) -> str:
    """GitHub's anchor for a heading (github-slugger): the rendered text lower-cased, punctuation but `-` and `_`
    dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "").lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = path.read_text(encoding="utf-8")
    seen: dict[str, int] = {}
    found = set()
    for heading in headings(text):
        base = slug(heading)
        count = seen.get(base, 0)
        found.add(base if count == 0 else f"{base}-{count}")
        seen[base] = count + 1
    found.update(re.findall(r"<a\s+(?:id|name)=\"([^\"]+)\"", text))
    return found


def broken_links(path: Path) -> list[str]:
    """`file: target (why)` for each relative link or #anchor of a markdown file that does not resolve."""
    text = prose(path.read_text(encoding="utf-8"))
    targets = re.findall(r"\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)", text)
    targets += re.findall(r"^\s*\[[^\]]+\]:\s*(\S+)", text, flags=re.MULTILINE)
    broken = []
    for target in targets:
        if re.match(r"[a-z][a-z0-9+.-]*:", target, flags=re.IGNORECASE):
            continue  # http:, https:, mailto: are not files of this repository
        file_part, _, anchor = target.partition("#")
        file_part = file_part.split("?")[0]
        if file_part.startswith("/"):
            resolved = ROOT / file_part.lstrip("/")
        else:
            resolved = (path.parent / file_part).resolve() if file_part else path
        name = f"{path.relative_to(ROOT)}: {target}"
        if not resolved.exists():
            broken.append(f"{name} (no such file)")
        elif anchor and (resolved.suffix != ".md" or anchor not in anchors(resolved)):
            broken.append(f"{name} (no heading with anchor #{anchor})")
    return broken


# ---------------------------------------------------------------- the README


def test_readme_fits_on_a_few_screens() -> None:
    lines = README.read_text(encoding="utf-8").count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines (at most {README_MAX_LINES}): move detail to docs/"


def test_readme_test_command_is_what_ci_runs() -> None:
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert re.search(r"^scripts/test\.sh\s*$", ci, flags=re.MULTILINE), ".ci/run no longer runs scripts/test.sh"
    quick_start = README.read_text(encoding="utf-8").split("## Quick start", 1)[1].split("\n## ", 1)[0]
    assert "./scripts/test.sh " in quick_start and "./scripts/serve.sh " in quick_start


def test_every_old_readme_section_has_a_home() -> None:
    now = {heading for path in doc_files() for heading in headings(path.read_text(encoding="utf-8"))}
    homeless = [old for old in OLD_README_HEADINGS if RENAMED.get(old, old) not in now]
    assert not homeless, f"sections of the old README with no heading in README.md or docs/*.md: {homeless}"


def test_readme_settings_are_settings_with_their_defaults() -> None:
    """The README's table of the settings changed most names real settings with their real defaults."""
    doc = settings_doc()
    section = README.read_text(encoding="utf-8").split("\n## Settings\n", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `([A-Z0-9_]+)` \| (.+?) \|", section, flags=re.MULTILINE)
    assert len(rows) == 10, rows
    fields = Settings.model_fields
    for name, default in rows:
        assert name.lower() in fields, f"README.md Settings: {name} is not a field of config.Settings"
        assert default == doc.default_text(fields[name.lower()].get_default()), name


# ---------------------------------------------------------------- links


def test_every_link_and_anchor_resolves() -> None:
    broken = [problem for path in doc_files() for problem in broken_links(path)]
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_the_link_check_finds_a_broken_file_and_anchor(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# `POST /ask` and more\n\n## Twice\n\n## Twice\n", encoding="utf-8")
    page = tmp_path / "README.md"
    page.write_text(
        "# Title\n\n[ok](docs/a.md#post-ask-and-more) [ok](docs/a.md#twice-1) [ok](#title) [web](https://x.y/#z)\n"
        "[gone](docs/b.md) [bad anchor](docs/a.md#twice-2) [bad](#nothing)\n"
        "```\n[in code](docs/c.md)\n```\n`[inline](docs/d.md)`\n", encoding="utf-8")
    assert broken_links(page) == [
        "README.md: docs/b.md (no such file)",
        "README.md: docs/a.md#twice-2 (no heading with anchor #twice-2)",
        "README.md: #nothing (no heading with anchor #nothing)",
    ]


# ---------------------------------------------------------------- docs/settings.md


def test_settings_doc_is_generated_from_config_and_current() -> None:
    expected = settings_doc().render()
    current = (ROOT / "docs" / "settings.md").read_text(encoding="utf-8")
    assert current == expected, (
        "docs/settings.md is stale (config.py changed): run `.venv/bin/python scripts/settings_doc.py > "
        "docs/settings.md`")


def test_every_setting_is_documented() -> None:
    doc = settings_doc()
    rows = (ROOT / "docs" / "settings.md").read_text(encoding="utf-8").splitlines()
    for name, field in Settings.model_fields.items():
        assert field.description, f"config.py: give {name} a Field(description=...): it is its documentation"
        row = next((line for line in rows if line.startswith(f"| `{name.upper()}` |")), "")
        assert row.endswith(f"| {doc.cell(field.description)} |"), f"docs/settings.md lacks {name.upper()}"


def test_settings_doc_check_fails_when_stale(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    doc = settings_doc()
    stale = tmp_path / "settings.md"
    stale.write_text(doc.render().replace("`./images`", "`./photos`"), encoding="utf-8")
    monkeypatch.setattr(doc, "DOC", stale)
    assert doc.main(["--check"]) == 1
    assert "scripts/settings_doc.py > docs/settings.md" in capsys.readouterr().err
    stale.write_text(doc.render(), encoding="utf-8")
    assert doc.main(["--check"]) == 0


# ---------------------------------------------------------------- what the docs name exists in the code

PATH_NAME = re.compile(r"(?<![\w./:-])((?:\.?[\w-]+/)+[\w.-]+\.(?:py|sh|md|txt|yaml|toml|html|js|css|json))(?![\w/])")
MODULE_RUN = re.compile(r"python -m ([\w.]+)")
NOT_OURS = ("site-packages/", "node_modules/", "../shared/", "~/", "/etc/", "/usr/", "/proc/", "/srv/", "/tmp/")


def named_paths(text: str) -> set[str]:
    """Relative file paths a doc names (project files; placeholders and other people's files left out)."""
    return {p for p in PATH_NAME.findall(text)
            if not p.startswith(NOT_OURS) and "<" not in p and not p.startswith(("http", "docs.", "data/"))}


def missing_paths(path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8")
    here = path.parent
    gone = []
    for name in sorted(named_paths(text)):
        clean = name.removeprefix("./")
        if not ((ROOT / clean).exists() or (here / clean).exists() or any(ROOT.glob(f"*/{clean}"))):
            gone.append(f"{path.relative_to(ROOT)}: {name}")
    return gone


def test_every_file_path_the_docs_name_exists() -> None:
    gone = [problem for path in doc_files() for problem in missing_paths(path)]
    assert not gone, "the docs name files that do not exist:\n" + "\n".join(gone)


def test_the_path_check_finds_a_missing_file(tmp_path: Path) -> None:
    page = tmp_path / "x.md"
    page.write_text("see `runners/vlm/model.py` and runners/vlm_gone.py and https://x.y/a/b.py", encoding="utf-8")
    assert named_paths(page.read_text(encoding="utf-8")) == {"runners/vlm/model.py", "runners/vlm_gone.py"}


def test_every_python_dash_m_module_the_docs_name_exists() -> None:
    gone = []
    for path in doc_files():
        for module in set(MODULE_RUN.findall(path.read_text(encoding="utf-8"))):
            if module.split(".")[0] in ("pip", "pytest", "venv", "bentoml", "http", "playwright"):
                continue
            if importlib.util.find_spec(module) is None:
                gone.append(f"{path.relative_to(ROOT)}: python -m {module}")
    assert not gone, gone


def test_every_indexer_flag_the_docs_name_exists() -> None:
    import subprocess

    shown = subprocess.run([sys.executable, "-m", "indexer", "--help"], cwd=ROOT, capture_output=True, text=True,
                           check=True).stdout
    known = set(re.findall(r"(?<![\w-])(--[a-z][\w-]*)", shown))
    unknown = []
    for path in doc_files():
        for line in path.read_text(encoding="utf-8").splitlines():
            if "python -m indexer" not in line:
                continue
            command = line.split("python -m indexer", 1)[1].split("#", 1)[0].split("|", 1)[0]
            flags = re.findall(r"(?<![\w-])(--[a-z][\w-]*)", command)
            unknown += [f"{path.relative_to(ROOT)}: {flag}" for flag in flags if flag not in known]
    assert not unknown, unknown
