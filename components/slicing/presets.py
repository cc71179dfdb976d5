"""Named LLaVA-UHD slicing presets.

Each preset pins one published configuration of the partition (shared/reference/uhd.md §0-§4). The
preset only says *which* arithmetic and constants to use; the arithmetic itself lives once in
`uhd.py`.

rule
  "arxiv"  the March-2024 code (arXiv v1): N capped, candidates {N, N+1} for N <= 2 else {N-1, N, N+1},
           a 1x1 grid only for N == 1; slice/overview sizes by `adapt_size` (fit M=576 patches).
  "eccv"   `slice_image_minicpm` of the ECCV / released-checkpoint code: never sliced for N <= 1,
           candidate counts exclude 1 and anything above the cap; sizes by `find_best_resize`.
  "paper"  Eq. 1-2 as printed: no cap, C_{N-1} u C_N u C_{N+1} (C_0 empty), a 1x1 partition is one
           slice plus the overview; sizes by `adapt_size` as in the arXiv text.
"""

from __future__ import annotations

from dataclasses import dataclass

from components.compression import QUERIES, RESAMPLER, SPATIAL_RESAMPLER

ARXIV_QUERIES = QUERIES[RESAMPLER]  # the arXiv v1 presets were published with the perceiver resampler
ECCV_QUERIES = QUERIES[SPATIAL_RESAMPLER]  # the ECCV / MiniCPM presets with the spatial resampler

PATCH_SIZE = 14
VIT_RESOLUTION = 336  # CLIP ViT-L/14-336: 24 x 24 = 576 patches


@dataclass(frozen=True)
class UhdPreset:
    name: str
    rule: str  # "arxiv" | "eccv" | "paper"
    max_slices: int | None  # None: no cap (the paper's formula)
    resolution: int = VIT_RESOLUTION  # the ViT's native side; slices aim at resolution**2 pixels
    patch_size: int = PATCH_SIZE
    queries: int = ARXIV_QUERIES  # compressed tokens per encoded image (slice or overview)
    separators: bool = False  # ',' after each slice in a row, '\n' after each row
    pre_resize_long_side: int | None = None  # eval-only: long side forced to this first (up or down)

    @property
    def max_patches(self) -> int:
        return (self.resolution // self.patch_size) ** 2


PRESETS: dict[str, UhdPreset] = {
    p.name: p
    for p in (
        UhdPreset("uhd-arxiv", rule="arxiv", max_slices=6, queries=ARXIV_QUERIES, separators=False),
        UhdPreset("uhd-eccv", rule="eccv", max_slices=7, queries=ECCV_QUERIES, separators=True),
        UhdPreset(
            "uhd-eccv-eval",
            rule="eccv",
            max_slices=7,
            queries=ECCV_QUERIES,
            separators=True,
            pre_resize_long_side=1024,
        ),
        UhdPreset("minicpm", rule="eccv", max_slices=9, resolution=448, queries=ECCV_QUERIES, separators=True),
        UhdPreset("uhd-v2", rule="eccv", max_slices=9, queries=ECCV_QUERIES, separators=True),
        UhdPreset("paper", rule="paper", max_slices=None, queries=ARXIV_QUERIES, separators=False),
    )
}


def get_preset(name: str) -> UhdPreset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown UHD preset {name!r}; choose one of {sorted(PRESETS)}") from None
