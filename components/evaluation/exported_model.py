"""Evaluating an exported model: the weights and their sha256, the suite run, and the provenance of the scores
(what the evaluate stage reports, byte-identical on a rerun) apart from this run's links (MLflow tags only).

    found = load_for_evaluation(params.eval.model, "models/finetune", params.model)   # model_source.py
    suite = run_suite(found.model, found.tokenizer, eval_root, out_dir, EvalPlan.from_params(params.eval), ...)
    prov = provenance(found.sha256, found.model, params.data.source, plan, eval_root, found.source)
"""

from __future__ import annotations

from components.compression import effective_compressor, effective_spatial_schema
from components.evaluation.suite import EvalPlan, answer_template
from components.tracking.registry import git_commit

# The benchmark folders of each data.source (embedded: the synthetic set; hub: LLaVA's eval.zip layout).
EVAL_ROOTS = {"synthetic": "data/raw/synthetic/eval", "hub": "data/raw/eval_llava_bundle/eval"}


def provenance(sha: str, model, data_source: str, plan: EvalPlan, eval_root: str, model_source: dict | None = None
               ) -> dict:
    """What the scores depend on: the weights, the answering settings and the data (provenance.json, tracked in
    git). Nothing of this machine or run (MLflow ids, the commit): a rerun writes the same bytes (run_links)."""
    cfg = model.config
    return {"model_sha256": sha, "template": answer_template(model), "batch_size": plan.batch_size,
            "decoding": plan.decoding, "num_beams_override": plan.num_beams, "max_new_tokens": plan.max_new_tokens,
            "pre_resize": plan.pre_resize, "slicing": {"strategy": cfg.strategy, "preset": cfg.preset},
            "compressor": effective_compressor(cfg.compressor, cfg.strategy),
            "spatial_schema": effective_spatial_schema(cfg.spatial_schema, cfg.strategy), "eval_root": eval_root,
            "data_source": data_source, "model_source": model_source or {"kind": "pipeline", "spec": ""},
            "dtype": str(model.dtype).removeprefix("torch.")}


def run_links(pointer: dict, sha: str) -> dict:
    """This run's links for MLflow's tags: the training run and model (when the local run record is the one of these
    weights: after `dvc checkout` it may be another run's) and the commit."""
    same = pointer.get("model_sha256") == sha
    return {"model_run_id": pointer.get("mlflow_run_id") if same else None,
            "model_uri": pointer.get("model_uri") if same else None, "git_commit": git_commit()}


def answers_model_id(sha: str) -> str:
    """The answers files' `model_id`: the weights, not the run (an MLflow id would change data/eval on every rerun)."""
    return f"llava-uhd-{sha[:12]}"
