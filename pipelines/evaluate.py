"""DVC stage `evaluate`: the finetuned model on the paper's benchmarks, scored with the LLaVA reference scorers.

models/finetune/ (the weights; models/finetune.json, this machine's record of the training run, only links the
MLflow runs) + the benchmark files (embedded: data/raw/synthetic/eval; hub: LLaVA's eval.zip layout under
data/raw/eval_llava_bundle/eval)
-> components.evaluation.suite.run_suite -> reports/eval/{metrics.json, provenance.json, results.md, scores.csv,
benchmarks.png} and data/eval/{answers, submissions}, byte-identical on a rerun of the same weights; speed.json
(this machine's questions/s, gitignored). The scores are also logged to an MLflow run in `<prefix>-evaluate`
tagged with the model's training run. Prints the table beside the paper's.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from components.config import load_params
from components.evaluation.exported_model import (
    EVAL_ROOTS,
    answers_model_id,
    load_evaluated_model,
    provenance,
    run_links,
)
from components.evaluation.report import write_reports
from components.evaluation.suite import EvalPlan, run_suite
from components.threads import use_cpu_cores
from components.tracking.stage_records import log_evaluation


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--pointer", default="models/finetune.json", help="the training run's record (MLflow links)")
    parser.add_argument("--model-dir", default="models/finetune")
    parser.add_argument("--eval-root", default=None, help="benchmark folders (default: by data.source)")
    parser.add_argument("--out", default="data/eval", help="answers JSONL and submission files")
    parser.add_argument("--reports", default="reports/eval")
    parser.add_argument("--no-mlflow", action="store_true", help="do not log the scores to MLflow")
    args = parser.parse_args(argv)
    params = load_params(args.params)
    model_dir = Path(args.model_dir)
    if not (model_dir / "model.safetensors").exists():
        print(f"{model_dir}/model.safetensors not found: run `dvc repro finetune` first", file=sys.stderr)
        return 2
    use_cpu_cores()
    model, tokenizer, sha = load_evaluated_model(model_dir, params.model)
    plan = EvalPlan.from_params(params.eval)
    eval_root = args.eval_root or EVAL_ROOTS[params.data.source]
    shutil.rmtree(args.out, ignore_errors=True)  # a DVC run starts fresh; `uhd evaluate --out` elsewhere resumes
    suite = run_suite(model, tokenizer, eval_root, args.out, plan, model_id=answers_model_id(sha))
    prov = provenance(sha, model, params.data.source, plan, eval_root)
    label = f"this run ({params.data.source}, {model.config.strategy})"
    metrics = write_reports(suite, prov, args.reports, label=label)
    if not args.no_mlflow:
        record = Path(args.pointer)
        links = run_links(json.loads(record.read_text()) if record.exists() else {}, sha)
        log_evaluation(params.tracking, metrics, prov, links, Path(args.reports))
    print((Path(args.reports) / "results.md").read_text())
    print(f"reports: {args.reports}/results.md, metrics.json, provenance.json, benchmarks.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
