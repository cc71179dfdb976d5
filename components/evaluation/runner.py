"""Batched, resumable generation over benchmark questions, writing LLaVA answers files (eval.md §1).

``run_benchmark(model, tokenizer, questions, out_jsonl, ...)`` renders each question with the training template's
generation mode (``UhdProcessor.prompt_batch`` -> ``components.data.conversation.encode_prompt``; vicuna_v1 by
default: ``SYSTEM USER: <image>\\n{prompt} ASSISTANT:``, text-only questions have no ``<image>``), generates with
LEFT padding, and appends one JSON line per question::

    {"question_id", "prompt", "text", "model_id", "metadata": {"uid", "num_beams", "max_new_tokens"}}

plus the adapter's ``answer_fields`` (MMBench: round_id/options/option_char). Output is
``batch_decode(new tokens, skip_special_tokens=True).strip()``.

Resumable: questions whose uid is already in the file are skipped (a torn last line is dropped), and once every
question is answered the file is rewritten in question-file order, so an interrupted-and-resumed run ends with the
same file as an uninterrupted one. The POPE/MME scorers depend on that order (eval.md §5.3).

Beam search: ``generate`` expands tensor kwargs per beam but not the ``pixel_values`` LIST, so for
``num_beams > 1`` each sample's encoded images are repeated ``num_beams`` times here before the call (the visual
encoder then runs once per beam on the prefill step). LLaVA-1.5 asserts batch size 1 (eval.md §1); batched greedy
answers can differ from bs=1 in low-precision numerics (LLaVA#1928), which ``tests/evaluation/test_runner.py``
checks for the float32 tiny model.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from components.evaluation.benchmarks.common import Question
from components.model.processor import UhdProcessor
from components.slicing.pixels import load_image


def _open(image) -> Image.Image:
    if isinstance(image, Image.Image):
        return image if image.mode == "RGB" else image.convert("RGB")
    return load_image(image)


def _json_safe(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def read_answers(out_jsonl: str | Path) -> dict[Any, dict]:
    """``{uid: answers line}`` of an answers file; unparsable lines (a torn write) are ignored."""
    path = Path(out_jsonl)
    if not path.exists():
        return {}
    done = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        uid = (row.get("metadata") or {}).get("uid", row.get("question_id"))
        done[uid] = row
    return done


def ordered_answers(out_jsonl: str | Path, questions: Sequence[Question]) -> list[dict]:
    """The answers lines in question-file order (questions without an answer are left out)."""
    done = read_answers(out_jsonl)
    return [done[q.uid] for q in questions if q.uid in done]


def predictions(out_jsonl: str | Path) -> dict[Any, str]:
    """``{uid: text}``, the input of every adapter's ``score``."""
    return {uid: row["text"] for uid, row in read_answers(out_jsonl).items()}


def _write_lines(path: Path, rows: Sequence[dict]) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    os.replace(tmp, path)


def _expand_pixels(pixel_values: list[torch.Tensor], counts: list[int], num_beams: int) -> list[torch.Tensor]:
    """Each visual item's encoded images repeated per beam, matching generate's repeat_interleave of image_sizes."""
    out, start = [], 0
    for n in counts:
        out += pixel_values[start:start + n] * num_beams
        start += n
    return out


def _batches(questions: Sequence[Question], batch_size: int, key: Callable) -> list[list[Question]]:
    """Consecutive runs of at most batch_size questions sharing the decoding settings."""
    out: list[list[Question]] = []
    for q in questions:
        if out and len(out[-1]) < batch_size and key(out[-1][0]) == key(q):
            out[-1].append(q)
        else:
            out.append([q])
    return out


@torch.no_grad()
def generate_batch(model, processor: UhdProcessor, questions: Sequence[Question], max_new_tokens: int,
                   num_beams: int = 1, template: str = "vicuna_v1",
                   image_transform: Callable[[Image.Image], Image.Image] | None = None) -> list[str]:
    """Greedy (or beam) answers of one batch, left padded. ``image_transform`` (e.g. the eval-only pre-resize or
    the extreme-aspect padding of components.evaluation.variants) is applied to each opened RGB image."""
    transform = image_transform or (lambda image: image)
    images = [transform(_open(q.image)) if q.image is not None else None for q in questions]
    batch = processor.prompt_batch([q.prompt_text for q in questions], images, template, padding_side="left")
    if num_beams > 1 and "pixel_values" in batch:
        counts = [len(processor.process_image(im).pixels) for im in images if im is not None]
        batch["pixel_values"] = _expand_pixels(batch["pixel_values"], counts, num_beams)
    device, dtype = model.device, model.dtype
    batch = {k: ([t.to(device, dtype) for t in v] if k == "pixel_values" else v.to(device)) for k, v in batch.items()}
    tok = processor.tokenizer
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False, num_beams=num_beams,
                         pad_token_id=pad, eos_token_id=tok.eos_token_id)
    new = out[:, batch["input_ids"].shape[1]:]
    return [t.strip() for t in tok.batch_decode(new, skip_special_tokens=True)]


def run_benchmark(model, tokenizer, questions: Sequence[Question], out_jsonl: str | Path, batch_size: int = 8,
                  max_new_tokens: int | None = None, num_beams: int | None = None, template: str = "vicuna_v1",
                  model_id: str = "llava-uhd", processor: UhdProcessor | None = None,
                  image_transform: Callable[[Image.Image], Image.Image] | None = None) -> list[dict]:
    """Answer every question not yet in ``out_jsonl``; return all answers lines in question-file order.

    ``max_new_tokens`` / ``num_beams``: None uses each question's own (the adapters' defaults: 128 or 1024 tokens,
    greedy); a value overrides all questions. Raises ValueError on duplicate uids.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    uids = [q.uid for q in questions]
    if len(set(uids)) != len(uids):
        raise ValueError("questions have duplicate uids: give repeated question_ids a Question.key")
    path = Path(out_jsonl)
    path.parent.mkdir(parents=True, exist_ok=True)
    done = read_answers(path)
    if path.exists():  # drop a torn last line so appends stay valid JSONL
        _write_lines(path, list(done.values()))
    processor = processor or UhdProcessor(tokenizer, model)
    todo = [q for q in questions if q.uid not in done]

    def settings(q: Question) -> tuple[int, int]:
        return (max_new_tokens or q.max_new_tokens, num_beams or q.num_beams)

    was_training = model.training
    model.eval()
    try:
        for batch in _batches(todo, batch_size, settings):
            tokens, beams = settings(batch[0])
            texts = generate_batch(model, processor, batch, tokens, beams, template, image_transform)
            rows = []
            for q, text in zip(batch, texts, strict=True):
                row = {"question_id": q.question_id, "prompt": q.prompt_text, "text": text, "model_id": model_id,
                       "metadata": {"uid": q.uid, "num_beams": beams, "max_new_tokens": tokens}}
                row.update(q.metadata.get("answer_fields", {}))
                rows.append(_json_safe(row))
            with open(path, "a", encoding="utf-8") as f:
                f.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
                f.flush()
                os.fsync(f.fileno())
    finally:
        model.train(was_training)
    done = read_answers(path)
    ordered = [done[u] for u in uids if u in done]
    if len(ordered) == len(uids):
        _write_lines(path, ordered)
    return ordered
