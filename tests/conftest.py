import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]


def golden_path(name: str) -> Path:
    """The shared goldens when the checkout sits beside shared/ (they may hold more cases), else our copy."""
    shared = REPO.parent / "shared" / "golden" / name
    return shared if shared.exists() else REPO / "tests" / "golden" / name


def load_golden(name: str):
    return json.loads(golden_path(name).read_text())


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO
