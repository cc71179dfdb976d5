"""DVC stage `evaluate`: the finetuned model on the paper's benchmarks, scored with the LLaVA reference scorers.

models/finetune.json (pointer) + models/finetune/ (weights, sha256 checked against the pointer) + the benchmark
files (embedded: data/raw/synthetic/eval; hub: LLaVA's eval.zip layout under data/raw/eval_llava_bundle/eval)
-> components.evaluation.suite.run_suite -> reports/eval/{metrics.json, provenance.json, results.md, scores.csv,
benchmarks.png} and data/eval/{answers, submissions}; the scores are also logged to an MLflow run in
`<prefix>-evaluate` tagged with the model's training run. Prints the table beside the paper's.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from components.compression import effective_compressor, effective_spatial_schema
from components.config import load_params
from components.evaluation.report import write_reports
from components.evaluation.suite import TEMPLATE, EvalPlan, run_suite
from components.tracking.mlflow_logging import resolve_tracking_uri, sha256_file
from components.tracking.registry import git_commit

EVAL_ROOTS = {"synthetic": "data/raw/synthetic/eval", "hub": "data/raw/eval_llava_bundle/eval"}


def load_evaluated_model(model_dir: Path, pointer: dict, params):
    """The exported model, after checking that its weights are the ones the pointer names."""
    from components.inference import load_dir

    sha = sha256_file(model_dir / "model.safetensors")
    if pointer.get("model_sha256") and sha != pointer["model_sha256"]:
        raise SystemExit(f"{model_dir}/model.safetensors has sha256 {sha[:12]}…, but the pointer names "
                         f"{pointer['model_sha256'][:12]}…: re-run `dvc repro finetune`")
    uhd = load_dir(model_dir, params.model.tokenizer, params.model.tokenizer_dir)  # checks the <image> id too
    return uhd.model, uhd.tokenizer, sha


def provenance(pointer: dict, sha: str, model, params, plan: EvalPlan, eval_root: str) -> dict:
    cfg = model.config
    return {"model_uri": pointer.get("model_uri"), "model_sha256": sha, "mlflow_run_id": pointer.get("mlflow_run_id"),
            "checkpoint_uri": pointer.get("checkpoint_uri"), "template": TEMPLATE, "batch_size": plan.batch_size,
            "decoding": plan.decoding, "num_beams_override": plan.num_beams, "max_new_tokens": plan.max_new_tokens,
            "pre_resize": plan.pre_resize, "slicing": {"strategy": cfg.strategy, "preset": cfg.preset},
            "compressor": effective_compressor(cfg.compressor, cfg.strategy),
            "spatial_schema": effective_spatial_schema(cfg.spatial_schema, cfg.strategy), "eval_root": eval_root,
            "data_source": params.data.source, "git_commit": git_commit()}


def log_to_mlflow(params, metrics: dict, prov: dict, reports: Path) -> str:
    import mlflow

    mlflow.set_tracking_uri(resolve_tracking_uri(params.tracking.uri))
    mlflow.set_experiment(f"{params.tracking.experiment_prefix}-evaluate")
    with mlflow.start_run(run_name="evaluate") as run:
        mlflow.set_tags({"model_run_id": prov["mlflow_run_id"] or "", "model_sha256": prov["model_sha256"]})
        mlflow.log_params({k: json.dumps(v) if isinstance(v, dict) else v for k, v in prov.items()})
        mlflow.log_metrics({f"{name}_headline": value for name, value in metrics["headline"].items()})
        for name in ("metrics.json", "results.md", "benchmarks.png"):
            if (reports / name).exists():
                mlflow.log_artifact(str(reports / name))
        return run.info.run_id


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--pointer", default="models/finetune.json")
    parser.add_argument("--model-dir", default="models/finetune")
    parser.add_argument("--eval-root", default=None, help="benchmark folders (default: by data.source)")
    parser.add_argument("--out", default="data/eval", help="answers JSONL and submission files")
    parser.add_argument("--reports", default="reports/eval")
    parser.add_argument("--no-mlflow", action="store_true", help="do not log the scores to MLflow")
    args = parser.parse_args(argv)
    params = load_params(args.params)
    pointer_path = Path(args.pointer)
    if not pointer_path.exists():
        print(f"{pointer_path} not found: run `dvc repro finetune` first", file=sys.stderr)
        return 2
    pointer = json.loads(pointer_path.read_text())
    model, tokenizer, sha = load_evaluated_model(Path(args.model_dir), pointer, params)
    plan = EvalPlan.from_params(params.eval)
    eval_root = args.eval_root or EVAL_ROOTS[params.data.source]
    shutil.rmtree(args.out, ignore_errors=True)  # a DVC run starts fresh; `uhd evaluate --out` elsewhere resumes
    suite = run_suite(model, tokenizer, eval_root, args.out, plan, model_id=pointer.get("model_uri") or "llava-uhd")
    prov = provenance(pointer, sha, model, params, plan, eval_root)
    label = f"this run ({params.data.source}, {model.config.strategy})"
    metrics = write_reports(suite, prov, args.reports, label=label)
    if not args.no_mlflow:
        prov["evaluate_run_id"] = log_to_mlflow(params, metrics, prov, Path(args.reports))
    print((Path(args.reports) / "results.md").read_text())
    print(f"reports: {args.reports}/results.md, metrics.json, provenance.json, benchmarks.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
