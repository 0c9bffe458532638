"""The rooms of docs/architecture.md, checked on the source: no import circle (delayed imports included), lower
rooms never import higher ones, the HTTP plumbing never imports an endpoint flow, the model packages are used
through their public surface, and a model is built from settings only by its package's loader."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ROOMS = ("config", "service", "core", "runners", "store", "indexer", "api")


def modules() -> dict[str, Path]:
    found = {}
    for room in ROOMS:
        paths = [ROOT / f"{room}.py"] if (ROOT / f"{room}.py").is_file() else sorted((ROOT / room).rglob("*.py"))
        for path in paths:
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


MODULES = modules()


def imports_of(name: str) -> Iterator[tuple[str, int]]:
    """(module imported, line) for every import in `name`, top level or inside a function. `from P import N`
    imports P.N when that is a module (P's __init__ runs first, as it does for any submodule), else P itself."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            for alias in node.names:
                full = f"{base}.{alias.name}"
                yield (full if full in MODULES else base), node.lineno


def own(target: str) -> str | None:
    while target and target not in MODULES:
        target = target.rpartition(".")[0]
    return target or None


def graph() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {name: set() for name in MODULES}
    for name in MODULES:
        for target, _ in imports_of(name):
            found = own(target)
            if found and found != name and not (name.startswith(found + ".") and target != found):
                edges[name].add(found)
    return edges


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []
    for start in edges:
        if start in index:
            continue
        work = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on.add(child)
                    work.append((child, iter(sorted(edges[child]))))
                elif child in on:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_the_checker_sees_a_circle() -> None:
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_circle_anywhere_delayed_ones_included() -> None:
    assert circles(graph()) == []


def violations(rooms: tuple[str, ...], forbidden: tuple[str, ...], allowed: tuple[str, ...] = ()) -> list[str]:
    found = []
    for name in MODULES:
        if not name.startswith(rooms) or name in allowed:
            continue
        for target, line in imports_of(name):
            if target.startswith(forbidden):
                found.append(f"{MODULES[name].relative_to(ROOT)}:{line} imports {target}")
    return found


def test_lower_rooms_never_import_higher_ones() -> None:
    assert violations(("core", "runners", "store", "indexer"), ("api", "service")) == []
    assert violations(("core",), ("runners", "store", "indexer")) == []
    assert violations(("runners", "store"), ("indexer",)) == []
    assert violations(("store",), ("runners.vlm", "runners.clip")) == []


def test_only_the_service_edges_import_bentoml() -> None:
    edges = ("runners.clip.service", "runners.vlm.service", "core.bentoml_compat")
    assert violations(("core", "runners", "store", "indexer"), ("bentoml", "_bentoml"), edges) == []


def test_the_http_plumbing_imports_no_endpoint_flow() -> None:
    flows = tuple(name for name in MODULES
                  if name.startswith("api.") and not name.startswith(("api.http", "api.errors")))
    assert violations(("api.http",), flows) == []


def test_the_model_packages_are_used_through_their_surface() -> None:
    """Outside runners/, only the BentoML services (started by service.py) are imported from inside a package."""
    outside = tuple(name for name in MODULES if not name.startswith("runners"))
    found = []
    for name in outside:
        for target, line in imports_of(name):
            inner = target.startswith(("runners.vlm.", "runners.clip."))
            if inner and target not in ("runners.vlm.service", "runners.clip.service"):
                found.append(f"{MODULES[name].relative_to(ROOT)}:{line} imports {target}")
    assert found == []


def test_no_flat_model_files_left_in_runners() -> None:
    flat = sorted(p.name for p in (ROOT / "runners").glob("*.py") if p.name.startswith(("vlm", "clip")))
    assert flat == []


def test_models_are_built_from_settings_only_by_their_loader() -> None:
    """`from_settings` constructors are gone: runners/<kind>/loader.py is the one place."""
    found = [f"{path.relative_to(ROOT)}" for name, path in MODULES.items()
             if name.startswith("runners") and "def from_settings" in path.read_text(encoding="utf-8")]
    assert found == []
