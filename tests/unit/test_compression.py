"""The compressor registry (components/compression.py) is the one place that names compressors and their rules:
every consumer agrees with it, and no other module spells a compressor name."""

from __future__ import annotations

import ast
import subprocess
import sys

import pytest

from components.compression import (
    COMPRESSORS,
    MLP,
    QUERIES,
    RESAMPLER,
    SPATIAL_RESAMPLER,
    check_compressor,
    effective_compressor,
    effective_spatial_schema,
    queries_per_image,
)
from tests.conftest import REPO


def test_names_and_query_counts():
    assert COMPRESSORS == (RESAMPLER, SPATIAL_RESAMPLER, MLP) == ("resampler", "spatial_resampler", "mlp")
    assert [queries_per_image(c) for c in COMPRESSORS] == [64, 144, None]
    with pytest.raises(ValueError, match="unknown compressor 'perceiver'"):
        check_compressor("perceiver")


@pytest.mark.parametrize("compressor", COMPRESSORS)
def test_anyres_runs_the_mlp_without_schema(compressor):
    assert effective_compressor(compressor, "anyres") == MLP
    assert not effective_spatial_schema(True, "anyres")
    for strategy in ("uhd", "pad336", "fixed2x2"):
        assert effective_compressor(compressor, strategy) == compressor
        assert effective_spatial_schema(True, strategy) and not effective_spatial_schema(False, strategy)


def test_slicing_counts_with_the_registry_without_loading_torch():
    """components.slicing counts tokens from geometry alone: the registry must not pull model code into it."""
    code = ("import sys; from components.slicing.strategies import plan_layout; "
            "lay = plan_layout(1000, 600, 'uhd', 'uhd-arxiv').with_compressor('spatial_resampler', False); "
            "print(lay.num_tokens, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    tokens, torch_loaded = out.stdout.split()
    assert torch_loaded == "False"
    from components.slicing.strategies import plan_layout

    layout = plan_layout(1000, 600, "uhd", "uhd-arxiv")
    assert int(tokens) == len(layout.images) * QUERIES[SPATIAL_RESAMPLER]


@pytest.mark.parametrize("strategy, preset", [("uhd", "uhd-arxiv"), ("anyres", "onevision")])
@pytest.mark.parametrize("compressor", COMPRESSORS)
def test_the_model_runs_what_the_registry_says(compressor, strategy, preset):
    from components.model.compressors import build_compressor
    from components.model.tiny import tiny_llava_uhd_config

    config = tiny_llava_uhd_config(100, 99, (1, 2), compressor=compressor, strategy=strategy, preset=preset)
    assert config.projector == effective_compressor(compressor, strategy)
    built = build_compressor(config.projector, 32, 64, **config.compressor_kwargs)
    assert built.kind == config.projector
    if built.kind != MLP:
        assert built.num_queries == QUERIES[built.kind]


def test_the_paper_architectures_use_the_registry_counts():
    from components.model.architectures import MODELS

    for spec in MODELS.values():
        assert spec.compressor in COMPRESSORS
        assert spec.compressor_spec().num_queries == QUERIES.get(spec.compressor)


def _string_literals(path) -> list[tuple[int, str]]:
    """(line, value) of every string constant outside docstrings."""
    tree = ast.parse(path.read_text())
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
                  and node.body and isinstance(node.body[0], ast.Expr)
                  and isinstance(node.body[0].value, ast.Constant)}
    return [(node.lineno, node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings]


def test_no_other_module_spells_a_compressor_name():
    """A name written twice drifts: outside the registry, code uses its constants."""
    registry = REPO / "components" / "compression.py"
    offenders = [f"{path.relative_to(REPO)}:{line} {value!r}"
                 for folder in ("components", "pipelines", "cli") if (REPO / folder).is_dir()
                 for path in sorted((REPO / folder).rglob("*.py")) if path != registry
                 for line, value in _string_literals(path) if value in COMPRESSORS]
    assert offenders == []
