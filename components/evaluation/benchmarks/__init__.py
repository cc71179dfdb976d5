"""Benchmark adapters (question files -> Question records, predictions -> reference scores) and submission writers.

``ADAPTERS[name]`` for name in textvqa, pope, gqa, mme, scienceqa, mmbench, mmbench_cn, vqav2 and vizwiz (the last
two write submission files: their scores come from the evaluation server); ``load_benchmark(name,
eval_root)`` reads ``<eval_root>/<folder>`` and raises :class:`BenchmarkMissing` when the files are absent.
Two layouts are read: the project's (what the embedded dataset writes: ``mme/``, ``gqa/images``) and LLaVA's
``playground/data/eval`` one, i.e. eval.zip plus the files docs/Evaluation.md has users add (``MME/``,
``gqa/data/images`` and ``gqa/data/testdev_balanced_questions.json``, the MMBench-CN TSV under ``mmbench/`` as the
docs say or ``mmbench_cn/`` as scripts/v1_5/eval/mmbench_cn.sh reads it).
Every locally scored adapter also reports ``unparseable_share`` in its scores and has ``baseline(questions, root)``,
its trivial baseline computed from the benchmark's own files (its docstring says which one and why).
"""

from __future__ import annotations

from pathlib import Path

from components.data.eval_layout import missing_hints

from .choice import MMBench, ScienceQA, mmbench_prompt, mmbench_submission, read_mmbench_tsv, write_mmbench_submission
from .common import BenchmarkMissing, IncompletePredictions, Question
from .server import VizWiz, VQAv2
from .vqa import (
    GQA,
    TextVQA,
    read_answers_lines,
    vizwiz_submission,
    vqav2_submission,
    write_vizwiz_submission,
    write_vqav2_submission,
)
from .yesno import MME, POPE

ADAPTERS = {a.name: a for a in (TextVQA(), POPE(), GQA(), MME(), ScienceQA(), MMBench("en"), MMBench("cn"), VQAv2(),
                                VizWiz())}


def benchmark_root(name: str, eval_root: str | Path) -> Path:
    """The folder an adapter reads, ``<eval_root>/<folder>`` (e.g. data/raw/synthetic/eval/pope): the first of the
    adapter's ``folders`` that holds its question file (the project's names, then LLaVA's eval.zip ones: ``MME``,
    ``mmbench_cn``), else the first that exists, else the project's (named in the skip reason)."""
    if name not in ADAPTERS:
        raise KeyError(f"unknown benchmark {name!r}; known: {sorted(ADAPTERS)}")
    adapter = ADAPTERS[name]
    candidates = [Path(eval_root) / folder for folder in getattr(adapter, "folders", (adapter.folder,))]
    marker = getattr(adapter, "marker", None)
    for found in ([c for c in candidates if marker and (c / marker).exists()] + [c for c in candidates if c.is_dir()]):
        return found
    return candidates[0]


def load_benchmark(name: str, eval_root: str | Path, num_beams: int | None = None) -> list[Question]:
    """The benchmark's questions; BenchmarkMissing when its files are absent, whose reason, on the hub root, also
    says what to place where (components/data/eval_layout.py records what its build could not link)."""
    try:
        return ADAPTERS[name].questions(benchmark_root(name, eval_root), num_beams=num_beams)
    except BenchmarkMissing as missing:
        hints = missing_hints(eval_root, name)
        if not hints:
            raise
        raise BenchmarkMissing(name, f"{missing.reason}; not linked: " + "; ".join(hints)) from None


__all__ = [
    "ADAPTERS", "GQA", "MME", "VQAv2", "VizWiz", "POPE", "BenchmarkMissing", "IncompletePredictions", "MMBench",
    "Question", "ScienceQA",
    "TextVQA", "benchmark_root", "load_benchmark", "mmbench_prompt", "mmbench_submission", "read_answers_lines",
    "read_mmbench_tsv", "vizwiz_submission", "vqav2_submission", "write_mmbench_submission",
    "write_vizwiz_submission", "write_vqav2_submission",
]
