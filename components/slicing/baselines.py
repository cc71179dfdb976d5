"""The ablation baselines of the paper's Table 2, as layouts the same model consumes.

pad336    LLaVA-1.5: pad to a square with the mean colour, resize to 336x336 (576 patches, MLP projector).
fixed2x2  "w/ MLP & fixed 2x2 partition": always a 2x2 grid, each slice and the overview adaptively
          encoded (native aspect, <= 576 patches) as in UHD, so only the partition rule differs.
"""

from __future__ import annotations

from .layout import Layout
from .presets import VIT_RESOLUTION, get_preset
from .uhd import _check_size, adapt_size

# Both baselines share the arXiv setting's ViT geometry (CLIP ViT-L/14-336).
_GEOMETRY = get_preset("uhd-arxiv")


def plan_pad336(width: int, height: int) -> Layout:
    width, height = _check_size(width, height)
    return Layout(
        strategy="pad336",
        preset="pad336",
        size=(width, height),
        grid=(1, 1),
        slices=(),
        overview=(VIT_RESOLUTION, VIT_RESOLUTION),
        patch_size=_GEOMETRY.patch_size,
        queries=None,
    )


def plan_fixed2x2(width: int, height: int) -> Layout:
    width, height = _check_size(width, height)
    slice_size = adapt_size(max(width // 2, 1), max(height // 2, 1), _GEOMETRY)
    return Layout(
        strategy="fixed2x2",
        preset="fixed2x2",
        size=(width, height),
        grid=(2, 2),
        slices=(slice_size,) * 4,
        overview=adapt_size(width, height, _GEOMETRY),
        patch_size=_GEOMETRY.patch_size,
        queries=None,
    )
