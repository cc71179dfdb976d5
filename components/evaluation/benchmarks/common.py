"""Shared pieces of the benchmark adapters: the Question record, the missing-benchmark error, file helpers.

An adapter turns one benchmark's files, in the real LLaVA-1.5 formats (shared/reference/eval.md §2), into
:class:`Question` records for the runner, and scores a ``{question_id: text}`` prediction map with the reference
scorers of :mod:`components.evaluation.scoring`. ``root`` is always the benchmark's own folder, e.g.
``data/raw/synthetic/eval/pope`` (the MMBench EN and CN adapters share ``eval/mmbench``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

VIZWIZ_SUFFIX = "When the provided information is insufficient, respond with 'Unanswerable'."
LETTER_SUFFIX_CN = "请直接回答选项字母。"

# LLaVA-1.5 decodes greedily everywhere (eval.md §1); other protocols' beams come from
# components/evaluation/protocols.py through ``num_beams``.
LLAVA_NUM_BEAMS = 1


@dataclass(frozen=True)
class Question:
    """One generation request. ``image``: a file path, a PIL image (MMBench's base64 cells) or None (text-only
    ScienceQA items). ``prompt_text`` is the question-file text with the benchmark's suffix, without ``<image>``.
    ``metadata`` holds what the scorer or the answers file needs (category, options, the reference decoding)."""

    question_id: Any
    image: Any
    prompt_text: str
    max_new_tokens: int = 128
    num_beams: int = LLAVA_NUM_BEAMS
    metadata: dict = field(default_factory=dict)
    key: Any = None  # unique id when question_id repeats (MME: two questions per image path)
    temperature: float = 0.0  # > 0: sampled (seeded per question by the runner); 0: greedy or beam search

    @property
    def uid(self) -> Any:
        """The key of this question in prediction maps and resumable answers files."""
        return self.question_id if self.key is None else self.key


class BenchmarkMissing(FileNotFoundError):
    """The benchmark's files are not there: the caller reports the benchmark as skipped, never as a zero score."""

    def __init__(self, benchmark: str, reason: str):
        self.benchmark = benchmark
        self.reason = reason
        super().__init__(f"benchmark {benchmark!r} skipped: {reason}")


class IncompletePredictions(ValueError):
    """Predictions are missing for questions an order-dependent or exhaustive scorer needs."""


def require(benchmark: str, root: str | Path, *rels: str) -> Path:
    """``Path(root)``, after checking that every relative path exists under it (else BenchmarkMissing)."""
    root = Path(root)
    if not root.is_dir():
        raise BenchmarkMissing(benchmark, f"folder {root} does not exist (run `dvc repro` or provide the files)")
    missing = [rel for rel in rels if not (root / rel).exists()]
    if missing:
        raise BenchmarkMissing(benchmark, f"missing under {root}: {', '.join(missing)}")
    return root


def locate(root: str | Path, *candidates: str) -> str:
    """The first relative path of ``candidates`` that exists under ``root`` (the project's layout first, then
    LLaVA's eval.zip one), else the first, so a missing file is reported under the project's name."""
    return next((c for c in candidates if (Path(root) / c).exists()), candidates[0])


def read_jsonl(path: str | Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def read_json(path: str | Path) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def decoding(num_beams: int | None, max_new_tokens: int) -> tuple[int, dict]:
    """(num_beams to use, metadata recording it). ``None`` -> LLaVA-1.5 greedy."""
    beams = LLAVA_NUM_BEAMS if num_beams is None else int(num_beams)
    if beams < 1:
        raise ValueError(f"num_beams must be >= 1, got {beams}")
    return beams, {"num_beams": beams, "max_new_tokens": max_new_tokens}


def ordered_predictions(benchmark: str, questions: Sequence[Question], predictions: Mapping[Any, str],
                        allow_missing: bool = False) -> list[str | None]:
    """Predictions (keyed by ``Question.uid``) in question-file order; IncompletePredictions unless all are there."""
    out = [predictions.get(q.uid) for q in questions]
    missing = [q.uid for q, p in zip(questions, out, strict=True) if p is None]
    if missing and not allow_missing:
        raise IncompletePredictions(f"{benchmark}: {len(missing)} of {len(questions)} questions have no prediction "
                                    f"(first: {missing[:3]})")
    return out


# --------------------------------------------------------------------------- trivial baselines, unparseable answers
# A score means something only beside what a model earns without looking: each adapter's ``baseline(questions,
# root)`` returns ``{"score": headline, "rule": what the trivial model answers}`` computed from the benchmark's own
# files, with its ``score`` wherever the trivial model is a fixed answer (so every scorer quirk applies to it too).


def unparseable_share(flags: Iterable[bool]) -> float:
    """The fraction of answers the scorer could not map to an answer (``flags``: one per scored answer)."""
    flags = list(flags)
    return sum(flags) / len(flags) if flags else 0.0


def best_fixed_answer(score: Callable, questions: Sequence[Question], root, answers: Iterable[str],
                      why: str = "") -> dict:
    """The best of ``answers`` given to every question, scored by the adapter's ``score`` (first wins a tie)."""
    best: dict | None = None
    for answer in answers:
        headline = score(questions, {q.uid: answer for q in questions}, root)["headline"]
        if best is None or headline > best["score"]:
            best = {"score": headline, "rule": f"always {answer!r}" + (f" ({why})" if why else "")}
    if best is None:
        raise ValueError("best_fixed_answer: no candidate answer")
    return best


def better_baseline(*baselines: dict) -> dict:
    """The strictest of several trivial baselines: a model has to beat every one of them."""
    return max(baselines, key=lambda b: b["score"])
