"""LLaVA-UHD's ECCV checkpoints (`--format llava`, `mm_projector_type: adapt_spatial_resampler`).

The checkpoint is the llava layout with `model.mm_projector.*` holding `AdaptSpatialResampler`
(shared/reference/uhd.md §3.2, `multimodal_projector/adapt_spatial_resampler.py`). Its state dict names and shapes
are written here from the reference `__init__`, independently of the project's module, and must load exactly.
"""

from __future__ import annotations

import json

import pytest
import torch

from components.model.build import load_saved_model
from components.model.convert import ConversionError, convert_to_directory, converted
from components.model.processor import UhdProcessor

from .llava_checkpoints import (
    QUESTION,
    llava_layout_config,
    llava_layout_state,
    picture,
    tiny_hf_llava,
    write_clip_tower,
    write_llava,
)

# Every tensor `AdaptSpatialResampler(grid_size, embed_dim, num_heads, kv_dim)` saves (kv_dim != embed_dim), pinned.
REFERENCE_NAMES = [
    "pos_embed",  # nn.Parameter(2D sin-cos of the grid).requires_grad_(False): saved with the weights
    "query",
    "kv_proj.weight",  # nn.Linear(kv_dim, embed_dim, bias=False)
    "attn.in_proj_weight", "attn.in_proj_bias", "attn.out_proj.weight", "attn.out_proj.bias",  # nn.MultiheadAttention
    "ln_q.weight", "ln_q.bias", "ln_kv.weight", "ln_kv.bias", "ln_post.weight", "ln_post.bias",
    "proj",  # nn.Parameter(embed_dim, embed_dim), applied as x @ proj
]  # fmt: skip


def reference_shapes(grid: int, embed: int, kv_dim: int) -> dict[str, tuple[int, ...]]:
    queries = grid * grid
    return {"pos_embed": (queries, embed), "query": (queries, embed), "kv_proj.weight": (embed, kv_dim),
            "attn.in_proj_weight": (3 * embed, embed), "attn.in_proj_bias": (3 * embed,),
            "attn.out_proj.weight": (embed, embed), "attn.out_proj.bias": (embed,),
            "ln_q.weight": (embed,), "ln_q.bias": (embed,), "ln_kv.weight": (embed,), "ln_kv.bias": (embed,),
            "ln_post.weight": (embed,), "ln_post.bias": (embed,), "proj": (embed, embed)}


@pytest.fixture(scope="module")
def reference():
    return tiny_hf_llava()


@pytest.fixture(scope="module")
def tower(reference, tmp_path_factory):
    return write_clip_tower(reference, tmp_path_factory.mktemp("clip-vit-336"))


def eccv_state(reference, grid: int = 12) -> dict[str, torch.Tensor]:
    """The LLM of the reference + a random resampler under its reference names (`model.mm_projector.*`)."""
    state = {k: v for k, v in llava_layout_state(reference).items() if not k.startswith("model.mm_projector.")}
    embed, kv_dim = reference.config.text_config.hidden_size, reference.config.vision_config.hidden_size
    generator = torch.Generator().manual_seed(grid)
    for name, shape in reference_shapes(grid, embed, kv_dim).items():
        state[f"model.mm_projector.{name}"] = torch.randn(shape, generator=generator) * 0.2
    return state


def write_eccv(reference, dst, state=None):
    config = llava_layout_config(reference, projector="adapt_spatial_resampler")
    return write_llava(reference, dst, state if state is not None else eccv_state(reference), config)


@pytest.fixture(scope="module")
def eccv(reference, tower, tmp_path_factory):
    state = eccv_state(reference)
    return converted(write_eccv(reference, tmp_path_factory.mktemp("llava-uhd-144"), state), "llava", tower), state


def test_reference_names_are_the_module_shapes():
    assert list(reference_shapes(12, 32, 16)) == REFERENCE_NAMES


def test_eccv_config(eccv):
    config = eccv[0].config
    assert (config.strategy, config.preset, config.compressor, config.spatial_schema) == (
        "uhd", "uhd-eccv", "spatial_resampler", True)
    assert config.compressor_kwargs is None  # 144 queries: the default 12x12 grid
    assert (config.slice_separator_id, config.row_separator_id, config.conversation) == (29892, 13, "vicuna_v1")


def test_every_reference_name_loads_exactly(eccv):
    result, state = eccv
    loaded = result.model().compressor.state_dict()
    assert sorted(loaded) == sorted(REFERENCE_NAMES)
    for name in REFERENCE_NAMES:
        assert torch.equal(loaded[name], state[f"model.mm_projector.{name}"]), name


def test_other_query_grids_set_the_grid(reference, tower, tmp_path):
    result = converted(write_eccv(reference, tmp_path, eccv_state(reference, grid=8)), "llava", tower)
    assert result.config.compressor_kwargs == {"grid_size": 8}
    assert result.model().compressor.num_queries == 64


def test_unknown_key_is_named(reference, tower, tmp_path):
    state = eccv_state(reference)
    state["model.mm_projector.attn.bias_k"] = torch.zeros(1, 1, 32)  # add_bias_kv: not in the reference
    with pytest.raises(ConversionError, match=r"model\.mm_projector\.attn\.bias_k"):
        converted(write_eccv(reference, tmp_path, state), "llava", tower).model()


def test_missing_key_is_named(reference, tower, tmp_path):
    state = eccv_state(reference)
    del state["model.mm_projector.ln_kv.bias"]
    with pytest.raises(ConversionError, match=r"compressor\.ln_kv\.bias"):
        converted(write_eccv(reference, tmp_path, state), "llava", tower).model()


@pytest.mark.parametrize("size", [(1000, 120), (500, 300)], ids=lambda s: f"{s[0]}x{s[1]}")
@torch.no_grad()
def test_eccv_model_answers_with_slices_and_separators(eccv, size):
    result = eccv[0]
    model = result.model()
    layout = model.plan(*size)
    assert layout.slices and layout.separators  # sliced, with the spatial schema's ',' / '\n'
    batch = UhdProcessor(result.tokenizer, model).prompt_batch([QUESTION], [picture(*size)])
    assert (batch["input_ids"] == result.config.image_token_id).sum() == layout.num_tokens
    out = model.generate(**batch, max_new_tokens=3, do_sample=False)
    assert out.shape[1] == batch["input_ids"].shape[1] + 3


def test_eccv_directory_loads_back(reference, tower, tmp_path):
    src = write_eccv(reference, tmp_path / "llava-uhd-144")
    dst = convert_to_directory(src, tmp_path / "converted", "llava", tower)
    model = load_saved_model(dst)
    assert (model.config.strategy, model.config.preset, model.config.compressor) == ("uhd", "uhd-eccv",
                                                                                     "spatial_resampler")
    expected = converted(src, "llava", tower).state_dict
    loaded = model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in expected.items())
    assert json.loads((dst / "conversion.json").read_text())["vision_tower_files"]
