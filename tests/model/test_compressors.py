"""Compressors: shapes, batching, gradients, token accounting, and literal ports of the reference forwards."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from components.compression import COMPRESSORS
from components.model.compressors import (
    Compressor,
    MlpCompressor,
    Resampler,
    SpatialResampler,
    build_compressor,
)
from components.model.posemb import interpolate_pos_embed, sincos_2d
from components.slicing import plan_slices
from components.slicing.layout import patch_grid
from tests.model.test_roi_align import reference_roi_align

VISION, LLM, HEADS = 32, 64, 2
GRIDS = [(1, 1), (1, 40), (40, 1), (24, 24), (17, 29)]


def _build(kind: str, seed: int = 0, **kwargs) -> Compressor:
    torch.manual_seed(seed)
    if kind != "mlp":
        kwargs.setdefault("num_heads", HEADS)
    return build_compressor(kind, VISION, LLM, **kwargs)


def _features(grids, seed: int = 1, dim: int = VISION, dtype=torch.float32) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(r, c, dim, generator=gen, dtype=dtype) for r, c in grids]


# ---------------------------------------------------------------------------------------------------
# Interface


@pytest.mark.parametrize("kind", COMPRESSORS)
def test_shapes_for_every_grid_and_mixed_batch(kind):
    m = _build(kind)
    outs = m(_features(GRIDS))
    assert len(outs) == len(GRIDS)
    for (rows, cols), out in zip(GRIDS, outs, strict=True):
        assert out.shape == (m.tokens_for_grid(rows, cols), LLM)
        assert out.dtype == torch.float32 and torch.isfinite(out).all()
    expected = {"resampler": [64] * 5, "spatial_resampler": [144] * 5, "mlp": [r * c for r, c in GRIDS]}[kind]
    assert [o.shape[0] for o in outs] == expected
    assert m([]) == []


@pytest.mark.parametrize("kind", COMPRESSORS)
def test_batched_equals_one_by_one(kind):
    m = _build(kind)
    grids = GRIDS + [(24, 24), (3, 5)]
    feats = _features(grids)
    batched = m(feats)
    for f, out in zip(feats, batched, strict=True):
        torch.testing.assert_close(out, m([f])[0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", COMPRESSORS)
def test_backward_reaches_every_parameter(kind):
    m = _build(kind)
    feats = [f.requires_grad_() for f in _features([(1, 1), (17, 29), (24, 24)])]
    loss = sum((o * torch.randn_like(o)).sum() for o in m(feats))
    loss.backward()
    params = dict(m.named_parameters())
    assert params and all(p.requires_grad for p in params.values())
    for name, p in params.items():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name
    assert all(torch.isfinite(f.grad).all() for f in feats)


@pytest.mark.parametrize("kind", COMPRESSORS)
def test_deterministic_given_seed(kind):
    a, b = _build(kind, seed=5), _build(kind, seed=5)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert ka == kb and torch.equal(va, vb)
    feats = _features([(5, 7), (24, 24)])
    for oa, ob in zip(a(feats), b(feats), strict=True):
        assert torch.equal(oa, ob)
    other = _build(kind, seed=6).state_dict()
    assert any(not torch.equal(other[k], v) for k, v in a.state_dict().items())


@pytest.mark.parametrize("kind", COMPRESSORS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_dtype_follows_parameters(kind, dtype):
    m = _build(kind).to(dtype)
    outs = m(_features([(4, 6), (24, 24)]))  # float32 inputs are cast to the parameters' dtype
    assert all(o.dtype == dtype and torch.isfinite(o.float()).all() for o in outs)
    if dtype == torch.bfloat16:
        ref = _build(kind)(_features([(4, 6), (24, 24)]))
        for o, r in zip(outs, ref, strict=True):
            assert torch.nn.functional.cosine_similarity(o.float().flatten(), r.flatten(), dim=0) > 0.99


def test_build_compressor_dims_and_errors():
    m = build_compressor("resampler", 1024, 5120 // 4)
    assert isinstance(m, Resampler) and m.num_heads == 10 and m.num_queries == 64 and m.embed_dim == 1280
    s = build_compressor("spatial_resampler", 64, 64)
    assert isinstance(s, SpatialResampler) and s.num_queries == 144 and s.num_heads == 1
    assert isinstance(s.kv_proj, torch.nn.Identity)  # vision_dim == llm_dim
    assert isinstance(build_compressor("mlp", 8, 16), MlpCompressor)
    assert list(build_compressor("mlp", 8, 16).state_dict()) == ["0.weight", "0.bias", "2.weight", "2.bias"]
    with pytest.raises(ValueError, match="unknown compressor"):
        build_compressor("qformer", 8, 16)
    with pytest.raises(ValueError, match="square"):
        build_compressor("resampler", 8, 16, num_queries=60)
    m = _build("resampler")
    with pytest.raises(ValueError):
        m([torch.randn(4, VISION)])
    with pytest.raises(ValueError):
        m([torch.randn(4, 4, VISION + 1)])
    with pytest.raises(TypeError):
        m(torch.randn(4, 4, VISION))


def test_reference_parameter_names():
    names = set(_build("resampler").state_dict())
    assert names == {
        "query", "pos_embed", "proj", "kv_proj.weight", "attn.in_proj_weight", "attn.in_proj_bias",
        "attn.out_proj.weight", "attn.out_proj.bias", "ln_q.weight", "ln_q.bias", "ln_kv.weight", "ln_kv.bias",
        "ln_post.weight", "ln_post.bias",
    }  # fmt: skip
    assert set(_build("spatial_resampler").state_dict()) == names
    m = _build("resampler")
    assert all(ln.eps == 1e-6 for ln in (m.ln_q, m.ln_kv, m.ln_post))
    assert m.kv_proj.bias is None


# ---------------------------------------------------------------------------------------------------
# Token accounting agrees with the slicing layouts


LAYOUT_SIZES = [(1, 1), (50, 2000), (2000, 50), (336, 336), (337, 336), (672, 1088), (1008, 672), (1920, 1080)]


@pytest.mark.parametrize("kind", COMPRESSORS)
@pytest.mark.parametrize("preset", ["uhd-arxiv", "uhd-eccv", "paper"])
def test_tokens_match_layout(kind, preset):
    m = _build(kind)
    for width, height in LAYOUT_SIZES:
        layout = plan_slices(width, height, preset=preset).with_compressor(kind, spatial_schema=False)
        grids = [patch_grid(size, layout.patch_size)[::-1] for size in layout.images]  # (rows, cols)
        expected = layout.tokens_per_image()
        assert [m.tokens_for_grid(r, c) for r, c in grids] == expected
        if kind != "mlp" or sum(expected) < 4000:
            assert [o.shape[0] for o in m(_features(grids))] == expected


def test_pool_shape_matches_layout_extras():
    for width, height in LAYOUT_SIZES:
        layout = plan_slices(width, height, preset="uhd-eccv")
        pools = layout.extras["pool_hw"]
        cols, rows = patch_grid(layout.overview, 14)
        assert SpatialResampler.pool_shape(rows, cols) == pools["overview"]
        if layout.sliced:
            cols, rows = patch_grid(layout.slices[0], 14)
            assert SpatialResampler.pool_shape(rows, cols) == pools["slice"]
    assert SpatialResampler.pool_shape(24, 24) == (3, 3)
    assert SpatialResampler.pool_shape(12, 24) == (2, 4)  # wide map: 2 rows x 4 columns per cell
    assert SpatialResampler.pool_shape(40, 1) == (4, 2)


# ---------------------------------------------------------------------------------------------------
# Position embeddings


def _mae_2d(embed_dim: int, grid_size: int) -> np.ndarray:
    """facebookresearch/mae util/pos_embed.py, verbatim logic (float32 numpy)."""

    def one_d(dim, pos):
        omega = np.arange(dim // 2, dtype=np.float32)
        omega /= dim / 2.0
        omega = 1.0 / 10000**omega
        out = np.einsum("m,d->md", pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    grid_h = np.arange(grid_size, dtype=np.float32)
    grid_w = np.arange(grid_size, dtype=np.float32)
    grid = np.stack(np.meshgrid(grid_w, grid_h), axis=0).reshape([2, 1, grid_size, grid_size])
    return np.concatenate([one_d(embed_dim // 2, grid[0]), one_d(embed_dim // 2, grid[1])], axis=1)


def test_sincos_equals_mae_formula():
    for dim, grid in [(4, 2), (16, 3), (64, 8), (128, 12)]:
        ours = sincos_2d(dim, grid)
        assert ours.dtype == torch.float32 and ours.shape == (grid * grid, dim)
        np.testing.assert_allclose(ours.numpy(), _mae_2d(dim, grid), atol=1e-5, rtol=0)
    # dim 4: [sin x, cos x, sin y, cos y] for the raster position (y, x)
    t = sincos_2d(4, (2, 3))
    for y in range(2):
        for x in range(3):
            expected = torch.tensor([math.sin(x), math.cos(x), math.sin(y), math.cos(y)])
            torch.testing.assert_close(t[y * 3 + x], expected)


def test_interpolate_pos_embed():
    table = sincos_2d(16, 8)
    assert interpolate_pos_embed(table, 8, 8) is table
    for target in [(1, 1), (1, 40), (40, 1), (17, 29)]:
        assert interpolate_pos_embed(table, 8, target).shape == (target[0] * target[1], 16)
    up = interpolate_pos_embed(table, 8, (16, 16)).reshape(16, 16, 16)
    ref = F.interpolate(table.reshape(1, 8, 8, 16).permute(0, 3, 1, 2), size=(16, 16), mode="bicubic")
    torch.testing.assert_close(up, ref[0].permute(1, 2, 0))
    assert interpolate_pos_embed(table.bfloat16(), 8, (5, 5)).dtype == torch.bfloat16


def test_key_pos_grid_option():
    m = _build("resampler", key_pos_grid=24)
    assert m.key_pos_embed.shape == (576, LLM) and "key_pos_embed" not in m.state_dict()
    torch.testing.assert_close(m.key_pos(24, 24), sincos_2d(LLM, 24))
    torch.testing.assert_close(_build("resampler").key_pos(8, 8), sincos_2d(LLM, 8))
    assert [o.shape for o in m(_features([(3, 30)]))] == [(64, LLM)]


# ---------------------------------------------------------------------------------------------------
# Literal ports of the reference forwards (thunlp/LLaVA-UHD resampler.py / adapt_spatial_resampler.py)


def _get_abs_pos(abs_pos: torch.Tensor, tgt_size: tuple[int, int]) -> torch.Tensor:
    src = int(math.sqrt(abs_pos.size(0)))
    return (
        F.interpolate(
            abs_pos.float().reshape(1, src, src, -1).permute(0, 3, 1, 2),
            size=(tgt_size[0], tgt_size[1]),
            mode="bicubic",
            align_corners=False,
        )
        .permute(0, 2, 3, 1)
        .flatten(0, 2)
        .to(dtype=abs_pos.dtype)
    )


def _reference_resampler(m: Resampler, feat: torch.Tensor) -> torch.Tensor:
    """`Resampler.forward(x, tgt_size=(rows, cols))` with the key table resized to the actual grid."""
    rows, cols, _ = feat.shape
    pos_embed = _get_abs_pos(m.pos_embed, (rows, cols))
    x = m.ln_kv(m.kv_proj(feat.reshape(rows * cols, 1, -1)))  # (L, N=1, E), seq-first as the reference
    q = m.ln_q(m.query)
    query = q.unsqueeze(1) + m.pos_embed.unsqueeze(1)
    out = m.attn(query.permute(1, 0, 2), (x + pos_embed.unsqueeze(1)).permute(1, 0, 2), x.permute(1, 0, 2))[0]
    return m.ln_post(out[0]) @ m.proj


def _cal_best_pooling_size(feature_wh_ratio: float) -> tuple[int, int]:
    best, min_error = (3, 3), float("inf")
    for w, h in [(4, 2), (3, 2), (4, 3), (3, 3), (2, 4), (2, 3), (3, 4)]:
        error = abs(math.log(feature_wh_ratio) - math.log(w / h))
        if error < min_error:
            best, min_error = (h, w), error
    return best


def _slice_image_feature_boxes(height: int, width: int, num_windows: int = 144) -> torch.Tensor:
    ratio = height * width / num_windows
    crop_h = math.sqrt(ratio / (width / height))
    crop_w = crop_h * (width / height)
    rows, cols = int(round(height / crop_h)), int(round(width / crop_w))
    assert rows * cols == num_windows
    coords = [
        [j * crop_w, i * crop_h, j * crop_w + crop_w, i * crop_h + crop_h] for i in range(rows) for j in range(cols)
    ]
    boxes = torch.tensor(coords, dtype=torch.float64)  # the reference: float32, then the model dtype
    return torch.cat([torch.zeros(num_windows, 1, dtype=torch.float64), boxes], dim=1)


def _reference_spatial(m: SpatialResampler, feat: torch.Tensor) -> torch.Tensor:
    """`AdaptSpatialResampler.forward` (1x feature path): RoIAlign keys/values, then per-cell attention."""
    rows, cols, _ = feat.shape
    key_pos = _get_abs_pos(m.pos_embed, (rows, cols))
    x = m.ln_kv(m.kv_proj(feat.reshape(1, rows * cols, -1)))
    query = (m.ln_q(m.query) + m.pos_embed).reshape(-1, 1, m.embed_dim)  # unfold(kernel 1): (144, 1, E)
    key = (x + key_pos[None]).reshape(1, rows, cols, -1).permute(0, 3, 1, 2)
    value = x.reshape(1, rows, cols, -1).permute(0, 3, 1, 2)
    boxes = _slice_image_feature_boxes(rows, cols).to(feat.dtype)
    size = _cal_best_pooling_size(cols / rows)
    key = reference_roi_align(key, boxes, size).flatten(-2).permute(0, 2, 1)  # (144, h*w, E)
    value = reference_roi_align(value, boxes, size).flatten(-2).permute(0, 2, 1)
    out = m.attn(query, key, value)[0]  # batch_first here == the reference's seq-first permutes
    return m.ln_post(out[:, 0]) @ m.proj


@pytest.mark.parametrize("grid", [(24, 24), (17, 29), (1, 30), (40, 1)])
def test_resampler_matches_reference_forward(grid):
    m = _build("resampler").double()
    (feat,) = _features([grid], dtype=torch.float64)
    torch.testing.assert_close(m([feat])[0], _reference_resampler(m, feat), atol=1e-8, rtol=1e-8)


@pytest.mark.parametrize("grid", [(24, 24), (17, 29), (1, 30), (40, 1)])
def test_spatial_resampler_matches_reference_forward(grid):
    m = _build("spatial_resampler").double()
    with torch.no_grad():  # non-zero biases so the "bias after pooling" reordering is exercised
        m.attn.in_proj_bias.normal_()
        m.attn.out_proj.bias.normal_()
    (feat,) = _features([grid], dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(m([feat])[0], _reference_spatial(m, feat), atol=1e-8, rtol=1e-8)


@pytest.mark.parametrize("grid", [(24, 24), (17, 29), (1, 30)])
def test_spatial_attention_is_local(grid):
    """Perturbing every patch outside a query's RoI support leaves that query's output unchanged."""
    rows, cols = grid
    m = _build("spatial_resampler").double()
    (feat,) = _features([grid], dtype=torch.float64)
    index, weight = m.plan(rows, cols)
    with torch.no_grad():
        base = m([feat])[0]
        for cell in (0, 13, 77, 143):
            support = torch.unique(index[cell][weight[cell] != 0])
            i, j = divmod(cell, 12)
            if support.numel() == 0:
                # maps under 12 patches high/wide: RoIAlign forces boxes to >= 1 patch, so the last cells'
                # samples fall past the map and are zero (torchvision rule); such a query sees no patch.
                assert rows < 12 or cols < 12
                out = m([feat + torch.randn_like(feat)])[0]
                torch.testing.assert_close(out[cell], base[cell], atol=1e-10, rtol=0)
                continue
            ys, xs = support // cols, support % cols
            # the support lies within the cell's box grown by at most one patch (bilinear taps)
            assert ys.min() >= math.floor(i * rows / 12) - 1 and ys.max() <= math.ceil((i + 1) * rows / 12) + 1
            assert xs.min() >= math.floor(j * cols / 12) - 1 and xs.max() <= math.ceil((j + 1) * cols / 12) + 1
            outside = torch.ones(rows * cols, dtype=torch.bool)
            outside[support] = False
            perturbed = feat.clone().reshape(rows * cols, -1)
            perturbed[outside] += 10 * torch.randn(int(outside.sum()), VISION, dtype=torch.float64)
            out = m([perturbed.reshape(rows, cols, -1)])[0]
            torch.testing.assert_close(out[cell], base[cell], atol=1e-10, rtol=0)
            if outside.any():
                assert (out - base).abs().amax() > 1e-3  # other queries did see the change
            inside = feat.clone().reshape(rows * cols, -1)
            inside[support[0]] += 1.0
            assert (m([inside.reshape(rows, cols, -1)])[0][cell] - base[cell]).abs().amax() > 1e-6


def test_resampler_attends_globally():
    """Contrast: the v1 resampler's every query sees every patch."""
    m = _build("resampler").double()
    (feat,) = _features([(6, 6)], dtype=torch.float64)
    with torch.no_grad():
        base = m([feat])[0]
        moved = feat.clone()
        moved[5, 5] += 1.0
        assert ((m([moved])[0] - base).abs().amax(dim=1) > 1e-8).all()


def test_mlp_is_per_patch_row_major():
    m = _build("mlp")
    (feat,) = _features([(3, 4)])
    out = m([feat])[0]
    torch.testing.assert_close(out[1 * 4 + 2], m[2](m[1](m[0](feat[1, 2]))))
