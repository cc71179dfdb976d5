"""A module's `_private` names are its own: no other project module imports them or reaches for them as
`module._name`. What a sibling needs is public API of the module that defines it (issue #12)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("components", "pipelines", "cli")


def is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_module(node: ast.ImportFrom, importer: str, importer_is_package: bool) -> str:
    """The absolute name of the module an import statement reads from (relative imports resolved)."""
    if node.level == 0:
        return node.module or ""
    base = importer.split(".")
    if not importer_is_package:
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def is_project_module(name: str) -> bool:
    parts = name.split(".")
    if parts[0] not in PACKAGES:
        return False
    return (REPO.joinpath(*parts).with_suffix(".py")).is_file() or (REPO.joinpath(*parts) / "__init__.py").is_file()


def private_uses(source: str, importer: str, importer_is_package: bool) -> list[str]:
    """`from M import _x` and `M._x` (M a project module bound by an import) in one module's source."""
    found: list[str] = []
    module_aliases: dict[str, str] = {}  # local name -> project module it is bound to
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            source_module = imported_module(node, importer, importer_is_package)
            if source_module.split(".")[0] not in PACKAGES:
                continue
            for alias in node.names:
                if is_private(alias.name):
                    found.append(f"line {node.lineno}: from {source_module} import {alias.name}")
                elif is_project_module(f"{source_module}.{alias.name}"):
                    module_aliases[alias.asname or alias.name] = f"{source_module}.{alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if is_project_module(alias.name):
                    module_aliases[alias.asname or alias.name.split(".")[0]] = alias.name
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and is_private(node.attr):
            owner = node.value
            while isinstance(owner, ast.Attribute):
                owner = owner.value
            if isinstance(owner, ast.Name) and owner.id in module_aliases:
                found.append(f"line {node.lineno}: {ast.unparse(node)}")
    return found


def project_modules() -> list[Path]:
    return sorted(p for package in PACKAGES if (REPO / package).is_dir() for p in (REPO / package).rglob("*.py"))


def test_no_module_uses_another_modules_private_names():
    offences = {}
    for path in project_modules():
        uses = private_uses(path.read_text(encoding="utf-8"), module_name(path), path.name == "__init__.py")
        if uses:
            offences[str(path.relative_to(REPO))] = uses
    assert offences == {}, f"private names used across modules (make them public API of their module): {offences}"


@pytest.mark.parametrize(("source", "importer", "is_package", "expected"), [
    ("from .lock import _Lock\n", "components.data.download.run", False,
     ["line 1: from components.data.download.lock import _Lock"]),
    ("from ..catalog import _hidden\n", "components.data.download.run", False,
     ["line 1: from components.data.catalog import _hidden"]),
    ("from .uhd import _check\n", "components.slicing", True, ["line 1: from components.slicing.uhd import _check"]),
    ("from components.slicing import uhd\nuhd._plan_cached(1, 2, 'x')\n", "cli.main", False,
     ["line 2: uhd._plan_cached"]),
    ("import components.slicing.uhd\ncomponents.slicing.uhd._RULES\n", "cli.main", False,
     ["line 2: components.slicing.uhd._RULES"]),
    # Allowed: public names, dunders, third-party privates, private attributes of objects (not modules).
    ("from .lock import Lock, __doc__\nfrom torch import _C\n", "components.data.download.run", False, []),
    ("from components.slicing import plan_slices\nplan_slices(2, 2)._private\n", "cli.main", False, []),
])
def test_the_private_name_check_catches_what_it_should(source, importer, is_package, expected):
    assert private_uses(source, importer, is_package) == expected


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def test_the_library_imports_no_entry_point():
    """components/ is below pipelines/ and cli/: they import it, never the other way (design.md §7)."""
    offences = {str(p.relative_to(REPO)): sorted(imported_roots(p) & {"pipelines", "cli"})
                for p in sorted((REPO / "components").rglob("*.py"))}
    assert {path: roots for path, roots in offences.items() if roots} == {}


def test_tests_import_components_not_stage_modules():
    """Stage modules are command lines (dvc.yaml runs `python -m pipelines.<stage>`): tests run them as commands
    and import what they call from components/, so no logic a test needs can hide in a stage module."""
    offences = {str(p.relative_to(REPO)) for p in sorted((REPO / "tests").rglob("*.py"))
                if "pipelines" in imported_roots(p)}
    assert offences == set()
