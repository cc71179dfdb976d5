"""`UhdModel`: a loaded LLaVA-UHD + tokenizer answering questions about images.

Prompting and generation are the benchmark runner's too (`components.inference.generate.generate_batch`: the
template's generation prompt from `components.data.conversation.encode_prompt`, vicuna_v1 by default, left-padded
batches through `UhdProcessor`, greedy by default), so an answer here is the answer the benchmarks score, and the
MLflow pyfunc (components.inference.pyfunc) answers through this class. The model and its tokenizer come from the
model factory (components.model.build).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from components.model.build import SAVED_TOKENIZER, has_saved_tokenizer, load_saved_model, load_tokenizer_for
from components.model.processor import UhdProcessor
from components.slicing.headers import read_header

from .generate import Prompt, generate_batch

DEFAULT_MAX_NEW_TOKENS = 32


@dataclass(frozen=True)
class LayoutSummary:
    """How an image is cut for the model: grid (cols, rows), slice count and the visual tokens the LLM sees."""

    size: tuple[int, int]
    grid: tuple[int, int]
    slices: int
    num_tokens: int
    layout: Any  # the full Layout / AnyresLayout (components.slicing.overlay.describe prints it)

    def line(self) -> str:
        return (f"{self.size[0]}x{self.size[1]}: grid {self.grid[0]}x{self.grid[1]} (cols x rows), "
                f"{self.slices} slices + overview, {self.num_tokens} visual tokens")


def load_dir(model_dir: str | Path, tokenizer: str | None, tokenizer_dir: str | Path | None,
             device: str | torch.device = "cpu", source: str | None = None) -> UhdModel:
    """A `save_pretrained` directory + the tokenizer asset dir (None: a model that can plan layouts but not answer).
    Without a kind, a tokenizer_dir holding a saved tokenizer (tokenizer_config.json, as `uhd convert` writes) is
    loaded as one (`saved`), any other as the llama assets."""
    model = load_saved_model(model_dir, device)
    if tokenizer is None and tokenizer_dir is not None:
        tokenizer = SAVED_TOKENIZER if has_saved_tokenizer(tokenizer_dir) else "llama"
    tok = load_tokenizer_for(model, tokenizer, tokenizer_dir) if tokenizer_dir else None
    return UhdModel(model, tok, source=source or str(model_dir))


def _image(value) -> Any:
    """A path, a PIL image or None (text-only); empty strings and NaN from DataFrames count as None."""
    if isinstance(value, Image.Image | Path):
        return value
    return value if isinstance(value, str) and value else None


def _item(item) -> tuple[Any, str]:
    if isinstance(item, Mapping):
        return _image(item.get("image", item.get("image_path"))), str(item["question"])
    image, question = item
    return _image(image), str(question)


class UhdModel:
    """`answer(image, question)` and `answer_batch([(image, question), ...])` over one model + tokenizer.

    `template` is the conversation template the model was trained with (components.data.conversation.TEMPLATES);
    by default the one its config records (LlavaUhdConfig.conversation).
    """

    def __init__(self, model, tokenizer, source: str = "", template: str | None = None):
        self.template = template or getattr(model.config, "conversation", "vicuna_v1")
        self.model = model
        self.tokenizer = tokenizer
        self.source = source  # where it was loaded from, for messages and answers files

    @property
    def processor(self) -> UhdProcessor:
        if self.tokenizer is None:
            raise RuntimeError(f"model {self.source or ''} has no tokenizer: answering needs one")
        return UhdProcessor(self.tokenizer, self.model)

    def layout(self, image) -> LayoutSummary:
        """The slice plan the model uses for this image (the processor's own, by construction)."""
        if isinstance(image, Image.Image):
            size = image.size
        else:  # the header only: EXIF-oriented size, no pixel decode
            header = read_header(image)
            size = (header.width, header.height)
        lay = self.model.plan(*size)
        slices = getattr(lay, "n_slices", None)
        if slices is None:  # AnyRes: crops of the grid, without the base image
            slices = lay.num_crops - 1
        return LayoutSummary(tuple(size), tuple(lay.grid), int(slices), int(lay.num_tokens), lay)

    def answer(self, image, question: str, max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS, num_beams: int = 1) -> str:
        return self.answer_batch([(image, question)], 1, max_new_tokens, num_beams)[0]

    def answer_batch(self, items: Iterable, batch_size: int = 8, max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
                     num_beams: int = 1) -> list[str]:
        """One answer per item, in order. An item is `(image, question)` or `{"image"|"image_path", "question"}`;
        image is a path, a PIL image or None (text-only)."""
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        prompts = [Prompt(image, text) for image, text in map(_item, items)]
        processor = self.processor
        was_training = self.model.training
        self.model.eval()
        try:
            return [text for start in range(0, len(prompts), batch_size)
                    for text in generate_batch(self.model, processor, prompts[start:start + batch_size],
                                               max_new_tokens, num_beams, self.template)]
        finally:
            self.model.train(was_training)
