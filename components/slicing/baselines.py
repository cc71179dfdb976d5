"""The ablation baselines of the paper's Table 2, as layouts the same model consumes.

pad336    LLaVA-1.5: pad to a square with the mean colour, resize to 336x336 (576 patches, MLP projector).
fixed2x2  "w/ MLP & fixed 2x2 partition": always a 2x2 grid; the image is resized to 672x672 and cut into
          four 336x336 slices, plus a 336x336 overview (LLaVA-NeXT-style fixed tiles). Five 576-patch images
          are what the paper's 80.10 TFLOPs for this row implies (79.6 by our FLOPs model; adaptive
          aspect-preserving slices would give 76.0, 5% below the printed figure).
"""

from __future__ import annotations

from .layout import Layout
from .presets import VIT_RESOLUTION, get_preset
from .uhd import check_size

# Both baselines share the arXiv setting's ViT geometry (CLIP ViT-L/14-336).
_GEOMETRY = get_preset("uhd-arxiv")


def plan_pad336(width: int, height: int) -> Layout:
    width, height = check_size(width, height)
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
    width, height = check_size(width, height)
    side = (VIT_RESOLUTION, VIT_RESOLUTION)
    return Layout(
        strategy="fixed2x2",
        preset="fixed2x2",
        size=(width, height),
        grid=(2, 2),
        slices=(side,) * 4,
        overview=side,
        patch_size=_GEOMETRY.patch_size,
        queries=None,
    )
