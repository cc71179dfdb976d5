"""dvc.yaml's deps cannot drift from the code (#13): every project module a stage's entry module imports,
directly or through other project modules (function-local imports included), is covered by one of its deps, so
changing any of them makes `dvc repro` rerun the stage."""

import ast
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("components", "pipelines")
# Every pipeline file's stages: the main DAG's by name, released/dvc.yaml's as `released/dvc.yaml:<name>`.
STAGES = {**yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"],
          **{f"released/dvc.yaml:{name}": spec
             for name, spec in yaml.safe_load((REPO / "released" / "dvc.yaml").read_text())["stages"].items()}}


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


# --- params: every params key the stage's code reads is one of its dvc.yaml params ----------------------------
# Found statically over the same import closure: a name is a params section when it is annotated with a config class
# (`eval_cfg: EvalConfig`), is an argument called `params`, is bound from `load_params(...)`, or is assigned from
# another section (`recipe = params.train.x`); `getattr(params.train, stage)` is the stage's own recipe, and a
# branch for another stage (`if stage == "finetune"`) is skipped. Reading a field is reading that key; reading
# anything else of a section (a property, a method) or handing it to asdict() reads the whole section. Calls are
# followed by name from the entry module. components/config.py itself (the classes' own validation) is no reader.
def _section_paths() -> tuple[dict[str, list[str]], dict[str, type]]:
    import dataclasses
    import typing

    from components.config import Params

    by_class, by_path = {}, {}

    def walk(cls, path):
        by_class.setdefault(cls.__name__, []).append(path)
        by_path[path] = cls
        for f in dataclasses.fields(cls):
            hint = typing.get_type_hints(cls)[f.name]
            if dataclasses.is_dataclass(hint):
                walk(hint, f"{path}.{f.name}" if path else f.name)

    walk(Params, "")
    return by_class, by_path


SECTIONS_BY_CLASS, SECTION_CLASS = _section_paths()


WHOLE = ("asdict", "astuple", "vars", "replace")  # calls that read every field of a section they are given


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


class ParamsReads(ast.NodeVisitor):
    """The params keys one function reads (see above)."""

    def __init__(self, stage: str):
        self.stage, self.env, self.reads = stage, {}, set()

    def annotated(self, annotation) -> list[str]:
        text = ast.unparse(annotation) if annotation is not None else ""
        words = set(text.replace("|", " ").replace("[", " ").replace("]", " ").replace(".", " ").split())
        return [path for cls, paths in SECTIONS_BY_CLASS.items() if cls in words for path in paths]

    def resolve(self, node) -> list[str]:
        """The sections `node` evaluates to ([] when it is not one); records the keys read on the way."""
        if isinstance(node, ast.Name):
            return self.env.get(node.id, [])
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "load_params":
            return [""]
        if isinstance(node, ast.Attribute):
            return [p for base in self.resolve(node.value) for p in self.member(base, node.attr)]
        if isinstance(node, ast.Call) and (getattr(node.func, "id", None) or getattr(node.func, "attr", None)) in WHOLE:
            for arg in node.args:
                self.reads.update(self.resolve(arg))  # asdict(params.eval): every key of the section
            return []
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "getattr"
                and len(node.args) >= 2):
            name = node.args[1].value if isinstance(node.args[1], ast.Constant) else None
            out = []
            for base in self.resolve(node.args[0]):
                if name is not None:
                    out += self.member(base, name)
                elif _join(base, self.stage) in SECTION_CLASS:
                    out.append(_join(base, self.stage))  # getattr(params.train, stage): this stage's recipe
                else:
                    self.reads.add(base)  # a computed field name: any of them
            return out
        return []

    def member(self, base: str, name: str) -> list[str]:
        import dataclasses

        child = _join(base, name)
        if child in SECTION_CLASS:
            return [child]
        fields = {f.name for f in dataclasses.fields(SECTION_CLASS[base])}
        self.reads.add(child if name in fields else base)
        return []

    def visit_FunctionDef(self, node):
        args = node.args.posonlyargs + node.args.args + node.args.kwonlyargs
        for arg in args:
            if paths := self.annotated(arg.annotation) or ([""] if arg.arg == "params" else []):
                self.env[arg.arg] = paths  # the project's convention: an unannotated `params` is the Params
        for stmt in self.walk(node):  # aliases first (`recipe = getattr(params.train, stage)`), then every read
            if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
                if paths := self.resolve(stmt.value):
                    self.env[stmt.targets[0].id] = paths
        for sub in self.walk(node):
            if isinstance(sub, ast.Attribute | ast.Call):
                self.resolve(sub)

    def walk(self, node):
        """ast.walk, minus the branches of another stage: `x if stage == "finetune" else y`, `if stage == ...:`."""
        todo = [node]
        while todo:
            node = todo.pop()
            yield node
            if isinstance(node, ast.If | ast.IfExp) and (taken := self.guard(node.test)) is not None:
                branch = node.body if taken else node.orelse
                todo.extend([node.test, *(branch if isinstance(branch, list) else [branch])])
            else:
                todo.extend(ast.iter_child_nodes(node))

    def guard(self, test) -> bool | None:
        """Whether `stage == "<name>"` (or !=) holds for this stage; None for any other test."""
        if (isinstance(test, ast.Compare) and isinstance(test.left, ast.Name) and test.left.id == "stage"
                and len(test.ops) == 1 and isinstance(test.ops[0], ast.Eq | ast.NotEq)
                and isinstance(test.comparators[0], ast.Constant)):
            equal = test.comparators[0].value == self.stage
            return equal if isinstance(test.ops[0], ast.Eq) else not equal
        return None

    visit_AsyncFunctionDef = visit_FunctionDef


def reachable_functions(entry: str) -> list[ast.FunctionDef]:
    """The functions the entry module can call, by name over its import closure (a call `x.f(...)` reaches every
    `def f` there): the closure minus what the stage never runs, e.g. the registration helpers beside
    log_evaluation in stage_records.py."""
    defs = {}
    for path in closure(entry):
        if path != REPO / "components" / "config.py":  # the config classes' own validation reads no params
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    defs.setdefault(node.name, []).append(node)
    todo = [node for node in ast.walk(ast.parse(module_file(entry).read_text()))
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)]
    seen = {}
    while todo:
        node = todo.pop()
        if id(node) in seen:
            continue
        seen[id(node)] = node
        for call in ast.walk(node):
            if isinstance(call, ast.Call):
                name = call.func.id if isinstance(call.func, ast.Name) else getattr(call.func, "attr", None)
                todo.extend(defs.get(name, []))
            elif isinstance(call, ast.Name):  # a function passed by name (a decorator, a callback)
                todo.extend(defs.get(call.id, []))
    return list(seen.values())


def params_read(stage: str, entry: str) -> set[str]:
    reads = set()
    for node in reachable_functions(entry):
        visitor = ParamsReads(stage)
        visitor.visit_FunctionDef(node)
        reads |= visitor.reads
    return reads


def params_covered(key: str, declared: list[str]) -> bool:
    return any(key == d or key.startswith(d + ".") for d in declared)


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_every_params_key_a_stage_reads_is_a_dvc_param(stage):
    spec = STAGES[stage]
    entry = spec["cmd"].split("python -m ", 1)[1].split()[0]
    declared = [p for p in spec.get("params", []) if isinstance(p, str)]
    missing = sorted(k for k in params_read(stage, entry) if not params_covered(k, declared))
    assert not missing, (f"dvc.yaml stage {stage!r} reads these params but does not list them (a change would "
                         f"not rerun it): {missing}")
