"""Image variants of an evaluation run, applied after decoding and before the model's own slicing.

- ``pre_resize``: the reference's eval-only ``resize_image_keep_ratio`` (UHD's eval scripts force the long side to
  1024, up or down, before slicing; shared/reference/eval.md §5.6). Set per benchmark by ``eval.protocol``
  (components/evaluation/protocols.py: uhd-eccv only, MMBench excepted); recorded in the provenance.
- ``extreme_aspect``: the paper's Table 3 probe. Each image is padded so that its longer side doubles (the shorter
  side unchanged), which doubles its aspect ratio; the image sits in the centre and the padding is the CLIP mean
  colour, the same fill LLaVA-1.5's ``expand2square`` uses, so the padding carries no signal of its own.

``preprocessing_hash`` fingerprints everything that decides the pixels a model sees, so two scores are comparable
only when their hashes are equal.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable

import torch
from PIL import Image

from components.compression import effective_compressor, effective_spatial_schema
from components.slicing.pixels import CLIP, resize_image
from components.slicing.uhd import eval_pre_resize

PAD_FILL = tuple(int(round(255 * m)) for m in CLIP.mean)  # (122, 116, 104)
RESIZE_KERNEL = "torch-uint8-antialiased-bicubic"  # components.slicing.pixels.resize (PIL's kernel)


def pre_resize(image: Image.Image, long_side: int) -> Image.Image:
    """The long side becomes ``long_side`` (up or down), aspect kept as the reference's int() arithmetic does."""
    return resize_image(image, eval_pre_resize(image.width, image.height, long_side))


def pad_extreme_aspect(image: Image.Image) -> Image.Image:
    """Centre the image on a canvas whose longer side is twice the image's (Table 3)."""
    width, height = image.size
    canvas_size = (2 * width, height) if width >= height else (width, 2 * height)
    canvas = Image.new("RGB", canvas_size, PAD_FILL)
    canvas.paste(image.convert("RGB"), ((canvas_size[0] - width) // 2, (canvas_size[1] - height) // 2))
    return canvas


def image_transform(pre_resize_long_side: int = 0, extreme_aspect: bool = False
                    ) -> Callable[[Image.Image], Image.Image] | None:
    """The transform the runner applies to each opened image (None when the variant is the plain one).
    Order: the reference pre-resize acts on the file as loaded, the Table-3 padding on what the model would see."""
    steps: list[Callable[[Image.Image], Image.Image]] = []
    if pre_resize_long_side:
        steps.append(lambda image: pre_resize(image, pre_resize_long_side))
    if extreme_aspect:
        steps.append(pad_extreme_aspect)
    if not steps:
        return None

    def apply(image: Image.Image) -> Image.Image:
        for step in steps:
            image = step(image)
        return image

    return apply


def preprocessing_config(model_config, pre_resize_long_side: int = 0, extreme_aspect: bool = False,
                         image_loading: str = "project") -> dict:
    """What decides the pixels and visual tokens: how files are opened, the model's slicing and compressor, and
    the eval variant."""
    return {"image_loading": image_loading,
        "strategy": model_config.strategy, "preset": model_config.preset,
        "compressor": effective_compressor(model_config.compressor, model_config.strategy),
        "spatial_schema": effective_spatial_schema(model_config.spatial_schema, model_config.strategy),
        "pre_resize": int(pre_resize_long_side),
        "extreme_aspect": bool(extreme_aspect), "resize_kernel": RESIZE_KERNEL, "torch": torch.__version__,
        "normalization": "siglip" if model_config.strategy == "anyres" else "clip",
    }


def preprocessing_hash(config: dict) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]
