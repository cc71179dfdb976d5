"""Compute report of an evaluation: visual tokens and TFLOPs per benchmark (mean and max over its images).

Visual tokens are what the evaluated model feeds its LLM for each image (``model.plan``: the model's own slicing,
compressor and spatial schema). TFLOPs come from the FLOPs module (components.model.flops) for a paper-scale
architecture (default LLaVA-UHD-13B: CLIP ViT-L/14-336 + Vicuna-13B) run with *this* model's slicing strategy,
preset and compressor; the tiny embedded model's own FLOPs would say nothing about the method. A converted
released checkpoint is its own paper-scale architecture: its spec comes from its config (`architectures.spec_of`).
Image sizes are read from file headers (no decode), after the eval variant (pre-resize, extreme-aspect padding) is
applied to them.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

from PIL import Image

from components.evaluation.benchmarks.common import Question
from components.model.architectures import ModelSpec
from components.model.flops import flops_breakdown
from components.slicing.headers import read_header
from components.slicing.uhd import eval_pre_resize

FLOPS_MODEL = "llava-uhd-13b"


def variant_size(size: tuple[int, int], pre_resize_long_side: int = 0, extreme_aspect: bool = False
                 ) -> tuple[int, int]:
    """The (width, height) the model sees for an image of ``size`` (see components.evaluation.variants)."""
    width, height = size
    if pre_resize_long_side:
        width, height = eval_pre_resize(width, height, pre_resize_long_side)
    if extreme_aspect:
        width, height = (2 * width, height) if width >= height else (width, 2 * height)
    return width, height


def image_size(image) -> tuple[int, int]:
    if isinstance(image, Image.Image):
        return image.size
    header = read_header(image)
    return header.width, header.height


def _images(questions: Sequence[Question]) -> list:
    """Each distinct image once (benchmarks ask several questions per image)."""
    seen, out = set(), []
    for q in questions:
        if q.image is None:
            continue
        key = id(q.image) if isinstance(q.image, Image.Image) else str(q.image)
        if key not in seen:
            seen.add(key)
            out.append(q.image)
    return out


def compute_report(model, questions: Sequence[Question], pre_resize_long_side: int = 0, extreme_aspect: bool = False,
                   flops_model: str | ModelSpec = FLOPS_MODEL) -> dict:
    """``{images, visual_tokens: {mean, max}, tflops: {mean, max}, flops_model}`` over the benchmark's images.
    ``flops_model``: a paper architecture's name, or a converted model's own spec (`architectures.spec_of`)."""
    cfg = model.config
    name = flops_model.name if isinstance(flops_model, ModelSpec) else flops_model

    @lru_cache(maxsize=4096)
    def cost(width: int, height: int) -> tuple[int, float]:
        tokens = model.plan(width, height).num_tokens
        tflops = flops_breakdown(flops_model, width, height, compressor=cfg.projector, strategy=cfg.strategy,
                                 preset=cfg.preset, spatial_schema=bool(cfg.spatial_schema)).tflops
        return tokens, tflops

    costs = [cost(*variant_size(image_size(im), pre_resize_long_side, extreme_aspect)) for im in _images(questions)]
    if not costs:
        return {"images": 0, "visual_tokens": None, "tflops": None, "flops_model": name}
    tokens, tflops = zip(*costs, strict=True)
    return {"images": len(costs),
            "visual_tokens": {"mean": round(sum(tokens) / len(tokens), 1), "max": max(tokens)},
            "tflops": {"mean": round(sum(tflops) / len(tflops), 3), "max": round(max(tflops), 3)},
            "flops_model": name}
