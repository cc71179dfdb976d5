"""Visual-token compressors between the vision tower and the LLM (the "projector").

Three kinds, one interface (`Compressor`): the forward takes a list of per-image patch-feature maps
(rows_i, cols_i, vision_dim) -- one per encoded image, slice or overview, CLS already dropped -- and
returns one (tokens_for_grid(rows_i, cols_i), llm_dim) tensor per image, in the same order. Images of
different sizes in one call are processed batched.

* `resampler` (arXiv v1, shared/reference/uhd.md §2; Qwen-VL `Resampler`): 64 learned queries on an 8x8
  grid, one cross-attention over all patches. Key position embedding = the sin-cos table of
  `key_pos_grid` (default: the query grid, as in Qwen-VL and the March code) bicubically resized to the
  image's own (rows, cols) -- the March code always resized it to 24x24, wrong for any other grid.
* `spatial_resampler` (ECCV, §3.2; `AdaptSpatialResampler`): 144 queries on 12x12; the (rows, cols) map is
  cut into 12x12 equal boxes, each box is RoIAligned to the pool shape of `cal_best_pooling_size`
  (components.slicing.uhd.pool_shape), and query (i, j) attends only to its own box's h*w keys.
* `mlp` (LLaVA-1.5 `mlp2x_gelu`): Linear, GELU, Linear on every patch; rows*cols tokens, row-major.

Parameter names follow the reference modules (`query`, `pos_embed`, `kv_proj`, `attn.in_proj_weight`,
`ln_q`, `ln_kv`, `ln_post`, `proj`; the MLP's `0.weight` / `2.weight`) so reference checkpoints load.

The spatial resampler computes the reference forward (RoIAlign of keys/values, then
`nn.MultiheadAttention` per cell) in an equivalent cheaper order: RoIAlign is linear, so the attention's
key/value input projections are applied to the rows*cols patch tokens *before* pooling and the biases
after (12x12 cells x up to 12 pooled keys are up to 3x more rows than the 576 patches).
tests/model/test_compressors.py checks it against a literal port of the reference forward.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.init import trunc_normal_
from torch.nn.utils.rnn import pad_sequence

from components.compression import MLP, QUERIES, RESAMPLER, SPATIAL_GRID, SPATIAL_RESAMPLER, check_compressor
from components.slicing.uhd import pool_shape

from .posemb import interpolate_pos_embed, sincos_2d
from .roi_align import apply_roi_weights, roi_align_weights

LN_EPS = 1e-6
PATCH_SIZE = 14  # only used to phrase the pool-shape rule like the slicing module (the ratio is what counts)


class Compressor(nn.Module):
    """Common interface of every compressor."""

    kind: str = ""
    vision_dim: int
    llm_dim: int

    def tokens_for_grid(self, rows: int, cols: int) -> int:
        """Visual tokens produced for one encoded image whose ViT patch grid is rows x cols."""
        raise NotImplementedError

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        raise NotImplementedError

    def _reference_parameter(self) -> torch.Tensor:
        return next(self.parameters())

    def _prepare(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        """Validate (rows, cols, vision_dim) maps and move them to the parameters' device and dtype."""
        if isinstance(features, torch.Tensor):
            raise TypeError("features must be a list of (rows, cols, vision_dim) tensors, one per encoded image")
        ref = self._reference_parameter()
        out = []
        for i, f in enumerate(features):
            if f.ndim != 3 or f.shape[-1] != self.vision_dim or f.shape[0] < 1 or f.shape[1] < 1:
                raise ValueError(
                    f"features[{i}] must be (rows >= 1, cols >= 1, {self.vision_dim}), got {tuple(f.shape)}"
                )
            out.append(f.to(device=ref.device, dtype=ref.dtype))
        return out


def _check_grid(rows: int, cols: int) -> None:
    if rows < 1 or cols < 1:
        raise ValueError(f"patch grid must be at least 1x1, got {rows}x{cols}")


class _AttentionPool(Compressor):
    """Shared parts of both resamplers (the reference `Resampler.__init__`, in its RNG order)."""

    def __init__(
        self,
        vision_dim: int,
        llm_dim: int,
        grid_size: int,
        num_heads: int | None = None,
        key_pos_grid: int | None = None,
    ) -> None:
        super().__init__()
        self.vision_dim = vision_dim
        self.llm_dim = llm_dim
        self.embed_dim = llm_dim
        self.grid_size = grid_size
        self.num_queries = grid_size * grid_size
        self.num_heads = num_heads if num_heads is not None else max(1, llm_dim // 128)
        if llm_dim % self.num_heads:
            raise ValueError(f"llm_dim {llm_dim} is not divisible by num_heads {self.num_heads}")
        self.key_pos_grid = key_pos_grid if key_pos_grid is not None else grid_size

        self.register_buffer("pos_embed", sincos_2d(llm_dim, grid_size))  # query positions (reference name)
        if self.key_pos_grid != grid_size:
            self.register_buffer("key_pos_embed", sincos_2d(llm_dim, self.key_pos_grid), persistent=False)
        else:
            self.register_buffer("key_pos_embed", None)
        self.query = nn.Parameter(torch.zeros(self.num_queries, llm_dim))
        trunc_normal_(self.query, std=0.02)
        self.kv_proj = nn.Linear(vision_dim, llm_dim, bias=False) if vision_dim != llm_dim else nn.Identity()
        self.attn = nn.MultiheadAttention(llm_dim, self.num_heads, batch_first=True)
        self.ln_q = nn.LayerNorm(llm_dim, eps=LN_EPS)
        self.ln_kv = nn.LayerNorm(llm_dim, eps=LN_EPS)
        self.ln_post = nn.LayerNorm(llm_dim, eps=LN_EPS)
        self.proj = nn.Parameter((llm_dim**-0.5) * torch.randn(llm_dim, llm_dim))
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.constant_(m.bias, 0)
        elif isinstance(m, nn.LayerNorm):
            nn.init.constant_(m.bias, 0)
            nn.init.constant_(m.weight, 1.0)

    def _reference_parameter(self) -> torch.Tensor:
        return self.query

    @torch.no_grad()
    def reset_pos_tables(self) -> None:
        """Recompute the fixed sin-cos tables in place (e.g. after a meta-device / empty-weights init)."""
        self.pos_embed.copy_(sincos_2d(self.embed_dim, self.grid_size))
        if self.key_pos_embed is not None:
            self.key_pos_embed.copy_(sincos_2d(self.embed_dim, self.key_pos_grid))

    def tokens_for_grid(self, rows: int, cols: int) -> int:
        _check_grid(rows, cols)
        return self.num_queries

    def key_pos(self, rows: int, cols: int) -> torch.Tensor:
        """(rows*cols, embed) key position embedding: the key table bicubically resized to the patch grid."""
        table = self.pos_embed if self.key_pos_embed is None else self.key_pos_embed
        return interpolate_pos_embed(table, self.key_pos_grid, (rows, cols))

    def _queries(self) -> torch.Tensor:
        """(num_queries, embed) attention queries before the input projection."""
        return self.ln_q(self.query) + self.pos_embed.to(self.query.dtype)

    def _packed_kv(self, feats: list[torch.Tensor]) -> torch.Tensor:
        """ln_kv(kv_proj(x)) of every patch of every image, packed: (sum rows*cols, embed)."""
        x = torch.cat([f.reshape(-1, self.vision_dim) for f in feats])
        return self.ln_kv(self.kv_proj(x))

    def _key_pos_packed(self, sizes: list[tuple[int, int]], dtype: torch.dtype) -> torch.Tensor:
        cache: dict[tuple[int, int], torch.Tensor] = {}
        for size in sizes:
            if size not in cache:
                cache[size] = self.key_pos(*size).to(dtype)
        return torch.cat([cache[s] for s in sizes])


class Resampler(_AttentionPool):
    """arXiv-v1 perceiver resampler: `num_queries` (default 64) learned queries, one cross-attention."""

    kind = RESAMPLER

    def __init__(
        self,
        vision_dim: int,
        llm_dim: int,
        num_queries: int = QUERIES[RESAMPLER],
        num_heads: int | None = None,
        key_pos_grid: int | None = None,
    ) -> None:
        grid = math.isqrt(num_queries)
        if grid * grid != num_queries:
            raise ValueError(f"num_queries must be a square (queries sit on a grid), got {num_queries}")
        super().__init__(vision_dim, llm_dim, grid, num_heads, key_pos_grid)

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        feats = self._prepare(features)
        if not feats:
            return []
        sizes = [(f.shape[0], f.shape[1]) for f in feats]
        lengths = [r * c for r, c in sizes]
        x = self._packed_kv(feats)
        keys = x + self._key_pos_packed(sizes, x.dtype)
        values = pad_sequence(list(x.split(lengths)), batch_first=True)  # (N, Lmax, E), zero padded
        keys = pad_sequence(list(keys.split(lengths)), batch_first=True)
        lengths_t = torch.tensor(lengths, device=x.device)
        pad_mask = torch.arange(keys.shape[1], device=x.device)[None, :] >= lengths_t[:, None]  # True = ignore
        queries = self._queries().unsqueeze(0).expand(len(feats), -1, -1)
        out = self.attn(queries, keys, values, key_padding_mask=pad_mask, need_weights=False)[0]
        out = self.ln_post(out) @ self.proj
        return list(out.unbind(0))


@lru_cache(maxsize=1024)
def _spatial_plan(rows: int, cols: int, grid: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """RoIAlign taps of the 12x12 equal boxes of a rows x cols map: index, weight of (grid^2, h*w, taps)."""
    ph, pw = pool_shape((cols * PATCH_SIZE, rows * PATCH_SIZE), PATCH_SIZE)
    # float64 geometry: the taps are exact for any dtype the features come in (the reference cast the boxes to
    # the model dtype, bf16 in training, which moves box edges by up to 1/256 of their coordinate).
    boxes = equal_boxes(rows, cols, grid, dtype=torch.float64)
    index, weight = roi_align_weights(boxes, rows, cols, (ph, pw))  # torchvision defaults, as the reference
    cells = grid * grid
    return index.reshape(cells, ph * pw, -1).to(device), weight.reshape(cells, ph * pw, -1).to(device)


def equal_boxes(rows: int, cols: int, grid: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(grid^2, 4) x1y1x2y2 boxes cutting a rows x cols map into grid x grid equal cells, row-major."""
    xs = [j * cols / grid for j in range(grid + 1)]
    ys = [i * rows / grid for i in range(grid + 1)]
    return torch.tensor([[xs[j], ys[i], xs[j + 1], ys[i + 1]] for i in range(grid) for j in range(grid)], dtype=dtype)


class SpatialResampler(_AttentionPool):
    """ECCV spatially constrained resampler: grid^2 (default 144) queries, each attending to its own cell."""

    kind = SPATIAL_RESAMPLER

    def __init__(
        self,
        vision_dim: int,
        llm_dim: int,
        grid_size: int = SPATIAL_GRID,
        num_heads: int | None = None,
        key_pos_grid: int | None = None,
    ) -> None:
        super().__init__(vision_dim, llm_dim, grid_size, num_heads, key_pos_grid)

    @staticmethod
    def pool_shape(rows: int, cols: int) -> tuple[int, int]:
        """(h, w) RoIAlign output per cell, from the feature map's aspect ratio (`cal_best_pooling_size`)."""
        _check_grid(rows, cols)
        return pool_shape((cols * PATCH_SIZE, rows * PATCH_SIZE), PATCH_SIZE)

    def plan(self, rows: int, cols: int, device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """RoIAlign taps for a rows x cols map: index (cells, h*w, taps) into its row-major patches, weight."""
        _check_grid(rows, cols)
        return _spatial_plan(rows, cols, self.grid_size, torch.device(device or self.query.device))

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        feats = self._prepare(features)
        if not feats:
            return []
        sizes = [(f.shape[0], f.shape[1]) for f in feats]
        n, cells, embed, heads = len(feats), self.num_queries, self.embed_dim, self.num_heads
        head_dim = embed // heads
        x = self._packed_kv(feats)  # (T, E)
        w_q, w_k, w_v = self.attn.in_proj_weight.chunk(3)
        b_q, b_k, b_v = self.attn.in_proj_bias.chunk(3)
        # Keys carry the resized sin-cos table; input projections before pooling, biases after (see module doc).
        table = torch.cat([F.linear(x + self._key_pos_packed(sizes, x.dtype), w_k), F.linear(x, w_v)], dim=1)

        plans = [self.plan(r, c, x.device) for r, c in sizes]
        keys_max = max(p[0].shape[1] for p in plans)
        taps_max = max(p[0].shape[2] for p in plans)
        index = torch.zeros(n, cells, keys_max, taps_max, dtype=torch.long, device=x.device)
        weight_dtype = torch.float64 if table.dtype == torch.float64 else torch.float32
        weight = torch.zeros(n, cells, keys_max, taps_max, dtype=weight_dtype, device=x.device)
        valid = torch.zeros(n, 1, keys_max, dtype=torch.bool, device=x.device)
        offset = 0
        for i, ((rows, cols), (idx, wt)) in enumerate(zip(sizes, plans, strict=True)):
            k, t = idx.shape[1:]
            index[i, :, :k, :t] = idx + offset
            weight[i, :, :k, :t] = wt
            valid[i, :, :k] = True
            offset += rows * cols
        pooled = apply_roi_weights(table, index.view(-1, taps_max), weight.view(-1, taps_max))
        pooled = pooled.view(n, cells, keys_max, 2, heads, head_dim)
        k = pooled[..., 0, :, :] + b_k.view(heads, head_dim)  # (N, cells, keys, heads, d)
        v = pooled[..., 1, :, :] + b_v.view(heads, head_dim)

        q = F.linear(self._queries(), w_q, b_q).view(cells, heads, head_dim) * head_dim**-0.5
        scores = torch.einsum("chd,ncphd->nchp", q, k)
        if scores.dtype in (torch.float16, torch.bfloat16):
            scores = scores.float()  # softmax in float32
        scores = scores.masked_fill(~valid[:, :, None, :], float("-inf"))
        attn = scores.softmax(dim=-1).to(v.dtype)
        out = torch.einsum("nchp,ncphd->nchd", attn, v).reshape(n, cells, embed)
        out = self.ln_post(self.attn.out_proj(out)) @ self.proj
        return list(out.unbind(0))


class MlpCompressor(Compressor, nn.Sequential):
    """LLaVA-1.5 `mlp2x_gelu`: Linear(vision, llm), GELU, Linear(llm, llm) per patch; keys `0.*`, `2.*`."""

    kind = MLP

    def __init__(self, vision_dim: int, llm_dim: int) -> None:
        super().__init__(nn.Linear(vision_dim, llm_dim), nn.GELU(), nn.Linear(llm_dim, llm_dim))
        self.vision_dim = vision_dim
        self.llm_dim = llm_dim

    def tokens_for_grid(self, rows: int, cols: int) -> int:
        _check_grid(rows, cols)
        return rows * cols

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        feats = self._prepare(features)
        if not feats:
            return []
        x = torch.cat([f.reshape(-1, self.vision_dim) for f in feats])
        for layer in self:
            x = layer(x)
        return list(x.split([f.shape[0] * f.shape[1] for f in feats]))


_KINDS: dict[str, type[Compressor]] = {cls.kind: cls for cls in (Resampler, SpatialResampler, MlpCompressor)}


def build_compressor(kind: str, vision_dim: int, llm_dim: int, **kwargs) -> Compressor:
    """resampler (num_queries=64, num_heads=llm_dim//128, key_pos_grid=query grid), spatial_resampler
    (grid_size=12, num_heads, key_pos_grid) or mlp (no options)."""
    return _KINDS[check_compressor(kind)](vision_dim, llm_dim, **kwargs)
