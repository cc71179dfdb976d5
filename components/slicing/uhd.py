"""LLaVA-UHD image partition (arXiv 2403.11703 Sec. 3.1, Eq. 1-2) and slice sizing, for every preset.

The float arithmetic deliberately follows the reference code (same expressions, same iteration order,
strict comparisons), because exact ties are decided by the last bit: a square image picks 3x2 over 2x3
since |log(2/3)| exceeds log(3/2) by one ulp (shared/reference/uhd.md §4).
"""

from __future__ import annotations

import math
from functools import lru_cache

from .layout import Layout, Size, spatial_schema_separators
from .presets import UhdPreset, get_preset

# ---------------------------------------------------------------------------------------------------
# Grid choice


def _factor_grids(k: int) -> list[Size]:
    """All (cols, rows) with cols * rows == k, cols ascending."""
    return [(m, k // m) for m in range(1, k + 1) if k % m == 0]


def _ideal_slice_count(width: int, height: int, resolution: int) -> int:
    """N = ceil(W*H / R^2) (Eq. 1)."""
    return math.ceil(width * height / (resolution * resolution))


def _grid_arxiv(width: int, height: int, preset: UhdPreset) -> Size:
    """March-2024 `cal_num_of_slices`: N capped; {N, N+1} for N <= 2 (so 1x1 only when N == 1)."""
    n = min(_ideal_slice_count(width, height, preset.resolution), preset.max_slices)
    counts = (n, n + 1) if n <= 2 else (n - 1, n, n + 1)
    log_image_ratio = math.log(width / height)
    best, best_error = (0, 0), 1000.0
    for k in counts:
        for m in range(1, k + 1):
            if k % m:
                continue
            error = abs(math.log(m / (k / m)) - log_image_ratio)
            if best_error > error:
                best, best_error = (m, k // m), error
    return best


def _grid_eccv(width: int, height: int, preset: UhdPreset) -> Size | None:
    """`slice_image_minicpm`: None (do not slice) when N <= 1; counts 1 and > cap are never candidates."""
    n = min(_ideal_slice_count(width, height, preset.resolution), preset.max_slices)
    if n <= 1:
        return None
    log_ratio = math.log(width / height)
    best, min_error = (1, 1), float("inf")
    for k in (n - 1, n, n + 1):
        if k == 1 or k > preset.max_slices:
            continue
        for m, rows in _factor_grids(k):
            error = abs(log_ratio - math.log(m / rows))
            if error < min_error:
                best, min_error = (m, rows), error
    return best


# Scores closer than this are an exact tie in real arithmetic (the paper gives no tie rule; the first
# candidate in the order N-1, N, N+1 and columns ascending wins, and the ties are recorded).
_PAPER_TIE_TOLERANCE = 1e-12


def _grid_paper(width: int, height: int, preset: UhdPreset) -> tuple[Size, list[Size]]:
    """Eq. 2 as printed: argmax of S = -|log(W*n / (H*m))| over C_{N-1} u C_N u C_{N+1}, no cap."""
    n = _ideal_slice_count(width, height, preset.resolution)
    best: Size | None = None
    best_error = math.inf
    ties: list[Size] = []
    for k in (n - 1, n, n + 1):
        if k < 1:  # C_0 is empty
            continue
        for m, rows in _factor_grids(k):
            error = abs(math.log(width * rows / (height * m)))
            if error < best_error - _PAPER_TIE_TOLERANCE:
                best, best_error, ties = (m, rows), error, [(m, rows)]
            elif abs(error - best_error) <= _PAPER_TIE_TOLERANCE:
                ties.append((m, rows))
    assert best is not None
    return best, (ties if len(ties) > 1 else [])


# ---------------------------------------------------------------------------------------------------
# Sizes


def adapt_size(width: float, height: float, preset: UhdPreset) -> Size:
    """arXiv-code `adapt_size`: scale (up or down) so the patch count best fills M, keeping the aspect."""
    p, max_patches = preset.patch_size, preset.max_patches
    scale = math.sqrt(max_patches * (p / height) * (p / width))
    rows = max(min(math.floor(scale * height / p), max_patches), 1)
    cols = max(min(math.floor(scale * width / p), max_patches), 1)
    return cols * p, rows * p


def _ensure_divide(length: float, unit: int) -> int:
    return max(math.floor(length / unit) * unit, unit)


def find_best_resize(width: float, height: float, preset: UhdPreset, allow_upscale: bool) -> Size:
    """ECCV-code `find_best_resize`: area ~R^2 in the same aspect (down only unless allowed), sides % 14."""
    r = preset.resolution
    if width * height > r * r or allow_upscale:
        ratio = width / height
        height = int(r / math.sqrt(ratio))
        width = int(height * ratio)
    return _ensure_divide(width, preset.patch_size), _ensure_divide(height, preset.patch_size)


def eval_pre_resize(width: int, height: int, long_side: int) -> Size:
    """ECCV eval `resize_image_keep_ratio`: the long side becomes `long_side`, up or down.

    The reference computes the short side with int() and crashes when it reaches 0 (e.g. 1x2000); we
    keep at least one pixel.
    """
    if width > height:
        return long_side, max(int((long_side / width) * height), 1)
    return max(int((long_side / height) * width), 1), long_side


def pool_shape(size: Size, patch_size: int) -> tuple[int, int]:
    """Spatial resampler RoIAlign output (h, w) chosen from the feature map's aspect (`cal_best_pooling_size`)."""
    feature_ratio = (size[0] // patch_size) / (size[1] // patch_size)
    log_ratio = math.log(feature_ratio)
    best, min_error = (3, 3), float("inf")
    for w, h in ((4, 2), (3, 2), (4, 3), (3, 3), (2, 4), (2, 3), (3, 4)):
        error = abs(log_ratio - math.log(w / h))
        if error < min_error:
            best, min_error = (h, w), error
    return best


# ---------------------------------------------------------------------------------------------------
# Layouts per rule


def _layout(preset: UhdPreset, size: Size, grid: Size, slices, overview, pre_resized=None, **extras) -> Layout:
    separators = spatial_schema_separators(grid) if (preset.separators and slices) else ()
    return Layout(
        strategy="uhd",
        preset=preset.name,
        size=size,
        grid=grid,
        slices=tuple(slices),
        overview=overview,
        patch_size=preset.patch_size,
        queries=preset.queries,
        separators=separators,
        pre_resized=pre_resized,
        extras=extras,
    )


def _plan_arxiv(width: int, height: int, preset: UhdPreset) -> Layout:
    cols, rows = _grid_arxiv(width, height, preset)
    overview = adapt_size(width, height, preset)
    if cols * rows == 1:
        return _layout(preset, (width, height), (1, 1), [], overview)
    # The March code stretched every slice to the overview's shape (uhd.md §2, issue #21). Each slice is
    # instead sized by adapt_size of its own native crop, which is what its position embeddings assumed.
    slice_size = adapt_size(max(width // cols, 1), max(height // rows, 1), preset)
    return _layout(preset, (width, height), (cols, rows), [slice_size] * (cols * rows), overview)


def _plan_paper(width: int, height: int, preset: UhdPreset) -> Layout:
    (cols, rows), ties = _grid_paper(width, height, preset)
    overview = adapt_size(width, height, preset)
    slice_size = adapt_size(max(width // cols, 1), max(height // rows, 1), preset)
    return _layout(
        preset,
        (width, height),
        (cols, rows),
        [slice_size] * (cols * rows),
        overview,
        N=_ideal_slice_count(width, height, preset.resolution),
        ties=ties,
    )


def _plan_eccv(width: int, height: int, preset: UhdPreset) -> Layout:
    original = (width, height)
    pre_resized = None
    if preset.pre_resize_long_side is not None:
        pre_resized = eval_pre_resize(width, height, preset.pre_resize_long_side)
        width, height = pre_resized
    grid = _grid_eccv(width, height, preset)
    if grid is None:
        overview = find_best_resize(width, height, preset, allow_upscale=True)
        return _layout(
            preset, original, (1, 1), [], overview, pre_resized, pool_hw=_pools(preset, overview, None)
        )
    cols, rows = grid
    overview = find_best_resize(width, height, preset, allow_upscale=False)
    cell_w = _ensure_divide(width, cols) / cols
    cell_h = _ensure_divide(height, rows) / rows
    slice_size = find_best_resize(cell_w, cell_h, preset, allow_upscale=True)
    return _layout(
        preset,
        original,
        grid,
        [slice_size] * (cols * rows),
        overview,
        pre_resized,
        pool_hw=_pools(preset, overview, slice_size),
    )


def _pools(preset: UhdPreset, overview: Size, slice_size: Size | None) -> dict:
    return {
        "overview": pool_shape(overview, preset.patch_size),
        "slice": pool_shape(slice_size, preset.patch_size) if slice_size else None,
    }


_RULES = {"arxiv": _plan_arxiv, "eccv": _plan_eccv, "paper": _plan_paper}


@lru_cache(maxsize=65536)
def _plan_cached(width: int, height: int, preset_name: str) -> Layout:
    preset = get_preset(preset_name)
    return _RULES[preset.rule](width, height, preset)


def plan_slices(width: int, height: int, preset: str = "uhd-eccv") -> Layout:
    """The LLaVA-UHD layout of a `width` x `height` image under a named preset.

    >>> lay = plan_slices(1008, 672, preset="uhd-eccv")
    >>> lay.grid, lay.slices[0], lay.overview, lay.num_tokens
    ((3, 2), (336, 336), (406, 266), 1014)
    """
    width, height = check_size(width, height)
    return _plan_cached(width, height, preset)


def check_size(width, height) -> Size:
    if isinstance(width, bool) or isinstance(height, bool):
        raise TypeError("width and height must be integers")
    w, h = int(width), int(height)
    if w != width or h != height or w < 1 or h < 1:
        raise ValueError(f"image size must be positive integers (width, height), got ({width!r}, {height!r})")
    return w, h
