"""Each top-level folder has a README stating its contract, and tests/README.md names every test folder."""

import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def tracked_top_folders() -> list[str]:
    try:
        files = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    return sorted({f.split("/")[0] for f in files.splitlines() if "/" in f and not f.startswith(".")})


def test_every_top_level_folder_has_a_readme():
    assert [d for d in tracked_top_folders() if not (REPO / d / "README.md").is_file()] == []


def test_tests_readme_names_every_test_folder():
    folders = {p.name for p in (REPO / "tests").iterdir() if p.is_dir() and not p.name.startswith((".", "__"))}
    named = set(re.findall(r"^- `(\w+)/`", (REPO / "tests/README.md").read_text(), re.M))
    assert named == folders
