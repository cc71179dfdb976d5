"""params.yaml keeps its shape through `dvc exp run -S` (#13): DVC rewrites the file with ruamel (dvc.utils.hydra.
apply_overrides, the function `-S` calls), which turned `""` into `''`, flow lists into block lists and moved the
comment after a list into it. The file is written in the shape that rewrite produces, so an override changes only
its own lines and every comment stays where it was."""

import difflib
import shutil

import pytest

from components.config import load_params

OVERRIDES = {  # (override, the lines it may change)
    "compressor=mlp": 1,
    "train.pretrain.lr=0.002": 1,
    "tracking.uri=sqlite:///other.db": 1,
    "slicing.strategy=pad336": 1,
    "eval.benchmarks=[textvqa,pope,gqa]": 4,  # four of the seven list items go
    "registry.headline=[pope]": 6,
}


@pytest.mark.parametrize("override", sorted(OVERRIDES))
def test_an_override_changes_only_its_own_lines(repo_root, tmp_path, override):
    from dvc.utils.hydra import apply_overrides

    path = tmp_path / "params.yaml"
    shutil.copy(repo_root / "params.yaml", path)
    before = path.read_text().splitlines()
    apply_overrides(path, [override])
    after = path.read_text().splitlines()
    changed = [line for line in difflib.ndiff(before, after) if line[:1] in "+-"]
    removed = [line for line in changed if line.startswith("-")]
    assert len(removed) == OVERRIDES[override], "\n".join(changed)
    assert all(not line[2:].lstrip().startswith("#") for line in removed), "a comment moved or was lost"
    load_params(path)  # still the project's strict params


def test_a_no_op_override_rewrites_the_same_bytes(repo_root, tmp_path):
    from dvc.utils.hydra import apply_overrides

    path = tmp_path / "params.yaml"
    shutil.copy(repo_root / "params.yaml", path)
    apply_overrides(path, ["compressor=resampler"])
    assert path.read_text() == (repo_root / "params.yaml").read_text()
