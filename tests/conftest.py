import json
import os
import secrets
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _private_ray_token() -> None:
    """Ray's token auth is on by default and the first local `ray.init` writes ~/.ray/auth_token. On a fresh
    machine two xdist workers starting Ray at once race on that file (one cluster ends up with the other's
    token: "InvalidAuthToken"). Each test process gets its own token file instead; subprocesses inherit it.
    The mode is fixed to token (and loopback-only, stack.md §4) from the start of the process: Ray caches the
    mode and the token it first reads, so a test that changed either later would break the tests after it."""
    os.environ.setdefault("RAY_AUTH_MODE", "token")
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    if "RAY_AUTH_TOKEN_PATH" not in os.environ:
        path = Path(tempfile.mkdtemp(prefix="ray-token-")) / "auth_token"
        path.write_text(secrets.token_hex(32))
        os.environ["RAY_AUTH_TOKEN_PATH"] = str(path)


_private_ray_token()

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


def tokenizer_assets(kind: str) -> Path:
    """The offline asset directory of tokenizer `kind` (llama | gpt2 | smollm2)."""
    return REPO / "assets" / "tokenizers" / kind


@pytest.fixture(scope="session")
def gpt2_tokenizer():
    """The GPT-2 tokenizer + `<image>`, through the model factory."""
    from components.model.build import load_tokenizer

    return load_tokenizer("gpt2", tokenizer_assets("gpt2"))


@pytest.fixture(scope="module")
def tiny(gpt2_tokenizer):
    """(model, tokenizer): the factory's tiny random LLaVA-UHD (seed 0, eval mode) with the GPT-2 tokenizer.
    Module scope, so a test module that changes the model cannot leak into another one."""
    from components.model.build import tiny_model

    return tiny_model(gpt2_tokenizer).eval(), gpt2_tokenizer


# The random debug-size model of the tests (and of params/smoke.yaml): the embedded default (SmolLM2-135M) is too
# big for unit tests, so tests that build a model through a TrainConfig name these fields.
TINY_MODEL = {"architecture": "tiny", "tokenizer": "llama", "tokenizer_dir": str(REPO / "assets/tokenizers/llama"),
              "conversation": "vicuna_v1", "vision_hidden": 32, "finetune_llm_layers": 0}
