"""Run-time assets live outside tests/, with their provenance: the production tokenizer default points at
assets/tokenizers/, and every asset folder keeps a README with its licence."""

from pathlib import Path

import pytest

from components.config import Params, load_params

REPO = Path(__file__).resolve().parents[2]
PARAMS_FILES = ["params.yaml", "params/paper-7b.yaml", "params/paper-13b.yaml", "params/paper-eccv-13b.yaml"]


@pytest.mark.parametrize("params_file", PARAMS_FILES)
def test_tokenizer_dir_is_a_run_time_asset(params_file):
    tokenizer_dir = load_params(REPO / params_file).model.tokenizer_dir
    assert not Path(tokenizer_dir).parts[0] == "tests"
    assert (REPO / tokenizer_dir / "tokenizer.json").is_file()


def test_the_code_default_is_the_params_default():
    assert Params().model.tokenizer_dir == load_params(REPO / "params.yaml").model.tokenizer_dir


@pytest.mark.parametrize("folder", sorted(p.name for p in (REPO / "assets/tokenizers").iterdir() if p.is_dir()))
def test_each_tokenizer_folder_keeps_its_readme_and_licence(folder):
    readme = (REPO / "assets/tokenizers" / folder / "README.md").read_text(encoding="utf-8")
    assert "licen" in readme.lower() and "Source:" in readme
