"""Evaluating an exported model: the weights and their sha256, the suite run, and the provenance of the scores
(what the evaluate stage reports, byte-identical on a rerun) apart from this run's links (MLflow tags only).

    model, tokenizer, sha = load_evaluated_model(model_dir, params.model)
    suite = run_suite(model, tokenizer, eval_root, out_dir, EvalPlan.from_params(params.eval), ...)
    prov = provenance(sha, model, params.data.source, plan, eval_root)
"""

from __future__ import annotations

from pathlib import Path

from components.compression import effective_compressor, effective_spatial_schema
from components.config import ModelConfig
from components.evaluation.suite import EvalPlan, answer_template
from components.tracking.mlflow_logging import sha256_file
from components.tracking.registry import git_commit

# The benchmark folders of each data.source (embedded: the synthetic set; hub: LLaVA's eval.zip layout).
EVAL_ROOTS = {"synthetic": "data/raw/synthetic/eval", "hub": "data/raw/eval_llava_bundle/eval"}


def load_evaluated_model(model_dir: Path, model_params: ModelConfig):
    """The exported model and the sha256 of its weights (what the scores are recorded against)."""
    from components.inference import load_dir

    sha = sha256_file(model_dir / "model.safetensors")
    uhd = load_dir(model_dir, model_params.tokenizer, model_params.tokenizer_dir)  # checks the <image> id too
    return uhd.model, uhd.tokenizer, sha


def provenance(sha: str, model, data_source: str, plan: EvalPlan, eval_root: str) -> dict:
    """What the scores depend on: the weights, the answering settings and the data (provenance.json, tracked in
    git). Nothing of this machine or run (MLflow ids, the commit): a rerun writes the same bytes (run_links)."""
    cfg = model.config
    return {"model_sha256": sha, "template": answer_template(model), "protocol": plan.protocol,
            "protocol_reproduces": plan.rules.reproduces, "batch_size": plan.effective_batch_size,
            "num_beams_override": plan.num_beams, "max_new_tokens": plan.max_new_tokens,
            "image_loading": plan.rules.image_loading, "slicing": {"strategy": cfg.strategy, "preset": cfg.preset},
            "compressor": effective_compressor(cfg.compressor, cfg.strategy),
            "spatial_schema": effective_spatial_schema(cfg.spatial_schema, cfg.strategy), "eval_root": eval_root,
            "data_source": data_source}


def run_links(pointer: dict, sha: str) -> dict:
    """This run's links for MLflow's tags: the training run and model (when the local run record is the one of these
    weights: after `dvc checkout` it may be another run's) and the commit."""
    same = pointer.get("model_sha256") == sha
    return {"model_run_id": pointer.get("mlflow_run_id") if same else None,
            "model_uri": pointer.get("model_uri") if same else None, "git_commit": git_commit()}


def answers_model_id(sha: str) -> str:
    """The answers files' `model_id`: the weights, not the run (an MLflow id would change data/eval on every rerun)."""
    return f"llava-uhd-{sha[:12]}"
