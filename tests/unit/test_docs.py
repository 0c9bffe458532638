"""The documentation: a short README, docs/settings.md generated from config.py and current, every relative link
and #anchor of README.md and docs/*.md resolving, and every section of the old long README still at home."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest
from helpers.scripts import script

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
    return script("settings_doc")


def doc_files() -> list[Path]:
    return [README, *sorted((ROOT / "docs").glob("*.md"))]


def prose(text: str, code: str = "") -> str:
    """The text without fenced code blocks (lines kept, emptied), its inline code spans replaced by `code`."""
    lines, fence = [], ""
    for line in text.split("\n"):
        marker = re.match(r"\s*(`{3,}|~{3,})", line)
        if marker and (not fence or marker.group(1).startswith(fence)):
            fence = "" if fence else marker.group(1)
            lines.append("")
            continue
        lines.append("" if fence else line)
    return re.sub(r"(`+)(?!`).+?(?<!`)\1(?!`)", code, "\n".join(lines), flags=re.DOTALL)


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


# ---------------------------------------------------------------- settings the docs name

SETTING_SPAN = re.compile(r"`([A-Z][A-Z0-9]*(?:_[A-Z0-9]*)+\*?|[A-Z][A-Z0-9]*(?==))[^`\n]*`")
# Other programs' variables and flags the docs name in capitals; everything else in capitals is ours.
OUTSIDE_NAMES = {
    "CUDA_VISIBLE_DEVICES": "the CUDA driver's",
    "BENTOML_CONFIG": "BentoML's",
    "BENTOML_CONFIG_OPTIONS": "BentoML's",
    "RAY_*": "Ray's (RAY_ADDRESS, RAY_USAGE_STATS_ENABLED)",
    "INFERENCE_PRECISION_HINT": "an OpenVINO property",
    "O_*": "os.open flags (O_NOFOLLOW, O_NONBLOCK)",
    "PYTHON*": "Python's (PYTHONPATH, PYTHONUNBUFFERED), and PYTHON, the interpreter scripts/setup.sh uses",
}


def setting_names() -> set[str]:
    """Every environment variable config.Settings reads: its fields, and the old names still read."""
    names = {name.upper() for name in Settings.model_fields}
    for field in Settings.model_fields.values():
        choices = getattr(field.validation_alias, "choices", [])
        names.update(str(choice).upper() for choice in choices)
    return names


def code_constants() -> set[str]:
    """Module-level names in capitals of the project's own Python files (BUILD_INDEX_AT_START_POINTS ...)."""
    import ast

    found: set[str] = set()
    for path in [*ROOT.glob("*.py"), *ROOT.glob("[a-z]*/**/*.py")]:
        if path.relative_to(ROOT).parts[0] == "tests":  # the project's names, not its tests'
            continue
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
            found.update(t.id for t in targets if isinstance(t, ast.Name) and t.id.isupper())
    return found


def fence_assignments(text: str) -> list[str]:
    """The variables the fenced shell blocks set (`NAME=value` words)."""
    names, fence = [], ""
    for line in text.split("\n"):
        marker = re.match(r"\s*(`{3,})(\w*)", line)
        if marker:
            fence = "" if fence else (marker.group(2) or "text")
        elif fence in ("bash", "sh", "shell"):
            names += re.findall(r"(?:^|\s)([A-Z][A-Z0-9_]*)=", line.split("#", 1)[0])
    return names


def unknown_settings(text: str, known: set[str]) -> list[str]:
    """Names in capitals in backticks (`VQA_ENABLED`, `DEVICE=cpu`, `INDEX_RAY_*`) or set in a shell block
    (`VQA_ENABLED=false ./scripts/serve.sh`) that are not in `known`, nor another program's (OUTSIDE_NAMES). A
    name ending in * stands for the names it starts."""
    unknown = []
    for name in SETTING_SPAN.findall(text) + fence_assignments(text):
        prefix = name.rstrip("*")
        if name.endswith("*") and any(k.startswith(prefix) for k in known):
            continue
        if name in known or any(name.startswith(o.rstrip("*")) if o.endswith("*") else name == o
                                for o in OUTSIDE_NAMES):
            continue
        unknown.append(name)
    return sorted(set(unknown))


def script_variables() -> set[str]:
    """The environment variables our shell scripts read (`${TEST_WORKERS:-2}` in scripts/test.sh)."""
    return {name for path in (ROOT / "scripts").glob("*.sh")
            for name in re.findall(r"\$\{([A-Z][A-Z0-9_]*)", path.read_text(encoding="utf-8"))}


def test_every_setting_the_docs_name_exists() -> None:
    known = setting_names() | code_constants() | script_variables()
    unknown = [f"{path.relative_to(ROOT)}: {name}" for path in doc_files()
               for name in unknown_settings(path.read_text(encoding="utf-8"), known)]
    assert not unknown, "the docs name settings config.Settings does not have:\n" + "\n".join(unknown)


def test_the_setting_check_finds_a_misspelt_setting() -> None:
    page = ("`VQA_ENABLED=false`, `DEVICE=cpu`, `INDEX_RAY_*`, `RAY_ADDRESS`, `CLIP_BACKEND`, `O_NOFOLLOW`\n"
            "`VQA_ENABLD=false` and `DEVIC=cpu` and `QDRANT_NOPE_*` and `GPU_MEMORY`, not `POST /ask` or `JSON`\n"
            "```bash\nDEVICE=cpu VQA_MODELL=x ./scripts/serve.sh   # not NOTE=1\n```\n```json\n{\"A_B=1\": 2}\n```\n")
    assert unknown_settings(page, setting_names()) == [
        "DEVIC", "GPU_MEMORY", "QDRANT_NOPE_*", "VQA_ENABLD", "VQA_MODELL"]


# ---------------------------------------------------------------- endpoints the docs name

ENDPOINT = re.compile(r"\b(GET|POST|PUT|DELETE|HEAD|PATCH) +(/[^\s`),;]*)")
# BentoML's own routes beside ours; and a Qdrant server's REST API, which docs/backup-and-migration.md calls.
BENTOML_ROUTES = ("/", "/docs.json", "/readyz", "/livez", "/metrics", "/healthz")
NOT_OURS_PREFIXES = ("/collections/",)
BARE_PATH = re.compile(r"`(/[^`\s]*)`")
FILE_ROOTS = ("/home/", "/etc/", "/dev/", "/srv/", "/tmp/", "/usr/", "/var/", "/mnt/", "/opt/", "/proc/")  # files


def served_routes() -> list[tuple[set[str], re.Pattern[str]]]:
    """(methods, path pattern) of every route the service serves: service.py's @bentoml.api methods (POST,
    read from the source: importing service.py would start its settings checks), api/routes.py's Starlette
    routes as built, and BentoML's own."""
    import ast

    from api.routes import routes

    served = [({"GET", "HEAD"}, re.compile(re.escape(path) + "$")) for path in BENTOML_ROUTES]
    for node in ast.walk(ast.parse((ROOT / "service.py").read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call) and ast.unparse(node.func) == "bentoml.api":
            route = next(k.value for k in node.keywords if k.arg == "route")
            served.append(({"POST"}, re.compile(re.escape(ast.literal_eval(route)) + "$")))
    for entry in routes().routes:
        methods = getattr(entry, "methods", None) or {"GET", "HEAD"}
        served.append((set(methods), entry.path_regex))  # type: ignore[attr-defined]
    return served


def is_served(method: str | None, path: str, served: list[tuple[set[str], re.Pattern[str]]]) -> bool:
    """Whether a route answers `method` (None: any) at `path`; placeholders ({path}, <op>, ...) stand for a
    name. A bare path also names a route it is the prefix of (`/images`), or one it adds a slash to (`/health/`,
    which the service redirects)."""
    concrete = re.sub(r"\{[^}]*\}|<[^>]*>|\.\.\.|…", "x", path.split("?")[0])
    tried = [concrete] if method else [concrete, concrete.rstrip("/") + "/x", concrete.rstrip("/") or "/"]
    return any((method is None or method in methods) and pattern.match(one)
               for methods, pattern in served for one in tried)


def unknown_endpoints(text: str, served: list[tuple[set[str], re.Pattern[str]]]) -> list[str]:
    """`METHOD /path` mentions, and paths alone in backticks (`/vqa`), that no served route answers."""
    unknown = [f"{method} {path}" for method, path in ENDPOINT.findall(text)
               if not path.startswith(NOT_OURS_PREFIXES) and not is_served(method, path, served)]
    unknown += [path for path in BARE_PATH.findall(text)
                if not path.startswith(FILE_ROOTS) and not is_served(None, path, served)]
    return sorted(set(unknown))


def test_every_endpoint_the_docs_name_is_served() -> None:
    served = served_routes()
    unknown = [f"{path.relative_to(ROOT)}: {name}" for path in doc_files()
               for name in unknown_endpoints(path.read_text(encoding="utf-8"), served)]
    assert not unknown, "the docs name endpoints the service does not serve:\n" + "\n".join(unknown)


def test_the_endpoint_check_finds_a_route_that_is_not_served() -> None:
    page = ("`POST /ask`, `GET /images/{path}?size=N`, HEAD /images/..., `POST /internal/store/<op>`, `GET /readyz`, "
            "`GET /ui/`, `POST /collections/<name>/snapshots`, `/vqa`, `/images`, `/health/`, `/`, `/dev/zero`\n"
            "`POST /asks`, `GET /ask`, `GET /image/{path}`, `/vqa2`, `/imagez`")
    assert unknown_endpoints(page, served_routes()) == [
        "/imagez", "/vqa2", "GET /ask", "GET /image/{path}", "POST /asks"]


# ---------------------------------------------------------------- figures quoted from BENCHMARKS.md
# The quoting convention: a sentence (or a table row whose cell is only the source) that quotes measured
# figures names its source as BENCHMARKS.md "<section>" (or BENCHMARKS "<section>", or the link
# [BENCHMARKS.md](...) "<section>"), where <section> is part of exactly one heading of BENCHMARKS.md. Every
# number of that sentence must then be written in that section, as the doc writes it (10,000 = 10000; 10k,
# 1M = 10000, 1000000; a trailing x or × is a ratio's sign). Arithmetic on the quoted figures goes in a
# sentence of its own, which names no section, so what is quoted and what is derived stay apart.

BENCHMARKS = ROOT / "BENCHMARKS.md"
QUOTE = re.compile(r"BENCHMARKS(?:\.md)?,?\s+\"([^\"]+)\"")
FIGURE = re.compile(r"(?<![\w.])(?<![A-Za-z]-)(\d[\d,]*(?:\.\d+)?)([kM]|x|×)?(?!\w)")
SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z(*\"])")


def figures(text: str) -> set[str]:
    """The numbers of a text, normalised: thousands commas dropped, k and M multiplied out."""
    found = set()
    for digits, suffix in FIGURE.findall(text):
        number = digits.replace(",", "")
        if suffix in ("k", "M") and number.isdigit():
            number = str(int(number) * (1000 if suffix == "k" else 1_000_000))
        found.add(number)
    return found


def sections(benchmarks: str) -> dict[str, str]:
    """Each heading of BENCHMARKS.md -> its text up to the next heading."""
    parts = re.split(r"^(#{1,6} .+)$", benchmarks, flags=re.MULTILINE)
    return {parts[i].lstrip("#").strip(): parts[i + 1] for i in range(1, len(parts) - 1, 2)}


def quoting_units(text: str) -> list[str]:
    """The doc's sentences and table cells that name a BENCHMARKS section, each on one line (fenced and inline
    code left out, links reduced to their text); a cell that is only the source stands for its whole row, and
    a sentence that names one and ends in ":" quotes the table under it, row by row."""
    # a code span becomes a word, so a sentence that starts with one still starts a sentence
    plain = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", prose(text, code="Code"))
    units: list[str] = []
    source = ""  # the quotes of a sentence that introduces a table
    for block in re.split(r"\n\s*\n|\n(?=\s*\|)|\n(?=\s*(?:[-*#]|\d+\.) )", plain):
        line = " ".join(block.split())
        cells = line.strip("|").split(" | ") if line.startswith("|") else [line]
        if line.startswith("|") and source:
            units.append(" ".join(cells) + source)
            continue
        source = ""
        for cell in cells:
            for sentence in SENTENCE_END.split(cell):
                if QUOTE.search(sentence):
                    alone = not figures(QUOTE.sub("", sentence))
                    units.append(" ".join(cells) if alone and len(cells) > 1 else sentence)
                    if sentence.endswith(":") and len(cells) == 1:
                        source = "".join(f' BENCHMARKS "{name}"' for name in QUOTE.findall(sentence))
    return units


def misquoted(text: str, benchmarks: str) -> list[str]:
    """Each quote whose section is not one heading of BENCHMARKS.md, or whose figures are not in it."""
    found = sections(benchmarks)
    problems = []
    for unit in quoting_units(text):
        names = QUOTE.findall(unit)
        homes = [[h for h in found if name in h] for name in names]
        for name, home in zip(names, homes, strict=True):
            if len(home) != 1:
                problems.append(f'"{name}": {"no" if not home else len(home)} sections of BENCHMARKS.md')
        in_sections = set().union(*(figures(found[h[0]]) for h in homes if len(h) == 1))
        if all(len(h) == 1 for h in homes):
            missing = sorted(figures(QUOTE.sub("", unit)) - in_sections)
            problems += [f'{m} is not in "{names[0]}"' for m in missing]
    return problems


def test_every_figure_quoted_from_benchmarks_is_there() -> None:
    benchmarks = BENCHMARKS.read_text(encoding="utf-8")
    wrong = [f"{path.relative_to(ROOT)}: {problem}" for path in doc_files()
             for problem in misquoted(path.read_text(encoding="utf-8"), benchmarks)]
    assert not wrong, "figures quoted from BENCHMARKS.md that it does not hold:\n" + "\n".join(wrong)


def test_the_quote_check_finds_a_wrong_figure_and_a_missing_section() -> None:
    benchmarks = ("# Benchmarks\n\n### Search at scale (issue 5)\n\n| vectors | recall@10 | p50 |\n|---|---|---|\n"
                  "| 1,000,000 | 0.971 | 6.01 ms |\n\n### Search at scale, old graph\n\n| 10,000 | 0.95 | 2.1x |\n")
    page = ("# Doc\n\nAt 1M points recall@10 is 0.971 in 6.01 ms (BENCHMARKS.md \"Search at scale (issue 5)\").\n"
            "Then it is fast. At 1M points it is 0.98 in 6 ms ([BENCHMARKS.md](../BENCHMARKS.md) \"(issue 5)\").\n\n"
            "| figure | value | source |\n|---|---|---|\n| speed | 2.1x at 10k | BENCHMARKS \"old graph\" |\n"
            "| speed | 3.1x | BENCHMARKS \"old graph\" |\n\nSee BENCHMARKS \"Search at\"; and BENCHMARKS \"GPU\".\n"
            "```\nBENCHMARKS \"GPU\" 7\n```\n\nAs measured (BENCHMARKS \"old graph\"):\n\n| points | speed |\n"
            "|---|---|\n| 10,000 | 2.1x |\n| 10,000 | 2.2x |\n\nThen 5 more.\n\n| 7 | 8 |\n")
    assert misquoted(page, benchmarks) == [
        '0.98 is not in "(issue 5)"', '6 is not in "(issue 5)"', '3.1 is not in "old graph"',
        '"Search at": 2 sections of BENCHMARKS.md', '"GPU": no sections of BENCHMARKS.md',
        '2.2 is not in "old graph"']


# ---------------------------------------------------------------- commands run the project's venv

BARE_PYTHON = re.compile(r"^\s*(?:[A-Z_][A-Z0-9_]*=\S*\s+)*(python|pip)\s")


def bare_commands(text: str) -> list[str]:
    """Lines of the fenced bash blocks that start a bare `python` or `pip` (after any VAR=value), not the
    venv's `.venv/bin/python`: on a fresh machine that is another Python, without the project's packages. A
    line that continues the one before (a trailing backslash) is left out: it runs where that command runs."""
    found, fence, previous = [], "", ""
    for line in text.split("\n"):
        marker = re.match(r"\s*(`{3,})(\w*)", line)
        if marker:
            fence = "" if fence else (marker.group(2) or "text")
        elif fence in ("bash", "sh", "shell") and BARE_PYTHON.match(line) and not previous.endswith("\\"):
            found.append(line.strip())
        previous = line.rstrip()
    return found


def test_commands_in_the_docs_run_the_venv() -> None:
    bare = [f"{path.relative_to(ROOT)}: {line}" for path in doc_files()
            for line in bare_commands(path.read_text(encoding="utf-8"))]
    assert not bare, "commands with a bare python (write .venv/bin/python):\n" + "\n".join(bare)


def test_the_venv_check_finds_a_bare_python() -> None:
    page = ("```bash\n.venv/bin/python -m indexer\npython -m indexer --json\nDEVICE=cpu pip install x\n"
            "ray job submit -- \\\n  python -m indexer --engine ray\n```\n```python\nimport openai\n```\n"
            "python -m indexer in prose\n")
    assert bare_commands(page) == ["python -m indexer --json", "DEVICE=cpu pip install x"]
