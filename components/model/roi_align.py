"""RoIAlign in plain torch, with torchvision's semantics (torchvision is not available here).

`roi_align` is a drop-in for `torchvision.ops.roi_align` (forward values and gradients w.r.t. the input;
like torchvision, no gradient flows to the boxes). It is split in two steps that the spatial resampler
also uses directly:

1. `roi_align_weights`: pure geometry. For every output bin it lists the (flat index, weight) pairs of
   all bilinear taps of all its sampling points, already divided by the sample count. Fully vectorised
   over boxes, bins and samples (boxes with fewer adaptive samples than the largest are padded with
   zero-weight taps).
2. `apply_roi_weights`: one `F.embedding_bag(mode="sum")` over a channels-last table of the feature
   map(s): a gather plus weighted sum, memory O(bins * channels), differentiable w.r.t. the table.

Semantics copied from torchvision's CPU kernel (`roi_align_kernel.cpp`):
* box (x1, y1, x2, y2) * spatial_scale, minus 0.5 when aligned; when not aligned the box is at least
  1 x 1; bin = roi_size / pooled_size.
* sampling_ratio > 0: that many samples per bin and axis; else adaptive ceil(roi_size / pooled_size).
* sample y = y1 + ph * bin_h + (iy + .5) * bin_h / grid_h (same for x).
* a sample with y < -1 or y > H (or x likewise) contributes 0; otherwise y is clamped at 0, and
  y_low = int(y); when y_low >= H - 1 both taps are row H - 1.
* output = sum of bilinear samples / max(grid_h * grid_w, 1).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _pair(size: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    h, w = size
    return int(h), int(w)


def _geometry_dtype(dtype: torch.dtype) -> torch.dtype:
    """torchvision computes the geometry in the input's dtype; half types are done in float32 here."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _axis_taps(
    start: torch.Tensor, length: torch.Tensor, pooled: int, grid: torch.Tensor, grid_max: int, size: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Along one axis, for (box, bin, sample): low / high tap index and their weights (0 if invalid)."""
    dtype, device = start.dtype, start.device
    bin_size = (length / pooled)[:, None, None]
    bins = torch.arange(pooled, dtype=dtype, device=device)[None, :, None]
    samples = torch.arange(grid_max, dtype=dtype, device=device)[None, None, :]
    grid_f = grid.clamp(min=1).to(dtype)[:, None, None]
    pos = start[:, None, None] + bins * bin_size + (samples + 0.5) * bin_size / grid_f
    valid = (samples < grid[:, None, None]) & (pos >= -1.0) & (pos <= size)
    pos = pos.clamp(min=0.0)
    low = pos.to(torch.long)  # truncation == floor, pos >= 0
    at_edge = low >= size - 1
    low = low.clamp(max=size - 1)
    high = torch.where(at_edge, low, low + 1)
    frac = torch.where(at_edge, torch.zeros_like(pos), pos - low.to(dtype))
    valid = valid.to(dtype)
    return low, high, (1.0 - frac) * valid, frac * valid


def roi_align_weights(
    boxes: torch.Tensor,
    height: int,
    width: int,
    output_size: int | tuple[int, int],
    spatial_scale: float = 1.0,
    sampling_ratio: int = -1,
    aligned: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Bilinear taps of RoIAlign on one (height, width) map.

    boxes: (K, 4) x1, y1, x2, y2. Returns `index` (K*ph*pw, L) long flat positions y * width + x and
    `weight` (K*ph*pw, L) float32 (float64 for float64 boxes), rows ordered (box, ph, pw), such that
    output[row] = sum_l weight[row, l] * table[index[row, l]] for a row-major channels-last table.
    """
    if height < 1 or width < 1:
        raise ValueError(f"feature map must be at least 1x1, got {height}x{width}")
    if boxes.ndim != 2 or boxes.shape[-1] != 4:
        raise ValueError(f"boxes must be (K, 4) x1y1x2y2, got {tuple(boxes.shape)}")
    pooled_h, pooled_w = _pair(output_size)
    dtype = _geometry_dtype(boxes.dtype)
    b = boxes.to(dtype)
    offset = 0.5 if aligned else 0.0
    x1 = b[:, 0] * spatial_scale - offset
    y1 = b[:, 1] * spatial_scale - offset
    x2 = b[:, 2] * spatial_scale - offset
    y2 = b[:, 3] * spatial_scale - offset
    roi_w, roi_h = x2 - x1, y2 - y1
    if not aligned:
        roi_w, roi_h = roi_w.clamp(min=1.0), roi_h.clamp(min=1.0)
    if sampling_ratio > 0:
        grid_h = torch.full_like(roi_h, sampling_ratio, dtype=torch.long)
        grid_w = torch.full_like(roi_w, sampling_ratio, dtype=torch.long)
    else:
        grid_h = torch.ceil(roi_h / pooled_h).to(torch.long)
        grid_w = torch.ceil(roi_w / pooled_w).to(torch.long)
    k = b.shape[0]
    gh_max = max(int(grid_h.max()), 1) if k else 1  # one host sync for adaptive sampling
    gw_max = max(int(grid_w.max()), 1) if k else 1
    count = (grid_h * grid_w).clamp(min=1).to(dtype)

    y_lo, y_hi, wy_lo, wy_hi = _axis_taps(y1, roi_h, pooled_h, grid_h, gh_max, height)  # (K, ph, gy)
    x_lo, x_hi, wx_lo, wx_hi = _axis_taps(x1, roi_w, pooled_w, grid_w, gw_max, width)  # (K, pw, gx)
    ys = torch.stack([y_lo, y_lo, y_hi, y_hi], dim=-1)  # 4 taps: (lo,lo) (lo,hi) (hi,lo) (hi,hi)
    xs = torch.stack([x_lo, x_hi, x_lo, x_hi], dim=-1)
    wy = torch.stack([wy_lo, wy_lo, wy_hi, wy_hi], dim=-1)
    wx = torch.stack([wx_lo, wx_hi, wx_lo, wx_hi], dim=-1)
    # (K, ph, pw, gy, gx, 4)
    index = ys[:, :, None, :, None, :] * width + xs[:, None, :, None, :, :]
    weight = wy[:, :, None, :, None, :] * wx[:, None, :, None, :, :] / count[:, None, None, None, None, None]
    taps = gh_max * gw_max * 4
    return index.reshape(k * pooled_h * pooled_w, taps), weight.reshape(k * pooled_h * pooled_w, taps)


def apply_roi_weights(table: torch.Tensor, index: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """(M, C) channels-last table, (B, L) taps -> (B, C). Half types are accumulated in float32."""
    if index.shape[0] == 0:
        return table.new_zeros(0, table.shape[-1])
    out_dtype = table.dtype
    if table.dtype in (torch.float16, torch.bfloat16):
        table = table.float()
    out = F.embedding_bag(index, table, per_sample_weights=weight.to(table.dtype), mode="sum")
    return out.to(out_dtype)


def _as_rois(boxes: torch.Tensor | list[torch.Tensor], like: torch.Tensor) -> torch.Tensor:
    """torchvision's `convert_boxes_to_roi_format`: a (K, 5) tensor [batch_index, x1, y1, x2, y2]."""
    if isinstance(boxes, (list, tuple)):
        parts = [torch.cat([torch.full_like(b[:, :1], i), b], dim=1) for i, b in enumerate(boxes)]
        rois = torch.cat(parts, dim=0) if parts else like.new_zeros(0, 5)
    else:
        rois = boxes
    if rois.ndim != 2 or rois.shape[1] != 5:
        raise ValueError(f"boxes must be a (K, 5) tensor or a list of (K_i, 4) tensors, got {tuple(rois.shape)}")
    return rois


def roi_align(
    input: torch.Tensor,
    boxes: torch.Tensor | list[torch.Tensor],
    output_size: int | tuple[int, int],
    spatial_scale: float = 1.0,
    sampling_ratio: int = -1,
    aligned: bool = False,
) -> torch.Tensor:
    """`torchvision.ops.roi_align`: input (N, C, H, W), boxes (K, 5) or [(K_i, 4)] -> (K, C, ph, pw)."""
    if input.ndim != 4:
        raise ValueError(f"input must be (N, C, H, W), got {tuple(input.shape)}")
    n, c, h, w = input.shape
    pooled_h, pooled_w = _pair(output_size)
    rois = _as_rois(boxes, input).to(input.device)
    index, weight = roi_align_weights(rois[:, 1:], h, w, (pooled_h, pooled_w), spatial_scale, sampling_ratio, aligned)
    batch = rois[:, 0].to(torch.long).repeat_interleave(pooled_h * pooled_w)
    index = index + (batch * (h * w))[:, None]
    table = input.permute(0, 2, 3, 1).reshape(n * h * w, c)
    out = apply_roi_weights(table, index, weight)
    return out.reshape(rois.shape[0], pooled_h, pooled_w, c).permute(0, 3, 1, 2).contiguous()
