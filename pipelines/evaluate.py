"""DVC stage `evaluate`: the finetuned model on the paper's benchmarks, scored with the LLaVA reference scorers.

models/finetune/ (the weights; models/finetune.json, this machine's record of the training run, only links the
MLflow runs) + the benchmark files (`eval.root` when set; embedded: data/raw/synthetic/eval; hub: the downloads
linked into LLaVA's playground/data/eval layout at data/raw/eval_hub, rebuilt at the stage's start)
-> components.evaluation.suite.run_suite -> reports/eval/{metrics.json, provenance.json, results.md, scores.csv,
benchmarks.png} and data/eval/{answers, submissions}, byte-identical on a rerun of the same weights; speed.json
(this machine's questions/s, gitignored). The scores are also logged to an MLflow run in `<prefix>-evaluate`
tagged with the model's training run. Prints the table beside the paper's. A model this pipeline did not train
(`eval.model`) is scored by pipelines/evaluate_released.py instead.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from components.config import load_params
from components.evaluation.exported_model import score_and_report, stage_eval_root
from components.evaluation.model_source import load_for_evaluation, placement
from components.threads import use_cpu_cores


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--pointer", default="models/finetune.json", help="the training run's record (MLflow links)")
    parser.add_argument("--model-dir", default="models/finetune")
    parser.add_argument("--eval-root", default=None, help="benchmark folders (default: eval.root, else by data.source)")
    parser.add_argument("--out", default="data/eval", help="answers JSONL and submission files")
    parser.add_argument("--reports", default="reports/eval")
    parser.add_argument("--no-mlflow", action="store_true", help="do not log the scores to MLflow")
    args = parser.parse_args(argv)
    params = load_params(args.params)
    if not (Path(args.model_dir) / "model.safetensors").exists():
        print(f"{args.model_dir}/model.safetensors not found: run `dvc repro finetune` first", file=sys.stderr)
        return 2
    try:
        eval_root = args.eval_root or stage_eval_root(params)
    except OSError as err:  # eval.root is not a folder, or a real file sits among data/raw/eval_hub's links
        print(f"evaluate: {err}", file=sys.stderr)
        return 2
    use_cpu_cores()
    found = load_for_evaluation("", args.model_dir, params.model)
    found.model.to(*placement(params.eval.device, params.eval.dtype))
    score_and_report(found, params, eval_root, args.out, args.reports, Path(args.pointer), not args.no_mlflow)
    return 0


if __name__ == "__main__":
    sys.exit(main())
