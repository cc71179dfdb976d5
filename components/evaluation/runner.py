"""Batched, resumable generation over benchmark questions, writing LLaVA answers files (eval.md §1).

``run_benchmark(model, tokenizer, questions, out_jsonl, ...)`` answers the questions through the one generation
implementation (components.inference.generate): greedy questions that share an image go together through
``generate_about_one_image`` (the image prefix prefilled once, its KV cache reused: 2.6x faster on POPE's six
questions per image with SmolLM2), the rest in batches through ``generate_batch`` (LEFT padding through
:class:`UhdProcessor`, greedy or beam search). It appends one JSON line per question::

    {"question_id", "prompt", "text", "model_id", "metadata": {"uid", "num_beams", "max_new_tokens"}}

plus the adapter's ``answer_fields`` (MMBench: round_id/options/option_char). Output is
``batch_decode(new tokens, skip_special_tokens=True).strip()``.

Resumable: questions whose uid is already in the file are skipped (a torn last line is dropped), and once every
question is answered the file is rewritten in question-file order, so an interrupted-and-resumed run ends with the
same file as an uninterrupted one. The POPE/MME scorers depend on that order (eval.md §5.3).

LLaVA-1.5 asserts batch size 1 (eval.md §1); batched greedy answers can differ from bs=1 in low-precision
numerics (LLaVA#1928). ``tests/evaluation/test_runner.py`` checks they are equal for the float32 tiny model;
``benchmarks/eval_batching_bf16.py`` counts the differences under bf16 autocast. With ``batch_size=1`` every
question is answered alone, as the references do. Sampled questions (a protocol's temperature > 0) are answered
one by one, each seeded by its id (``protocols.sampling_seed``).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from components.evaluation.benchmarks.common import Question
from components.evaluation.protocols import sampling_seed
from components.inference.generate import generate_about_one_image, generate_batch
from components.model.processor import UhdProcessor


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


def _batches(questions: Sequence[Question], batch_size: int, key: Callable) -> list[list[Question]]:
    """Consecutive runs of at most batch_size questions sharing the decoding settings."""
    out: list[list[Question]] = []
    for q in questions:
        if out and len(out[-1]) < batch_size and key(out[-1][0]) == key(q):
            out[-1].append(q)
        else:
            out.append([q])
    return out


def image_key(image: Any) -> Any:
    """What identifies an image across questions: its path, or a PIL image's pixels (MMBench decodes the same
    base64 cell once per circular pass, so equal images are different objects)."""
    if isinstance(image, Image.Image):
        return (image.size, image.mode, hashlib.sha1(image.tobytes()).hexdigest())
    return str(image)


def _work_units(questions: Sequence[Question], batch_size: int, key: Callable) -> list[tuple[str, list[Question]]]:
    """("image", group): greedy questions about one image, answered from one prefilled prefix; ("batch", run):
    the rest (single questions, text-only ones, beam search) in left-padded batches; ("sampled", [q]): a sampled
    question alone, under its own seed. First-appearance order. Batch size 1 is the references' run: every question
    alone, its whole prompt in one forward (no shared prefix either)."""
    groups: dict[Any, list[Question]] = {}
    sampled = []
    for q in questions:
        if q.temperature > 0:
            sampled.append(("sampled", [q]))
            continue
        shared = batch_size > 1 and q.image is not None and key(q)[1] == 1
        groups.setdefault((image_key(q.image), key(q)) if shared else ("single", q.uid), []).append(q)
    units, rest = [], []
    for group in groups.values():
        if len(group) > 1:
            units.append(("image", group))
        else:
            rest += group
    return units + [("batch", run) for run in _batches(rest, batch_size, key)] + sampled


def _sample_one(model, processor, q: Question, tokens: int, beams: int, template: str, image_transform,
                image_loading: str) -> list[str]:
    """One sampled answer, its random draws seeded by the question alone (protocols.sampling_seed) and the global
    generator left as it was: reruns and resumed runs write the same bytes."""
    with torch.random.fork_rng(devices=[model.device] if model.device.type == "cuda" else []):
        torch.manual_seed(sampling_seed(q.uid))
        return generate_batch(model, processor, [q], tokens, beams, template, image_transform, image_loading,
                              temperature=q.temperature)


def run_benchmark(model, tokenizer, questions: Sequence[Question], out_jsonl: str | Path, batch_size: int = 8,
                  max_new_tokens: int | None = None, num_beams: int | None = None, template: str = "vicuna_v1",
                  model_id: str = "llava-uhd", processor: UhdProcessor | None = None,
                  image_transform: Callable[[Image.Image], Image.Image] | None = None,
                  image_loading: str = "project") -> list[dict]:
    """Answer every question not yet in ``out_jsonl``; return all answers lines in question-file order.

    ``max_new_tokens`` / ``num_beams``: None uses each question's own (the adapters' defaults: 128 or 1024 tokens,
    greedy); a value overrides all questions. ``image_loading``: how image files are opened (components.slicing.pixels
    ``load_image``: "project" or the references' "reference"). Raises ValueError on duplicate uids.
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
        for kind, batch in _work_units(todo, batch_size, settings):
            tokens, beams = settings(batch[0])
            if kind == "image":
                texts = generate_about_one_image(model, processor, batch, tokens, template, image_transform,
                                                 image_loading)
            elif kind == "sampled":
                texts = _sample_one(model, processor, batch[0], tokens, beams, template, image_transform,
                                    image_loading)
            else:
                texts = generate_batch(model, processor, batch, tokens, beams, template, image_transform,
                                       image_loading)
            rows = []
            for q, text in zip(batch, texts, strict=True):
                meta = {"uid": q.uid, "num_beams": beams, "max_new_tokens": tokens}
                if q.temperature > 0:  # only sampled answers say so: greedy answers files stay as they were
                    meta.update(temperature=q.temperature, seed=sampling_seed(q.uid))
                row = {"question_id": q.question_id, "prompt": q.prompt_text, "text": text, "model_id": model_id,
                       "metadata": meta}
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
