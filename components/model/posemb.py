"""Fixed 2D sin-cos position embeddings (the MAE recipe) and their bicubic resizing.

Both LLaVA-UHD resamplers (shared/reference/uhd.md §2 and §3.2) use the MAE table for the query grid and
bicubically resize a table (align_corners=False, in float32, like the reference `get_abs_pos`) to each
image's patch grid for the keys.

Layout of a table: (rows * cols, embed_dim), row-major over the grid; the first half of the channels
encodes the column (x) index and the second half the row (y) index. (MAE builds `np.meshgrid(grid_w,
grid_h)` and encodes `grid[0]`, the w coordinate, first, although it calls it `emb_h`.)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

GridSize = int | tuple[int, int]


def _rows_cols(grid_size: GridSize) -> tuple[int, int]:
    if isinstance(grid_size, int):
        return grid_size, grid_size
    rows, cols = grid_size
    return int(rows), int(cols)


def sincos_1d(embed_dim: int, positions: torch.Tensor) -> torch.Tensor:
    """MAE `get_1d_sincos_pos_embed_from_grid`: (M,) positions -> (M, embed_dim) float64, [sin | cos]."""
    if embed_dim % 2:
        raise ValueError(f"embed_dim must be even, got {embed_dim}")
    omega = torch.arange(embed_dim // 2, dtype=torch.float64) / (embed_dim / 2.0)
    omega = 1.0 / 10000**omega
    out = positions.reshape(-1, 1).to(torch.float64) * omega[None, :]
    return torch.cat([out.sin(), out.cos()], dim=1)


def sincos_2d(embed_dim: int, grid_size: GridSize) -> torch.Tensor:
    """MAE `get_2d_sincos_pos_embed` for a (rows, cols) grid (an int means square): (rows*cols, D) float32.

    Computed in float64 and rounded once (MAE computes in float32; the two agree to ~1e-6).
    """
    if embed_dim % 4:
        raise ValueError(f"embed_dim must be a multiple of 4 for 2D sin-cos, got {embed_dim}")
    rows, cols = _rows_cols(grid_size)
    ys, xs = torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij")
    emb_x = sincos_1d(embed_dim // 2, xs.reshape(-1))
    emb_y = sincos_1d(embed_dim // 2, ys.reshape(-1))
    return torch.cat([emb_x, emb_y], dim=1).to(torch.float32)


def interpolate_pos_embed(table: torch.Tensor, source: GridSize, target: GridSize) -> torch.Tensor:
    """Resize a (src_rows*src_cols, D) table to (tgt_rows*tgt_cols, D): bicubic, align_corners=False.

    Interpolates in float32 and returns the table's dtype (reference `get_abs_pos`). Identity when the
    grids are equal. Any target size >= 1 works, including 1 x n strips.
    """
    src_rows, src_cols = _rows_cols(source)
    tgt_rows, tgt_cols = _rows_cols(target)
    dim = table.shape[-1]
    if table.shape[0] != src_rows * src_cols:
        raise ValueError(f"table has {table.shape[0]} rows, source grid {src_rows}x{src_cols}")
    if (src_rows, src_cols) == (tgt_rows, tgt_cols):
        return table
    grid = table.float().reshape(1, src_rows, src_cols, dim).permute(0, 3, 1, 2)
    out = F.interpolate(grid, size=(tgt_rows, tgt_cols), mode="bicubic", align_corners=False)
    return out.permute(0, 2, 3, 1).reshape(tgt_rows * tgt_cols, dim).to(table.dtype)
