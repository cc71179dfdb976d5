"""The import graph of `components/`: no cycles, and the layering the packages promise.

Every module is parsed with `ast` (no import runs), and every `import` / `from ... import` counts, the ones at
module level and the lazy ones inside functions alike: a lazy import still ties the two modules together, it
only hides the tie from the interpreter's start-up. Two graphs are checked: modules (components.x.y ->
components.a.b) and packages (components.x -> components.a, the first level below components/).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import REPO

ROOT = "components"

# Edges that would make a lower layer depend on a higher one (see components/README.md).
FORBIDDEN_PACKAGE_EDGES = {
    ("components.inference", "components.training"),
    ("components.inference", "components.evaluation"),
    ("components.tracking", "components.inference"),
    ("components.slicing", "components.model"),
}


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted((REPO / ROOT).rglob("*.py"))}


def _resolve_relative(module: str, is_package: bool, level: int, target: str | None) -> str:
    """`from ..x import y` inside `module` -> the absolute name of `..x`."""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([target] if target else []))


def _is_type_checking_block(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (getattr(test, "id", None) == "TYPE_CHECKING"
                                         or getattr(test, "attr", None) == "TYPE_CHECKING")


def _import_nodes(tree: ast.AST):
    """Every import statement, however deeply nested, except under `if TYPE_CHECKING:` (never executed: those
    exist so that an annotation can name a type without importing its module)."""
    for node in ast.iter_child_nodes(tree):
        if _is_type_checking_block(node):
            yield from (n for child in node.orelse for n in _import_nodes_of(child))
            continue
        yield from _import_nodes_of(node)


def _import_nodes_of(node: ast.AST):
    if isinstance(node, ast.Import | ast.ImportFrom):
        yield node
    yield from _import_nodes(node)


def imported_names(module: str, path: Path, modules: set[str]) -> set[str]:
    """The components modules `module` imports anywhere in its body. `from a import b` is an edge to the module
    a.b when b is a submodule, else to a (the parent packages Python initialises on the way are not counted, as
    they are not for `import a.b.c`)."""
    names: set[str] = set()
    for node in _import_nodes(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
            continue
        base = node.module or ""
        if node.level:
            base = _resolve_relative(module, path.name == "__init__.py", node.level, node.module)
        for alias in node.names:
            names.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
    return {n for n in names if n in modules and n != module}


def module_graph() -> dict[str, set[str]]:
    """components module -> the components modules it imports."""
    modules = all_modules()
    return {name: imported_names(name, path, set(modules)) for name, path in modules.items()}


def package_of(module: str) -> str:
    return ".".join(module.split(".")[:2])


def package_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for source, targets in module_graph().items():
        src = package_of(source)
        graph.setdefault(src, set()).update(package_of(t) for t in targets if package_of(t) != src)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one node (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def test_parser_sees_lazy_relative_and_submodule_imports(tmp_path):
    """The parser must see function-level and relative imports, or the cycle checks below prove nothing; code
    under `if TYPE_CHECKING:` never runs and is left out."""
    source = tmp_path / "mod.py"
    source.write_text("from typing import TYPE_CHECKING\n"
                      "from .sibling import name\n"
                      "from . import other\n"
                      "if TYPE_CHECKING:\n    from components.typing_only import T\n"
                      "def f():\n    import components.lazy\n    from ..up import thing\n")
    modules = {"components.pkg.sibling", "components.pkg.other", "components.pkg", "components.lazy",
               "components.up", "components.typing_only"}
    found = imported_names("components.pkg.mod", source, modules)
    assert found == {"components.pkg.sibling", "components.pkg.other", "components.lazy", "components.up"}


def test_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_module_cycles():
    assert cycles(module_graph()) == []


def test_no_package_cycles():
    assert cycles(package_graph()) == []


@pytest.mark.parametrize(("source", "target"), sorted(FORBIDDEN_PACKAGE_EDGES))
def test_layering(source, target):
    offenders = sorted(m for m, targets in module_graph().items()
                       if package_of(m) == source and any(package_of(t) == target for t in targets))
    assert offenders == [], f"{source} must not import {target}: {offenders}"
