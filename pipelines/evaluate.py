"""DVC stage `evaluate`: the finetuned model on the paper's benchmarks, scored with the LLaVA reference scorers.
With --released (released/dvc.yaml): `eval.model` instead, a model this pipeline did not train (a released
checkpoint converted on the fly, a `uhd convert` directory or a registered model; model_source.py), on benchmark
files fetched alone, into reports/released/ and data/released/.

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
from components.data.raw_data import acquire_benchmarks
from components.evaluation.exported_model import EVAL_ROOTS, answers_model_id, provenance, run_links
from components.evaluation.model_source import load_for_evaluation, placement
from components.evaluation.report import write_reports
from components.evaluation.suite import EvalPlan, run_suite
from components.threads import use_cpu_cores
from components.tracking.stage_records import log_evaluation


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--pointer", default="models/finetune.json", help="the training run's record (MLflow links)")
    parser.add_argument("--model-dir", default="models/finetune")
    parser.add_argument("--released", action="store_true",
                        help="score eval.model (a model this pipeline did not train) on benchmark files acquired "
                             "here, into --out data/released and --reports reports/released (released/dvc.yaml)")
    parser.add_argument("--eval-root", default=None, help="benchmark folders (default: by data.source)")
    parser.add_argument("--out", default=None, help="answers JSONL and submission files (default data/eval)")
    parser.add_argument("--reports", default=None, help="default reports/eval")
    parser.add_argument("--no-mlflow", action="store_true", help="do not log the scores to MLflow")
    args = parser.parse_args(argv)
    params = load_params(args.params)
    args.out = args.out or ("data/released" if args.released else "data/eval")
    args.reports = args.reports or ("reports/released" if args.released else "reports/eval")
    if args.released and not params.eval.model:
        return _nothing_released(Path(args.reports))
    if not args.released and not (Path(args.model_dir) / "model.safetensors").exists():
        print(f"{args.model_dir}/model.safetensors not found: run `dvc repro finetune` first", file=sys.stderr)
        return 2
    use_cpu_cores()
    spec = params.eval.model if args.released else ""
    try:
        found = load_for_evaluation(spec, args.model_dir, params.model, params.eval.vision_tower,
                                    params.tracking.uri or None)
        device, dtype = placement(params.eval.device, params.eval.dtype)
    except (ValueError, OSError, LookupError) as err:  # a bad path, format or URI: one line that says which
        print(f"evaluate: eval.model={spec!r}: {err}", file=sys.stderr)
        return 2
    found.model.to(device=device, dtype=dtype)
    eval_root = args.eval_root or _eval_root(params, args.released)
    return _evaluate(found, params, eval_root, args)


def _eval_root(params, released: bool) -> str:
    """The pipeline's download stage fetched the benchmarks already; a released model's run fetches them alone."""
    if not released:
        return EVAL_ROOTS[params.data.source]
    return str(acquire_benchmarks("data/raw", params.data))


def _evaluate(found, params, eval_root: str, args) -> int:
    plan = EvalPlan.from_params(params.eval)
    shutil.rmtree(args.out, ignore_errors=True)  # a DVC run starts fresh; `uhd evaluate --out` elsewhere resumes
    suite = run_suite(found.model, found.tokenizer, eval_root, args.out, plan, model_id=answers_model_id(found.sha256),
                      flops_model=found.flops_model)
    prov = provenance(found.sha256, found.model, params.data.source, plan, eval_root, found.source)
    label = f"{found.source['spec'] or 'this run'} ({params.data.source}, {found.model.config.strategy})"
    flops_name = getattr(found.flops_model, "name", found.flops_model)
    metrics = write_reports(suite, prov, args.reports, label=label, paper_row=params.eval.paper_row,
                            flops_model=flops_name)
    if not args.no_mlflow:
        record = Path(args.pointer)
        links = run_links(json.loads(record.read_text()) if record.exists() and not args.released else {},
                          found.sha256)
        log_evaluation(params.tracking, metrics, prov, links, Path(args.reports))
    print((Path(args.reports) / "results.md").read_text())
    print(f"reports: {args.reports}/results.md, metrics.json, provenance.json, benchmarks.png")
    return 0


def _nothing_released(reports: Path) -> int:
    """released/dvc.yaml runs with every `dvc repro`: with eval.model empty it records that there was nothing to
    score (the pipeline's own model is reports/eval's), so the stage is cheap and its outputs exist."""
    reports.mkdir(parents=True, exist_ok=True)
    (reports / "metrics.json").write_text("{}\n", encoding="utf-8")
    (reports / "provenance.json").write_text('{"provenance": {"model_source": null}}\n', encoding="utf-8")
    (reports / "results.md").write_text(
        "Nothing evaluated: `eval.model` is empty. This pipeline's own model is scored in reports/eval/results.md.\n"
        "To score a released checkpoint without training (README, \"Released checkpoints\"):\n\n"
        "    dvc exp run released/dvc.yaml -S eval.model=llava-hf:/path/to/llava-1.5-13b-hf -S eval.paper_row="
        "llava-1.5-13b\n", encoding="utf-8")
    print(f"evaluate --released: eval.model is empty, nothing to score ({reports}/results.md says how)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
