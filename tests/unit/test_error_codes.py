"""The registry of error codes (api/errors.py ERROR_CODES) holds every code the source can answer, and only those;
docs/api.md's error table is generated from it (scripts/errors_doc.py) and current."""

from __future__ import annotations

import ast
import inspect
import re
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from helpers.scripts import script

from api.errors import CODES, ERROR_CODES, bad_request

ROOT = Path(__file__).resolve().parents[2]
# Where codes are written: the flows, the plumbing, the endpoints, and the VQA runner (whose per-request
# errors pass through api/vqa_requests.py raise_failure as they are).
SOURCES = ("api/**/*.py", "service.py", "runners/vlm/*.py")
CODE = re.compile(r"^[a-z]+(_[a-z]+)*$")
# A call that carries a code: the callee's name -> the position of the code (`code=` counts too)
CODE_ARGUMENT = {"ApiError": 1, "ItemError": 1, "bad_request": 1, "unavailable": 0, "fail": 0}
STATUS_ARGUMENT = {"ApiError": 0, "ItemError": 0}
# Dicts of status -> code or code -> status
CODE_TABLES = ("CODES", "STATUS")


# Where a code that is not a literal is passed on (file, function): each code is written, and checked, where
# it is made.
PASS_THROUGH = {
    ("api/errors.py", "bad_request"), ("api/errors.py", "unavailable"),  # the helpers: their callers' codes
    ("api/http/middleware.py", "send_error"), ("api/http/middleware.py", "__call__"),  # (code, message) pairs:
    ("api/http/middleware.py", "handle"),  # FormInspector.fail's, error_fields' and validation_error's
    ("api/internal_store.py", "handle"),  # STATUS's codes
    ("api/vqa_requests.py", "raise_failure"),  # the VQA runner's ItemError codes
}
DEFAULT_CODE = {"bad_request": inspect.signature(bad_request).parameters["code"].default}


def callee(node: ast.Call) -> str:
    func = node.func
    return func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""


def literal(node: ast.AST | None) -> str | None:
    """A written status or code; CODES[<status>] is the code CODES gives it."""
    if isinstance(node, ast.Subscript) and ast.unparse(node.value) == "CODES":
        return CODES.get(int(literal(node.slice) or 0))
    if isinstance(node, ast.Constant) and isinstance(node.value, (str, int)) and not isinstance(node.value, bool):
        return str(node.value)
    return None


def called_codes(node: ast.Call) -> Iterator[tuple[str | None, str | None]]:
    """(status, code) of a call to ApiError or one of its helpers; status None where it is not written, code
    None where it is not a literal."""
    name = callee(node)
    if name not in CODE_ARGUMENT:
        return
    position = CODE_ARGUMENT[name]
    status = literal(node.args[STATUS_ARGUMENT[name]]) if name in STATUS_ARGUMENT and node.args else None
    code = node.args[position] if len(node.args) > position else None
    code = next((k.value for k in node.keywords if k.arg == "code"), code)
    yield status, literal(code) if code is not None else DEFAULT_CODE.get(name)


def is_message(node: ast.AST) -> bool:
    """What a (code, message) pair's message looks like: a sentence, an f-string, a constant, an expression."""
    if isinstance(node, ast.Constant):
        return isinstance(node.value, str) and " " in node.value
    if isinstance(node, ast.Name):
        return node.id.isupper()
    return isinstance(node, (ast.JoinedStr, ast.BoolOp, ast.BinOp))


def table_codes(node: ast.Assign) -> Iterator[tuple[str | None, str | None]]:
    names = {target.id for target in node.targets if isinstance(target, ast.Name)}
    if not names & set(CODE_TABLES) or not isinstance(node.value, ast.Dict):
        return
    for key, value in zip(node.value.keys, node.value.values, strict=True):
        code_first = isinstance(key, ast.Constant) and isinstance(key.value, str)
        yield (literal(value), literal(key)) if code_first else (literal(key), literal(value))


def node_codes(node: ast.AST) -> list[tuple[str | None, str | None]]:
    """The (status, code) pairs one node writes."""
    if isinstance(node, ast.Call):
        if ast.unparse(node.func) == "CODES.get":  # the fallback code of a status CODES does not list
            return [(None, code) for n in ast.walk(node) if (code := literal(n)) and CODE.match(code)]
        return list(called_codes(node))
    if isinstance(node, ast.Assign):
        return list(table_codes(node))
    if isinstance(node, ast.Tuple) and len(node.elts) == 2:  # a (code, message) pair
        code = literal(node.elts[0])
        return [(None, code)] if code and CODE.match(code) and is_message(node.elts[1]) else []
    return []


def codes_in(source: str) -> Iterator[tuple[int, str, str | None, str | None]]:
    """(line, enclosing function, status, code) of every code the source answers."""
    def walk(node: ast.AST, function: str) -> Iterator[tuple[int, str, str | None, str | None]]:
        for status, code in node_codes(node):
            yield getattr(node, "lineno", 0), function, status, code
        inside = node.name if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) else function
        for child in ast.iter_child_nodes(node):
            yield from walk(child, inside)

    yield from walk(ast.parse(source), "")


def source_codes() -> list[tuple[str, str | None, str | None]]:
    """(where, status, code) of every code in SOURCES; a code passed on (PASS_THROUGH) is checked where made."""
    found = []
    for pattern in SOURCES:
        for path in sorted(ROOT.glob(pattern)):
            name = str(path.relative_to(ROOT))
            for line, function, status, code in codes_in(path.read_text(encoding="utf-8")):
                if code is None and (name, function) in PASS_THROUGH:
                    continue
                found.append((f"{name}:{line}", status, code))
    return found


def unregistered(found: list[tuple[str, str | None, str | None]]) -> list[str]:
    pairs = {(entry.status, entry.code) for entry in ERROR_CODES}
    codes = {entry.code for entry in ERROR_CODES}
    return [f"{where}: {status or '?'} {code}" for where, status, code in found
            if code not in codes or (status is not None and (status, code) not in pairs)]


def test_every_code_the_source_answers_is_registered_with_its_status() -> None:
    found = source_codes()
    assert len(found) > 40  # the scan sees the calls (a scan that finds nothing passes everything)
    assert unregistered(found) == []


def test_every_registered_code_is_answered_somewhere() -> None:
    answered = {code for _, _, code in source_codes()}
    assert [entry.code for entry in ERROR_CODES if entry.code not in answered] == []


def test_the_issue_s_missing_codes_are_registered() -> None:
    pairs = {(entry.status, entry.code) for entry in ERROR_CODES}
    assert {("400", "host_not_allowed"), ("400", "invalid_framing"), ("403", "permission_denied"),
            ("409", "no_descriptions"), ("503", "store_damaged"), ("507", "insufficient_storage")} <= pairs
    assert {(str(status), code) for status, code in CODES.items()} <= pairs
    assert len(pairs) == len(ERROR_CODES)  # each (status, code) once


def test_the_scan_finds_an_unregistered_code_and_a_wrong_status() -> None:
    source = '''
def refuse(exc):
    raise ApiError(418, "teapot", "no coffee")
def other():
    raise ApiError(404, "model_mismatch", "wrong status")  # registered, with 409
def helper():
    raise bad_request("x", code="made_up")
def pair():
    return "odd_code", f"a message {1}"
def dynamic(code):
    raise ApiError(400, code, "from a variable")
'''
    found = [("x.py:" + str(line), status, code) for line, _, status, code in codes_in(source)]
    assert unregistered(found) == ["x.py:3: 418 teapot", "x.py:5: 404 model_mismatch", "x.py:7: ? made_up",
                                   "x.py:9: ? odd_code", "x.py:11: 400 None"]


def errors_doc() -> ModuleType:
    return script("errors_doc")


def test_the_error_table_in_docs_api_md_is_generated_from_the_registry_and_current() -> None:
    doc = errors_doc()
    page = doc.DOC.read_text(encoding="utf-8")
    assert doc.render(page) == page, "docs/api.md's error table is stale: run `.venv/bin/python scripts/errors_doc.py`"
    for entry in ERROR_CODES:
        assert f"| {entry.status} | `{entry.code}` |" in page


def test_the_error_doc_check_fails_when_stale(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    doc = errors_doc()
    stale = tmp_path / "api.md"
    page = doc.DOC.read_text(encoding="utf-8")
    stale.write_text(page.replace("| 409 | `no_descriptions` |", "| 409 | `no_descripshuns` |"), encoding="utf-8")
    monkeypatch.setattr(doc, "DOC", stale)
    assert doc.main(["--check"]) == 1
    assert "scripts/errors_doc.py" in capsys.readouterr().err
    assert doc.main([]) == 0 and stale.read_text(encoding="utf-8") == page  # regenerated
