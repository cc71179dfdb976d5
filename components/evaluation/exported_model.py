"""Evaluating an exported model: its weights checked against the training pointer, the suite run, and the
provenance of the scores (what the evaluate stage reports).

    model, tokenizer, sha = load_evaluated_model(model_dir, pointer, params.model)
    suite = run_suite(model, tokenizer, eval_root, out_dir, EvalPlan.from_params(params.eval), ...)
    prov = provenance(pointer, sha, model, params.data.source, plan, eval_root)
"""

from __future__ import annotations

from pathlib import Path

from components.compression import effective_compressor, effective_spatial_schema
from components.evaluation.suite import EvalPlan, answer_template
from components.tracking.mlflow_logging import sha256_file
from components.tracking.registry import git_commit

# The benchmark folders of each data.source (embedded: the synthetic set; hub: LLaVA's eval.zip layout).
EVAL_ROOTS = {"synthetic": "data/raw/synthetic/eval", "hub": "data/raw/eval_llava_bundle/eval"}


class WeightsMismatch(RuntimeError):
    """The weights on disk are not the ones the pointer (the training stage's record) names."""


def load_evaluated_model(model_dir: Path, pointer: dict, model_params):
    """The exported model, after checking that its weights are the ones the pointer names."""
    from components.inference import load_dir

    sha = sha256_file(model_dir / "model.safetensors")
    if pointer.get("model_sha256") and sha != pointer["model_sha256"]:
        raise WeightsMismatch(f"{model_dir}/model.safetensors has sha256 {sha[:12]}…, but the pointer names "
                              f"{pointer['model_sha256'][:12]}…: re-run `dvc repro finetune`")
    uhd = load_dir(model_dir, model_params.tokenizer, model_params.tokenizer_dir)  # checks the <image> id too
    return uhd.model, uhd.tokenizer, sha


def provenance(pointer: dict, sha: str, model, data_source: str, plan: EvalPlan, eval_root: str) -> dict:
    cfg = model.config
    return {"model_uri": pointer.get("model_uri"), "model_sha256": sha, "mlflow_run_id": pointer.get("mlflow_run_id"),
            "checkpoint_uri": pointer.get("checkpoint_uri"), "template": answer_template(model),
            "batch_size": plan.batch_size,
            "decoding": plan.decoding, "num_beams_override": plan.num_beams, "max_new_tokens": plan.max_new_tokens,
            "pre_resize": plan.pre_resize, "slicing": {"strategy": cfg.strategy, "preset": cfg.preset},
            "compressor": effective_compressor(cfg.compressor, cfg.strategy),
            "spatial_schema": effective_spatial_schema(cfg.spatial_schema, cfg.strategy), "eval_root": eval_root,
            "data_source": data_source, "git_commit": git_commit()}
