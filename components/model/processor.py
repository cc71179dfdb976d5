"""Images + text -> model inputs, with the same slicing code and the same text-to-ids code as every other consumer.

`prompt_batch(questions, images, template)` renders each question with the training template's generation mode
(`components.data.conversation.encode_prompt`); `__call__(texts, images)` takes ready texts with `<image>` /
`<video>` markers (multi-image and video samples). Both tokenize through `conversation.py` (chunks split at the
marker, one placeholder each), and each placeholder becomes `layout.num_tokens` copies of the image token id
(`expand_image_placeholders`: the model fills those slots with visual tokens and checks the count). Pixels
become the flat list of encoded images (slices row-major, then the overview), and `image_sizes` records the
(width, height) each layout was planned for, so the model re-plans exactly the same layout.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from components.data.conversation import (
    IMAGE_TOKEN,
    IMAGE_TOKEN_INDEX,
    encode_prompt,
    expand_image_placeholders,
    special_prefix,
    tokenize_with_image,
)
from components.slicing.anyres import AnyresLayout, get_anyres_preset, video_num_tokens
from components.slicing.pixels import CLIP, SIGLIP, encode_image, load_image, padded_square, squashed

VIDEO_MARKER = "<video>"


@dataclass
class ProcessedImage:
    size: tuple[int, int]  # (width, height) the layout was planned for
    pixels: list[torch.Tensor]  # encoded images, model order
    num_tokens: int
    kind: str = "image"  # image | multi | video:<frames> (see LlavaUhdForConditionalGeneration.visual_tokens)


def _tensor(array) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array))


class UhdProcessor:
    """Pairs a tokenizer with a model's slicing config. `model.plan(w, h)` supplies the layout."""

    def __init__(self, tokenizer, model):
        self.tokenizer = tokenizer
        self.model = model
        self.image_token_id = model.config.image_token_id

    def process_image(self, image) -> ProcessedImage:
        picture = load_image(image) if not isinstance(image, Image.Image) else image
        layout = self.model.plan(*picture.size)
        norm = SIGLIP if isinstance(layout, AnyresLayout) else CLIP
        encoded = encode_image(picture, layout, norm)
        return ProcessedImage(picture.size, [_tensor(a) for a in encoded.images], layout.num_tokens)

    def _base_side(self) -> int:
        if self.model.config.strategy != "anyres":
            raise ValueError("multi-image samples and videos follow OneVision: use slicing strategy anyres")
        return get_anyres_preset(self.model.config.preset).base_resolution

    def process_multi(self, image) -> ProcessedImage:
        """One image of a multi-image sample: padded square at the base resolution (730 tokens)."""
        picture = load_image(image) if not isinstance(image, Image.Image) else image
        side = self._base_side()
        pixels = _tensor(padded_square(np.asarray(picture.convert("RGB")), side, SIGLIP))
        return ProcessedImage(picture.size, [pixels], get_anyres_preset(self.model.config.preset).tokens_per_crop + 1,
                              "multi")

    def process_video(self, frames: list) -> ProcessedImage:
        """Frames squashed to the base resolution; the model pools each to 196 tokens (+1 newline per video)."""
        side = self._base_side()
        pixels = [_tensor(squashed(np.asarray(f.convert("RGB")), side, SIGLIP)) for f in frames]
        return ProcessedImage((side, side), pixels, video_num_tokens(len(frames), self.model.config.preset),
                              f"video:{len(frames)}")

    def expand(self, text: str, images: list[ProcessedImage], add_special_tokens: bool = True) -> list[int]:
        """Token ids of `text` with each `<image>` / `<video>` replaced by its item's placeholder run."""
        marked = text.replace(VIDEO_MARKER, IMAGE_TOKEN)
        if marked.count(IMAGE_TOKEN) != len(images):
            raise ValueError(f"text has {marked.count(IMAGE_TOKEN)} image/video markers for {len(images)} visual items")
        prefix = special_prefix(self.tokenizer) if add_special_tokens else []
        ids = tokenize_with_image(marked, self.tokenizer, IMAGE_TOKEN_INDEX, prefix)
        return expand_image_placeholders(ids, [image.num_tokens for image in images], self.image_token_id)

    def prompt_batch(self, questions: list[str], images: list, template: str = "vicuna_v1",
                     padding_side: str = "left") -> dict:
        """A padded generation batch: questions[i] (bare text) about images[i] (None: text-only), each rendered
        by the training template's generation mode, so the ids are training's up to the first answer token."""
        processed = [[self.process_image(im)] if im is not None else [] for im in images]
        rows = [self.prompt_ids(q, items, template) for q, items in zip(questions, processed, strict=True)]
        return self._collate(rows, processed, padding_side)

    def prompt_ids(self, question: str, items: list[ProcessedImage], template: str = "vicuna_v1") -> list[int]:
        """The generation-mode ids of one question (bare text) about `items` (zero or one processed image)."""
        prompt = encode_prompt(question, self.tokenizer, template, has_image=bool(items))
        return expand_image_placeholders(prompt.input_ids, [p.num_tokens for p in items], self.image_token_id)

    def __call__(self, texts: list[str], images: list[list] | None = None, padding_side: str = "left",
                 videos: list[list] | None = None) -> dict:
        """A padded batch. images[i] lists the images of texts[i] in marker order; videos[i] its videos (each a
        list of frames), whose `<video>` markers come after the images. Several images in one sample are
        encoded as OneVision does (one padded base crop each) under strategy anyres."""
        images = images or [[] for _ in texts]
        videos = videos or [[] for _ in texts]
        processed = []
        for sample_images, sample_videos in zip(images, videos, strict=True):
            many = len(sample_images) > 1 and self.model.config.strategy == "anyres"
            items = [self.process_multi(im) if many else self.process_image(im) for im in sample_images]
            processed.append(items + [self.process_video(frames) for frames in sample_videos])
        rows = [self.expand(t, p) for t, p in zip(texts, processed, strict=True)]
        return self._collate(rows, processed, padding_side)

    def _collate(self, rows: list[list[int]], processed: list[list[ProcessedImage]], padding_side: str) -> dict:
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        width = max(len(r) for r in rows)
        input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            span = slice(width - len(row), width) if padding_side == "left" else slice(0, len(row))
            input_ids[i, span] = torch.tensor(row)
            attention_mask[i, span] = 1
        batch = {"input_ids": input_ids, "attention_mask": attention_mask}
        flat = [p for sample in processed for p in sample]
        if flat:
            batch["pixel_values"] = [t for p in flat for t in p.pixels]
            batch["image_sizes"] = torch.tensor([p.size for p in flat], dtype=torch.long)
            if any(p.kind != "image" for p in flat):
                batch["visual_kinds"] = [p.kind for p in flat]
        return batch
