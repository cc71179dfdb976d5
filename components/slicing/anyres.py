"""LLaVA-OneVision AnyRes (anyres_max_9) planning: canvas choice, unpad, bilinear downsample, token counts.

Follows shared/reference/onevision.md §2-§5. Two arithmetic variants exist for the unpad rounding:
"onevision" is the Hugging Face port (`int(round(x, 7))`, what the HF processor and model agree on);
"onevision-repo" is LLaVA-NeXT's plain `int(x)`, the arithmetic the released OV weights were trained
with. They differ on about 3 in 100k sizes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

from components.compression import COMPRESSORS

from .layout import Size


@dataclass(frozen=True)
class AnyresPreset:
    name: str
    base_resolution: int = 384  # SigLIP so400m-patch14-384
    patch_size: int = 14
    max_grid: int = 6  # pinpoints (1x1)..(6x6) x base
    max_num_patches: int = 9  # anyres_max_9
    downsample_threshold: float = 1.1
    round_unpad: bool = True  # HF: int(round(x, 7)); LLaVA-NeXT: int(x)

    @property
    def tokens_per_side(self) -> int:
        return self.base_resolution // self.patch_size

    @property
    def tokens_per_crop(self) -> int:
        return self.tokens_per_side**2

    @property
    def pinpoints(self) -> tuple[Size, ...]:
        b, g = self.base_resolution, self.max_grid
        return tuple((b * i, b * j) for i in range(1, g + 1) for j in range(1, g + 1))


ANYRES_PRESETS = {
    p.name: p for p in (AnyresPreset("onevision"), AnyresPreset("onevision-repo", round_unpad=False))
}

VIDEO_POOL_STRIDE = 2


@dataclass(frozen=True)
class AnyresLayout:
    """One image under AnyRes. Hugging Face conventions for the *_hw fields: (height, width) in tokens."""

    preset: str
    size: Size
    best_resolution: Size
    grid: Size  # (cols, rows) of base-resolution crops
    unpadded_hw: tuple[int, int]
    final_hw: tuple[int, int]
    downsample_ratio: float
    tokens_per_crop: int
    base_resolution: int

    @property
    def num_crops(self) -> int:
        """Base image + grid crops, all base_resolution squares."""
        return 1 + self.grid[0] * self.grid[1]

    @property
    def downsampled(self) -> bool:
        return self.final_hw != self.unpadded_hw

    @property
    def num_tokens(self) -> int:
        """Base crop (no newline) + one learned newline after each row of the final grid."""
        h, w = self.final_hw
        return self.tokens_per_crop + h * (w + 1)

    @property
    def vit_patches(self) -> int:
        return self.num_crops * self.tokens_per_crop

    def to_record(self) -> dict:
        side = self.base_resolution
        return {
            "strategy": "anyres",
            "preset": self.preset,
            "grid_cols": self.grid[0],
            "grid_rows": self.grid[1],
            "n_slices": self.grid[0] * self.grid[1],
            "slice_sizes": [[side, side]] * (self.grid[0] * self.grid[1]),
            "overview_w": side,
            "overview_h": side,
            "pre_resized_w": self.best_resolution[0],
            "pre_resized_h": self.best_resolution[1],
            "vit_images": self.num_crops,
            "vit_patches": self.vit_patches,
            "num_separators": self.final_hw[0],  # the image_newline tokens
            "num_tokens": self.num_tokens,
            **{f"tokens_{c}": self.num_tokens for c in COMPRESSORS},  # AnyRes always projects every patch
            "schema_separators": 0,
        }


def select_best_resolution(width: int, height: int, pinpoints) -> Size:
    """Largest downscaled area (capped at the native pixel count), then least waste; first wins ties."""
    best, best_effective, best_waste = None, 0, math.inf
    for cand_w, cand_h in pinpoints:
        scale = min(cand_w / width, cand_h / height)
        effective = min(int(width * scale) * int(height * scale), width * height)
        waste = cand_w * cand_h - effective
        if effective > best_effective or (effective == best_effective and waste < best_waste):
            best, best_effective, best_waste = (cand_w, cand_h), effective, waste
    return best


def unpad_shape(width: int, height: int, grid_hw: tuple[int, int], round_unpad: bool) -> tuple[int, int]:
    """Token rows/cols left after removing the letterbox of a (rows*t, cols*t) stitched feature map."""
    ch, cw = grid_hw
    trunc = (lambda x: int(round(x, 7))) if round_unpad else int
    if width / height > cw / ch:  # wider than the canvas: padding was top/bottom
        new = trunc(height * (cw / width))
        pad = (ch - new) // 2
        return ch - 2 * pad, cw
    new = trunc(width * (ch / height))
    pad = (cw - new) // 2
    return ch, cw - 2 * pad


def downsample_shape(unpadded_hw: tuple[int, int], preset: AnyresPreset) -> tuple[tuple[int, int], float]:
    """anyres_max_N: bilinear-resize the unpadded grid when it exceeds threshold x N crops of tokens.

    Python float floor division (`//`), not floor(h / ratio): they differ on ~1.3% of sizes.
    """
    h, w = unpadded_hw
    ratio = math.sqrt(h * w / (preset.max_num_patches * preset.tokens_per_crop))
    if ratio > preset.downsample_threshold:
        return (int(h // ratio), int(w // ratio)), ratio
    return (h, w), ratio


@lru_cache(maxsize=65536)
def _plan_anyres_cached(width: int, height: int, preset_name: str) -> AnyresLayout:
    preset = get_anyres_preset(preset_name)
    best = select_best_resolution(width, height, preset.pinpoints)
    cols, rows = best[0] // preset.base_resolution, best[1] // preset.base_resolution
    t = preset.tokens_per_side
    unpadded = unpad_shape(width, height, (rows * t, cols * t), preset.round_unpad)
    final, ratio = downsample_shape(unpadded, preset)
    return AnyresLayout(
        preset=preset.name,
        size=(width, height),
        best_resolution=best,
        grid=(cols, rows),
        unpadded_hw=unpadded,
        final_hw=final,
        downsample_ratio=ratio,
        tokens_per_crop=preset.tokens_per_crop,
        base_resolution=preset.base_resolution,
    )


def plan_anyres(width: int, height: int, preset: str = "onevision") -> AnyresLayout:
    """The OneVision AnyRes layout of a single `width` x `height` image.

    >>> ar = plan_anyres(1920, 1080)
    >>> ar.best_resolution, ar.grid, ar.unpadded_hw, ar.final_hw, ar.num_tokens
    ((1920, 1152), (5, 3), (75, 135), (60, 108), 7269)
    """
    from .uhd import check_size  # one size check for every strategy

    width, height = check_size(width, height)
    return _plan_anyres_cached(width, height, preset)


def get_anyres_preset(name: str) -> AnyresPreset:
    try:
        return ANYRES_PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown AnyRes preset {name!r}; choose one of {sorted(ANYRES_PRESETS)}") from None


def video_tokens_per_frame(preset: str = "onevision") -> int:
    """Frames are squashed to the base resolution, encoded, then bilinear-pooled to ceil(t / 2) per side."""
    side = math.ceil(get_anyres_preset(preset).tokens_per_side / VIDEO_POOL_STRIDE)
    return side * side


def video_num_tokens(num_frames: int, preset: str = "onevision") -> int:
    """All frames' pooled tokens and one image_newline per video (mm_newline_position "one_token")."""
    if num_frames < 1:
        raise ValueError(f"a video needs at least one frame, got {num_frames}")
    return video_tokens_per_frame(preset) * num_frames + 1


def multi_image_num_tokens(sizes, preset: str = "onevision") -> list[int]:
    """Several images in one sample: no AnyRes, each padded square to one base crop + one newline."""
    sizes = list(sizes)
    if len(sizes) < 2:
        raise ValueError("multi-image accounting is for two or more images; use plan_anyres for one")
    return [get_anyres_preset(preset).tokens_per_crop + 1 for _ in sizes]
