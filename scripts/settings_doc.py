"""Write docs/settings.md from config.Settings: every field with its environment variable, type, default and
description (the field's `description`). Section headings come from the comment lines that head each group of
fields in config.py.

    .venv/bin/python scripts/settings_doc.py > docs/settings.md    # regenerate
    .venv/bin/python scripts/settings_doc.py --check               # exit 1 when docs/settings.md is stale
"""

from __future__ import annotations

import argparse
import ast
import sys
import types
import typing
from pathlib import Path
from typing import Any

from pydantic import SecretStr
from pydantic.fields import FieldInfo

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from config import Settings  # noqa: E402  (after the path: the script runs from anywhere)

DOC = ROOT / "docs" / "settings.md"
COMMAND = ".venv/bin/python scripts/settings_doc.py > docs/settings.md"
HEADER = f"""# Settings

<!-- Generated from config.py by scripts/settings_doc.py; do not edit: change a field's description in config.py,
then run `{COMMAND}`. -->

One typed settings object (`config.py`, pydantic-settings), read from environment variables and a `.env` file in
the working directory; the variable is the field's name in capitals. A value out of range or not of its type
is refused before anything starts, with one line naming the setting (`bentoml serve`, `python -m indexer`
and the other commands exit with it; the indexer's exit code is 2). The settings changed most are in the
[README](../README.md#settings).
"""
TYPE_NAMES = {str: "text", int: "integer", float: "number", bool: "`true` / `false`", Path: "path",
              SecretStr: "secret text"}
BOUNDS = {"ge": "≥", "gt": ">", "le": "≤", "lt": "<"}


def env_name(name: str, field: FieldInfo) -> str:
    alias = field.validation_alias if isinstance(field.validation_alias, str) else None
    return (alias or name).upper()


def type_text(annotation: Any) -> str:
    """The type as a reader sees it: `one of a, b`, `integer`, `path or unset`..."""
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return "one of " + ", ".join(f"`{choice}`" for choice in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        parts = [a for a in typing.get_args(annotation) if a is not type(None)]
        text = " or ".join(type_text(a) for a in parts)
        return text + " or unset" if len(parts) < len(typing.get_args(annotation)) else text
    return TYPE_NAMES.get(annotation, getattr(annotation, "__name__", str(annotation)))


def bounds_text(field: FieldInfo) -> str:
    bounds = [f"{symbol} {getattr(item, key)}" for item in field.metadata for key, symbol in BOUNDS.items()
              if getattr(item, key, None) is not None]
    return ", ".join(bounds)


def code(text: str) -> str:
    """Inline code that survives backticks inside it."""
    fence = "``" if "`" in text else "`"
    pad = " " if fence == "``" else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def default_text(value: Any) -> str:
    """The default as it would be written in the environment; `unset` for None."""
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return code(str(value).lower())
    if isinstance(value, Path):
        text = str(value)
        return code(text if value.is_absolute() or text.startswith(".") else f"./{text}")
    if isinstance(value, str):
        return code(value) if value else '`""`'
    return code(str(value))


def cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def sections() -> dict[str, str]:
    """Field name -> the heading of its group: the comment line alone after a blank line in Settings' body."""
    source = Path(sys.modules[Settings.__module__].__file__ or "").read_text(encoding="utf-8")
    lines = source.splitlines()
    tree = ast.parse(source)
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == Settings.__name__)
    heads: list[tuple[int, str]] = []
    for number in range(cls.lineno, cls.end_lineno or cls.lineno):
        line = lines[number]
        if line.strip().startswith("# ") and not lines[number - 1].strip():
            heads.append((number + 1, line.strip()[2:].strip()))
    found: dict[str, str] = {}
    for node in cls.body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            before = [title for lineno, title in heads if lineno < node.lineno]
            found[node.target.id] = before[-1] if before else "Other"
    return found


def render() -> str:
    groups = sections()
    out = [HEADER.rstrip("\n")]
    current = None
    for name, field in Settings.model_fields.items():
        group = groups.get(name, "Other")
        if group != current:
            out += ["", f"## {group}", "", "| variable | type | default | description |", "|---|---|---|---|"]
            current = group
        kind = type_text(field.annotation)
        if bounds := bounds_text(field):
            kind += f", {bounds}"
        row = [code(env_name(name, field)), kind, default_text(field.get_default()), field.description or ""]
        out.append("| " + " | ".join(cell(text) for text in row) + " |")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="exit 1 when docs/settings.md is not up to date")
    args = parser.parse_args(argv)
    text = render()
    if not args.check:
        sys.stdout.write(text)
        return 0
    if DOC.exists() and DOC.read_text(encoding="utf-8") == text:
        return 0
    print(f"docs/settings.md is stale (config.py changed): run `{COMMAND}`", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
