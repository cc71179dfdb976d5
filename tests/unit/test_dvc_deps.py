"""dvc.yaml's deps cannot drift from the code (#13): every project module a stage's entry module imports,
directly or through other project modules (function-local imports included), is covered by one of its deps, so
changing any of them makes `dvc repro` rerun the stage."""

import ast
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("components", "pipelines")
STAGES = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def module_file(name: str) -> Path | None:
    """The source file of a project module (a package's __init__.py), None outside the project."""
    if name.split(".")[0] not in PACKAGES:
        return None
    base = REPO.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_modules(path: Path, name: str) -> set[str]:
    """Every module `path` imports, resolved to absolute names (relative imports and `from pkg import mod`)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)  # `from pkg import module`
    return found


def closure(entry: str) -> set[Path]:
    todo, seen, files = [entry], set(), set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        path = module_file(name)
        if path is None:
            continue
        files.add(path)
        parts = name.split(".")
        todo.extend(".".join(parts[:i]) for i in range(1, len(parts)))  # parent packages run their __init__
        todo.extend(imported_modules(path, name))
    return files


def covered(path: Path, deps: list[str]) -> bool:
    rel = path.relative_to(REPO)
    return any(rel == Path(dep) or Path(dep) in rel.parents for dep in deps)


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_every_imported_project_module_is_a_dep(stage):
    spec = STAGES[stage]
    entry = spec["cmd"].split("python -m ", 1)[1].split()[0]
    deps = [d if isinstance(d, str) else next(iter(d)) for d in spec.get("deps", [])]
    missing = sorted(str(p.relative_to(REPO)) for p in closure(entry) if not covered(p, deps))
    assert not missing, f"dvc.yaml stage {stage!r} imports these but does not depend on them: {missing}"


def test_the_closure_follows_local_and_relative_imports():
    files = {str(p.relative_to(REPO)) for p in closure("pipelines.evaluate")}
    assert "components/evaluation/suite.py" in files and "components/inference/generate.py" in files
    assert "components/config.py" in files
