"""Every ```python block of the READMEs runs as written, and prints what its comments say.

A block runs statement by statement in a scratch directory holding the images it names, with
$MLFLOW_TRACKING_URI on a store whose `llava-uhd@champion` is the tiny model (conftest.py), so
`load_model("models:/llava-uhd@champion")` finds one. An expression statement followed by a comment that is
a Python literal (`lay.grid, lay.num_tokens   # ((3, 2), 1014)`) must evaluate to that literal; other
comments are prose.
"""

from __future__ import annotations

import ast
import io
import re
import shutil
import tokenize
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
READMES = sorted([REPO / "README.md", *REPO.glob("*/README.md")])
FENCE = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
IMAGE_NAME = re.compile(r"""["']((?:[\w-]+/)*[\w-]+\.(?:jpg|jpeg|png))["']""")  # a name or a relative path


def python_blocks(readme: Path) -> list[str]:
    return FENCE.findall(readme.read_text(encoding="utf-8"))


def literal_comments(code: str) -> dict[int, object]:
    """line number -> the value a trailing comment states, for comments that are Python literals."""
    stated = {}
    for token in tokenize.generate_tokens(io.StringIO(code).readline):
        if token.type == tokenize.COMMENT:
            try:
                stated[token.start[0]] = ast.literal_eval(token.string[1:].strip())
            except (ValueError, SyntaxError):
                continue
    return stated


def run_block(code: str) -> int:
    """Execute `code`; return how many stated values were checked."""
    namespace: dict = {"__name__": "__readme__"}
    stated = literal_comments(code)
    checked = 0
    for statement in ast.parse(code).body:
        if isinstance(statement, ast.Expr) and statement.end_lineno in stated:
            value = eval(compile(ast.Expression(statement.value), "<README>", "eval"), namespace)
            assert value == stated[statement.end_lineno], f"line {statement.end_lineno}: got {value!r}"
            checked += 1
        else:
            exec(compile(ast.Module([statement], []), "<README>", "exec"), namespace)
    return checked


BLOCKS = [(readme, i, code) for readme in READMES for i, code in enumerate(python_blocks(readme))]


def test_the_readme_has_python_examples():
    assert len(python_blocks(REPO / "README.md")) >= 2  # the fence pattern still finds them


@pytest.mark.parametrize(("readme", "index", "code"), BLOCKS,
                         ids=[f"{r.relative_to(REPO)}#{i}" for r, i, _ in BLOCKS])
def test_readme_example_runs_as_written(readme, index, code, logged, images, tmp_path, monkeypatch):
    for n, name in enumerate(sorted(set(IMAGE_NAME.findall(code)))):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(images[n % len(images)], tmp_path / name)  # the tiny model answers any image
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", logged["uri"])
    run_block(code)


def test_a_wrong_stated_value_fails():
    assert run_block("x = (1, 2)\nx   # (1, 2)\nlen(x)   # prose, not checked\n") == 1
    with pytest.raises(AssertionError, match="got 3"):
        run_block("1 + 2   # 4\n")
