"""One evaluation run over several benchmarks: questions -> resumable answers -> reference scores -> compute report.

``run_suite(model, tokenizer, eval_root, out_dir, plan)`` returns ``{"benchmarks": {name: result}, "skipped":
{name: reason}}`` where each result holds the adapter's scores (``unparseable_share`` among them), the benchmark's
trivial baseline (``{"score", "rule"}``, None when server-scored), the decoding actually used, the compute report
and, for the benchmarks in ``plan.extreme_aspect``, the Table-3 variant (score and drop). A benchmark whose files are
absent is skipped with the reason (never scored as zero). Answers go to ``<out_dir>/answers/<name>[_extreme].jsonl``
(resumable: a rerun skips answered questions), submission files for server-scored benchmarks to
``<out_dir>/submissions/``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, fields, replace
from pathlib import Path

from components.config import EvalConfig
from components.evaluation.benchmarks import ADAPTERS, BenchmarkMissing, benchmark_root, load_benchmark
from components.evaluation.compute import FLOPS_MODEL, compute_report
from components.evaluation.paper_scores import PAPER_ROWS
from components.evaluation.protocols import Decoding, Protocol, get_protocol
from components.evaluation.runner import predictions, run_benchmark
from components.evaluation.variants import image_transform, preprocessing_config, preprocessing_hash


def answer_template(model) -> str:
    """The template the model was instruction-tuned with (LlavaUhdConfig.conversation; LLaVA-1.5's vicuna_v1 for
    models saved before the field existed): questions are asked the way the model learned to answer them."""
    return getattr(model.config, "conversation", "vicuna_v1")


@dataclass(frozen=True)
class EvalPlan(EvalConfig):
    """The params `eval` block itself (fields, defaults and checks are EvalConfig's) resolved through its protocol
    (components/evaluation/protocols.py): what each benchmark is decoded and preprocessed with."""

    def __post_init__(self):
        super().__post_init__()
        get_protocol(self.protocol)  # an unknown name fails here, at stage start, with the known ones
        if self.paper_row and self.paper_row not in PAPER_ROWS:
            raise ValueError(f"eval.paper_row {self.paper_row!r} is not a published row: '' or one of "
                             f"{sorted(PAPER_ROWS)} (components/evaluation/paper_scores.py)")

    @classmethod
    def from_params(cls, eval_params: EvalConfig) -> EvalPlan:
        return cls(**{f.name: getattr(eval_params, f.name) for f in fields(EvalConfig)})

    @property
    def rules(self) -> Protocol:
        return get_protocol(self.protocol)

    @property
    def effective_batch_size(self) -> int:
        return self.batch_size or self.rules.batch_size

    def decoding(self, name: str) -> Decoding:
        """The protocol's decoding of benchmark ``name``, with ``eval.num_beams`` overriding its beams."""
        d = self.rules.decoding_for(name)
        return replace(d, num_beams=self.num_beams[name]) if name in self.num_beams else d

    def beams(self, name: str) -> int:
        return self.decoding(name).num_beams

    def pre_resize(self, name: str) -> int:
        return self.rules.pre_resize_for(name)


def _score(name: str, questions, answers_file: Path, out_dir: Path, eval_root) -> dict:
    adapter, root = ADAPTERS[name], benchmark_root(name, eval_root)
    preds = predictions(answers_file)
    if getattr(adapter, "headline_available", True):
        return adapter.score(questions, preds, root)
    return adapter.score(questions, preds, root, out_dir=out_dir / "submissions")


def _baseline(name: str, questions, eval_root) -> dict | None:
    """The benchmark's trivial baseline (``{"score", "rule"}``; the adapter's ``baseline`` says which and why);
    None for server-scored benchmarks, which have no local score to compare."""
    adapter = ADAPTERS[name]
    if not getattr(adapter, "headline_available", True):
        return None
    return adapter.baseline(questions, benchmark_root(name, eval_root))


def _answer(model, tokenizer, name, questions, answers_file: Path, plan: EvalPlan, model_id: str,
            extreme: bool) -> float:
    """Answer every question into answers_file; returns questions per second of this call."""
    start = time.perf_counter()
    run_benchmark(model, tokenizer, questions, answers_file, batch_size=plan.effective_batch_size,
                  max_new_tokens=plan.max_new_tokens or None, template=answer_template(model), model_id=model_id,
                  image_transform=image_transform(plan.pre_resize(name), extreme_aspect=extreme),
                  image_loading=plan.rules.image_loading)
    return len(questions) / max(time.perf_counter() - start, 1e-9)


def _variant(model, tokenizer, name, questions, out_dir, eval_root, plan, model_id, extreme: bool,
             flops_model=FLOPS_MODEL) -> dict:
    suffix = "_extreme" if extreme else ""
    answers_file = out_dir / "answers" / f"{name}{suffix}.jsonl"
    rate = _answer(model, tokenizer, name, questions, answers_file, plan, model_id, extreme)
    scores = _score(name, questions, answers_file, out_dir / f"variant{suffix}" if extreme else out_dir, eval_root)
    prep = preprocessing_config(model.config, plan.pre_resize(name), extreme, plan.rules.image_loading)
    return {"scores": scores, "answers": str(answers_file), "questions": len(questions),
            "questions_per_s": round(rate, 2), "preprocessing": prep, "preprocessing_hash": preprocessing_hash(prep),
            "compute": compute_report(model, questions, plan.pre_resize(name), extreme, flops_model)}


def _decoding(model, questions, plan: EvalPlan, name: str) -> dict:
    d = plan.decoding(name)
    return {"protocol": plan.protocol, "template": answer_template(model), "do_sample": d.sampled,
            "temperature": d.temperature, "num_beams": d.num_beams,
            "max_new_tokens": plan.max_new_tokens or questions[0].max_new_tokens,
            "batch_size": plan.effective_batch_size, "padding_side": "left"}


def _questions(name: str, eval_root, plan: EvalPlan) -> list:
    """The benchmark's questions with the protocol's decoding (BenchmarkMissing when its files are absent)."""
    d = plan.decoding(name)
    questions = load_benchmark(name, eval_root, num_beams=d.num_beams)
    return [replace(q, temperature=d.temperature) for q in questions] if d.sampled else questions


def run_suite(model, tokenizer, eval_root, out_dir, plan: EvalPlan, model_id: str = "llava-uhd",
              log=print, flops_model=FLOPS_MODEL) -> dict:
    """``flops_model``: whose FLOPs the compute report counts (compute.compute_report)."""
    out_dir = Path(out_dir)
    results, skipped = {}, {}
    for name in plan.benchmarks:
        try:
            questions = _questions(name, eval_root, plan)
        except BenchmarkMissing as missing:
            skipped[name] = missing.reason
            log(f"[eval] {name}: skipped ({missing.reason})")
            continue
        if not questions:
            skipped[name] = "the question file is empty"
            continue
        log(f"[eval] {name}: {len(questions)} questions")
        result = _variant(model, tokenizer, name, questions, out_dir, eval_root, plan, model_id, extreme=False,
                          flops_model=flops_model)
        result["decoding"] = _decoding(model, questions, plan, name)
        result["baseline"] = _baseline(name, questions, eval_root)
        if name in plan.extreme_aspect:
            result["extreme_aspect"] = _extreme_summary(
                result, _variant(model, tokenizer, name, questions, out_dir, eval_root, plan, model_id, extreme=True,
                                 flops_model=flops_model))
        results[name] = result
        headline, baseline = result["scores"].get("headline"), result["baseline"]
        log(f"[eval] {name}: headline {headline if headline is None else round(headline, 2)}"
            + ("" if baseline is None else f" (trivial baseline {baseline['score']:.2f}: {baseline['rule']})")
            + f" ({result['questions_per_s']} questions/s)")
    return {"benchmarks": results, "skipped": skipped}


def _extreme_summary(plain: dict, extreme: dict) -> dict:
    """Table 3: the padded variant's score and its drop from the plain one (None for server-scored benchmarks)."""
    base, padded = plain["scores"].get("headline"), extreme["scores"].get("headline")
    drop = None if base is None or padded is None else round(base - padded, 3)
    return {**extreme, "headline": padded, "drop": drop}
