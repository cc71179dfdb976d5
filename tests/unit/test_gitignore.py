""".gitignore patterns are whole lines: an inline `# comment` would become part of the pattern and match nothing."""

import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def test_no_gitignore_line_carries_an_inline_comment():
    lines = (REPO / ".gitignore").read_text().splitlines()
    assert [line for line in lines if not line.startswith("#") and " #" in line] == []


def test_the_local_promotion_log_is_ignored_and_untracked():
    if not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    rel = "reports/registry/promotions.jsonl"
    ignored = subprocess.run(["git", "check-ignore", "--no-index", "-q", rel], cwd=REPO)
    assert ignored.returncode == 0
    tracked = subprocess.run(["git", "ls-files", "--error-unmatch", rel], cwd=REPO, capture_output=True)
    assert tracked.returncode != 0
