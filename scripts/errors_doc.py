"""Write the error table of docs/api.md ("Errors and API contract") from api/errors.py ERROR_CODES: every code
the service answers, with its HTTP status and when. The table sits between two markers; the rest of the page is
written by hand.

    .venv/bin/python scripts/errors_doc.py           # regenerate the table in docs/api.md
    .venv/bin/python scripts/errors_doc.py --check   # exit 1 when the table is stale
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from api.errors import ERROR_CODES  # noqa: E402  (after the path: the script runs from anywhere)

DOC = ROOT / "docs" / "api.md"
COMMAND = ".venv/bin/python scripts/errors_doc.py"
BEGIN = ("<!-- Generated from api/errors.py ERROR_CODES by scripts/errors_doc.py; do not edit: change the registry, "
         f"then run `{COMMAND}`. -->")
END = "<!-- end of the generated error table -->"


def cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def table() -> str:
    rows = [f"| {entry.status} | `{entry.code}` | {cell(entry.when)} |" for entry in ERROR_CODES]
    return "\n".join([BEGIN, "", "| status | code | when |", "|---|---|---|", *rows, "", END])


def render(page: str) -> str:
    """`page` with the text between the markers (the markers included) replaced by the current table."""
    start, end = page.find(BEGIN.split(";")[0]), page.find(END)
    if start < 0 or end < start:
        raise SystemExit(f"{DOC.relative_to(ROOT)} has no generated error table (the markers {BEGIN!r} and {END!r})")
    return page[:start] + table() + page[end + len(END):]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="exit 1 when docs/api.md's table is not up to date")
    args = parser.parse_args(argv)
    page = DOC.read_text(encoding="utf-8")
    text = render(page)
    if not args.check:
        DOC.write_text(text, encoding="utf-8")
        return 0
    if text == page:
        return 0
    print(f"docs/api.md's error table is stale (api/errors.py ERROR_CODES changed): run `{COMMAND}`", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
