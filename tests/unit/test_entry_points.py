"""Where the entry points live: pipelines/ holds exactly the DVC stages' modules, and the `uhd` script and
every sub-command it lists resolve to a module with main(argv)."""

import ast
import importlib.util
import re
import tomllib
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]


def test_pipelines_holds_exactly_the_dvc_stage_modules():
    stages = [stage for dvc_yaml in ("dvc.yaml", "released/dvc.yaml")
              for stage in yaml.safe_load((REPO / dvc_yaml).read_text())["stages"].values()]
    commanded = {m for stage in stages for m in re.findall(r"python -m pipelines\.(\w+)", stage["cmd"])}
    modules = {p.stem for p in (REPO / "pipelines").glob("*.py")} - {"__init__"}
    assert modules == commanded


def defines_function(module: str, function: str) -> bool:
    """Read from the source, not imported: the stage modules pull in torch and MLflow (seconds each)."""
    spec = importlib.util.find_spec(module)
    tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
    return any(isinstance(node, ast.FunctionDef) and node.name == function for node in tree.body)


def test_the_console_script_and_its_subcommands_resolve():
    script = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]["uhd"]
    module, _, function = script.partition(":")
    assert defines_function(module, function)
    from cli.main import SUBCOMMANDS

    for name, (target, _) in SUBCOMMANDS.items():
        assert defines_function(target, "main"), name
