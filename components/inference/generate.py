"""One generation implementation: prompts in, answers out, for evaluation and inference alike.

``generate_batch(model, processor, requests, max_new_tokens, num_beams, template)`` renders each request with the
training template's generation mode (``UhdProcessor.prompt_batch`` -> ``components.data.conversation.encode_prompt``;
vicuna_v1 by default: ``SYSTEM USER: <image>\\n{prompt} ASSISTANT:``, text-only requests have no ``<image>``),
generates with LEFT padding through :class:`UhdProcessor` and returns the decoded new tokens, stripped. A
request is anything with ``image`` (a path, a PIL image or None) and ``prompt_text``: the benchmark runner
passes its ``Question`` records (components.evaluation.runner), ``UhdModel`` its ``Prompt``s, so an answer from
``UhdModel.answer`` is the answer the benchmarks score.

``generate_about_one_image(model, processor, requests, ...)`` answers several greedy questions about the SAME
image: the prompts share their start (the system turn and the image's visual tokens, which come before the
question in every template), so that prefix is run once and its KV cache reused for each question, cropped back
after each answer. Evaluation asks several questions per image (POPE 3 splits x yes/no, MME pairs, MMBench's
circular passes), where the prefix is ~90% of each prompt; the answers equal ``generate_batch``'s (tested).

Beam search: ``generate`` expands tensor kwargs per beam but not the ``pixel_values`` LIST, so for
``num_beams > 1`` each sample's encoded images are repeated ``num_beams`` times here before the call (the visual
encoder then runs once per beam on the prefill step).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from PIL import Image

from components.model.processor import UhdProcessor
from components.slicing.pixels import load_image


class GenerationRequest(Protocol):
    image: Any
    prompt_text: str


@dataclass(frozen=True)
class Prompt:
    """One question to answer: ``image`` is a path, a PIL image or None (text-only)."""

    image: Any
    prompt_text: str


def open_rgb(image, loading: str = "project") -> Image.Image:
    """A path or PIL image as an RGB PIL image (how every generated-for image is opened; ``loading``: see
    components.slicing.pixels.LOADINGS)."""
    if isinstance(image, Image.Image):
        return image if image.mode == "RGB" else image.convert("RGB")
    return load_image(image, loading=loading)


def _pad_id(tokenizer) -> int:
    """Padding for generate: the tokenizer's pad token, else its end-of-sequence token (Llama has no pad)."""
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def _expand_pixels(pixel_values: list[torch.Tensor], counts: list[int], num_beams: int) -> list[torch.Tensor]:
    """Each visual item's encoded images repeated per beam, matching generate's repeat_interleave of image_sizes."""
    out, start = [], 0
    for n in counts:
        out += pixel_values[start:start + n] * num_beams
        start += n
    return out


@torch.no_grad()
def generate_batch(model, processor: UhdProcessor, questions: Sequence[GenerationRequest], max_new_tokens: int,
                   num_beams: int = 1, template: str = "vicuna_v1",
                   image_transform: Callable[[Image.Image], Image.Image] | None = None,
                   image_loading: str = "project", temperature: float = 0.0) -> list[str]:
    """Greedy (or beam) answers of one batch, left padded; sampled at ``temperature`` when it is > 0 (the caller
    seeds torch's generator). ``image_transform`` (e.g. the eval-only pre-resize or the extreme-aspect padding of
    components.evaluation.variants) is applied to each opened RGB image."""
    transform = image_transform or (lambda image: image)
    images = [transform(open_rgb(q.image, image_loading)) if q.image is not None else None for q in questions]
    batch = processor.prompt_batch([q.prompt_text for q in questions], images, template, padding_side="left")
    if num_beams > 1 and "pixel_values" in batch:
        counts = [len(processor.process_image(im).pixels) for im in images if im is not None]
        batch["pixel_values"] = _expand_pixels(batch["pixel_values"], counts, num_beams)
    device, dtype = model.device, model.dtype
    batch = {k: ([t.to(device, dtype) for t in v] if k == "pixel_values" else v.to(device)) for k, v in batch.items()}
    tok = processor.tokenizer
    pad = _pad_id(tok)
    sampling = {"do_sample": True, "temperature": temperature} if temperature > 0 else {"do_sample": False}
    out = model.generate(**batch, max_new_tokens=max_new_tokens, num_beams=num_beams, pad_token_id=pad,
                         eos_token_id=tok.eos_token_id, **sampling)
    new = out[:, batch["input_ids"].shape[1]:]
    return [t.strip() for t in tok.batch_decode(new, skip_special_tokens=True)]


def _common_prefix_length(rows: list[list[int]]) -> int:
    n = 0
    for column in zip(*rows, strict=False):
        if any(t != column[0] for t in column):
            break
        n += 1
    return n


@torch.no_grad()
def generate_about_one_image(model, processor: UhdProcessor, questions: Sequence[GenerationRequest],
                             max_new_tokens: int, template: str = "vicuna_v1",
                             image_transform: Callable[[Image.Image], Image.Image] | None = None,
                             image_loading: str = "project") -> list[str]:
    """Greedy answers of questions that all ask about one image (``questions[0].image``), the shared prompt
    prefix prefilled once. Falls back to ``generate_batch`` when the prefix does not hold the whole image."""
    transform = image_transform or (lambda image: image)
    processed = processor.process_image(transform(open_rgb(questions[0].image, image_loading)))
    rows = [processor.prompt_ids(q.prompt_text, [processed], template) for q in questions]
    # at least one token of every prompt stays uncached: generate needs an input to start from
    shared = min(_common_prefix_length(rows), min(len(r) for r in rows) - 1)
    image_id = processor.image_token_id
    if len(rows) < 2 or image_id in (t for r in rows for t in r[shared:]):
        return generate_batch(model, processor, questions, max_new_tokens, 1, template, image_transform, image_loading)
    device, dtype = model.device, model.dtype
    prefix = torch.tensor(rows[0][:shared], device=device)[None]
    cache = model(input_ids=prefix, attention_mask=torch.ones_like(prefix),
                  pixel_values=[t.to(device, dtype) for t in processed.pixels],
                  image_sizes=torch.tensor([processed.size], device=device), use_cache=True).past_key_values
    tok = processor.tokenizer
    pad = _pad_id(tok)
    answers = []
    for row in rows:
        ids = torch.tensor(row, device=device)[None]
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), past_key_values=cache,
                             max_new_tokens=max_new_tokens, do_sample=False, num_beams=1, pad_token_id=pad,
                             eos_token_id=tok.eos_token_id)
        answers.append(tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True).strip())
        cache.crop(shared - cache.get_seq_length())  # back to the image prefix (crop takes -tokens to drop)
    return answers
