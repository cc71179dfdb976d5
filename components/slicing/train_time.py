"""Train-time image handling of the ECCV training code (thunlp/LLaVA-UHD branch LLaVA-UHD-v1, llava/train/train.py,
`LazySupervisedDataset.__getitem__`; shared/reference/uhd.md §3.2 "Train data"), before the image is sliced:

  * an image whose path contains "textvqa" has its long side resized to `textvqa_long_side` (up or down, aspect
    kept: the reference's `resize_image_keep_ratio(image, 1024)`, the same arithmetic as the eval pre-resize);
  * any other image, with probability `resize_as_grid_p`, is resized to an area of GRID_SLICES x R^2 in its own
    aspect (`resize_as_grid(image, 6)`) when it would not already give GRID_SLICES slices.

The reference draws `random.random()` unseeded in each DataLoader worker. Here the draw is a hash of (seed, path),
so the layouts stage (which counts the tokens) and the training dataset (which makes the pixels) take the same
decision for every image without talking to each other, on every run and every worker.

The layout itself is still planned by the one slicing engine, on the resized size. Evaluation and inference never
use this module: evaluation pre-resizes through `eval.protocol` (uhd-eccv: 1024, components/evaluation/protocols.py).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from dataclasses import dataclass

from .layout import Layout, Size
from .presets import get_preset
from .strategies import plan_layout
from .uhd import eval_pre_resize, plan_slices

GRID_SLICES = 6  # `resize_as_grid(image, slice_num=6)` in the reference: the 3x2 / 2x3 grid of 672x1008
TEXTVQA_MARKER = "textvqa"  # the reference tests `'textvqa' in image_file`


@dataclass(frozen=True)
class TrainTimeResize:
    """The size an image is resized to before slicing at training time (params `slicing.train_time`)."""

    textvqa_long_side: int = 0  # 0 = off
    resize_as_grid_p: float = 0.0  # 0 = off
    seed: int = 0

    @property
    def active(self) -> bool:
        return bool(self.textvqa_long_side or self.resize_as_grid_p)

    def size(self, path: str, width: int, height: int, preset: str) -> Size | None:
        """The train-time size of the (width, height) image at `path` under UHD preset `preset`; None = as it is.

        TextVQA images never take the grid resize (the reference's `if ... else` branches)."""
        if self.textvqa_long_side and TEXTVQA_MARKER in path:
            return eval_pre_resize(width, height, self.textvqa_long_side)
        if self.resize_as_grid_p and draw(self.seed, path) < self.resize_as_grid_p:
            if plan_slices(width, height, preset).n_slices != GRID_SLICES:
                return resize_as_grid(width, height, GRID_SLICES, get_preset(preset).resolution)
        return None


def draw(seed: int, path: str) -> float:
    """A uniform number in [0, 1) fixed by (seed, path): the per-image coin, the same in every process."""
    digest = hashlib.sha256(f"{seed}\0{path}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def resize_as_grid(width: int, height: int, slices: int, resolution: int) -> Size:
    """The reference's `resize_as_grid`: scale (up or down) to an area of slices x resolution^2, aspect kept,
    sides truncated by int(), so the area lands just under the target (N = ceil(area / R^2) is then `slices`)."""
    scale = math.sqrt(slices * resolution * resolution / height / width)
    return max(int(width * scale), 1), max(int(height * scale), 1)


def plan_training_layout(path: str, width: int, height: int, strategy: str, preset: str,
                         resize: TrainTimeResize) -> Layout:
    """The layout training encodes the image at `path` with: planned by `plan_layout` on the train-time size and
    recorded as the original size with that size as `pre_resized` (resize first, then slice, as `encode_uhd` does).
    Without a train-time resize it is exactly `plan_layout(width, height, ...)`."""
    size = resize.size(path, width, height, preset) if resize.active else None
    if size is None:
        return plan_layout(width, height, strategy, preset)
    return dataclasses.replace(plan_layout(*size, strategy, preset), size=(width, height), pre_resized=size)
