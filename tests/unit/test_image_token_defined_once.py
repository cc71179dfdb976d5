"""`"<image>"` (IMAGE_TOKEN) is written in exactly one library module; every other one imports it.

Four modules used to define it; a copy that drifts (a different marker in validation than in the encoder) would
pass every sample through validation and then fail, or silently go unexpanded, in training.
"""

import ast
from pathlib import Path

from components.data import conversation

ROOT = Path(__file__).resolve().parents[2]
DEFINING_MODULE = Path(conversation.__file__).resolve()


def modules_writing_the_marker() -> list[str]:
    """Library and stage modules holding the string constant "<image>" (docstrings and comments aside)."""
    found = []
    for path in sorted([*ROOT.glob("components/**/*.py"), *ROOT.glob("pipelines/**/*.py")]):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        if any(isinstance(node, ast.Constant) and node.value == conversation.IMAGE_TOKEN for node in ast.walk(tree)):
            found.append(str(path.resolve().relative_to(ROOT)))
    return found


def test_image_token_is_written_only_in_conversation_py():
    assert modules_writing_the_marker() == [str(DEFINING_MODULE.relative_to(ROOT))]
