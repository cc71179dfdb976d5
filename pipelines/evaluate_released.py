"""DVC stage `evaluate` of released/dvc.yaml: a model this pipeline did not train (`eval.model`: a released
checkpoint converted on the fly, a `uhd convert` directory or a registered model; components/evaluation/
model_source.py) on benchmark files fetched alone (components.data.raw_data.acquire_benchmarks; `eval.root`: a LLaVA
playground/data/eval folder the user has, read as is, nothing fetched), with no training
and none of the main DAG's outputs -> reports/released/{metrics.json, provenance.json, results.md (beside
`eval.paper_row` with the difference), scores.csv, benchmarks.png} and data/released/. With eval.model empty it
records that there was nothing to score.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from components.config import load_params
from components.data.raw_data import acquire_benchmarks
from components.evaluation.exported_model import given_eval_root, score_and_report
from components.evaluation.model_source import load_for_evaluation, placement
from components.threads import use_cpu_cores


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--raw", default="data/raw", help="where the benchmark files are fetched (or found)")
    parser.add_argument("--out", default="data/released", help="answers JSONL and submission files")
    parser.add_argument("--reports", default="reports/released")
    parser.add_argument("--no-mlflow", action="store_true", help="do not log the scores to MLflow")
    args = parser.parse_args(argv)
    params = load_params(args.params)
    spec = params.eval.model
    if not spec:
        return _nothing_to_score(Path(args.reports))
    try:  # eval.root: the user's own benchmark folder, so nothing is fetched
        eval_root = given_eval_root(params.eval.root) if params.eval.root else None
    except OSError as err:
        print(f"evaluate-released: {err}", file=sys.stderr)
        return 2
    use_cpu_cores()
    try:
        found = load_for_evaluation(spec, "", params.model, params.eval.vision_tower, params.tracking.uri or None)
        found.model.to(*placement(params.eval.device, params.eval.dtype))
    except (ValueError, OSError, LookupError) as err:  # a bad path, format or URI: one line that says which
        print(f"evaluate-released: eval.model={spec!r}: {err}", file=sys.stderr)
        return 2
    eval_root = eval_root or str(acquire_benchmarks(args.raw, params.data))
    score_and_report(found, params, eval_root, args.out, args.reports, log_mlflow=not args.no_mlflow)
    return 0


def _nothing_to_score(reports: Path) -> int:
    """With eval.model empty (the committed default) the stage records that there was nothing to score (the
    pipeline's own model is reports/eval's): that record is the baseline released/dvc.lock and `dvc status` hold."""
    reports.mkdir(parents=True, exist_ok=True)
    (reports / "metrics.json").write_text("{}\n", encoding="utf-8")
    (reports / "provenance.json").write_text('{"provenance": {"model_source": null}}\n', encoding="utf-8")
    (reports / "results.md").write_text(
        "Nothing evaluated: `eval.model` is empty. This pipeline's own model is scored in reports/eval/results.md.\n"
        "To score a released checkpoint without training (README, \"Released checkpoints\"):\n\n"
        "    dvc exp run released/dvc.yaml -S eval.model=llava-hf:/path/to/llava-1.5-13b-hf -S eval.paper_row="
        "llava-1.5-13b\n", encoding="utf-8")
    print(f"evaluate-released: eval.model is empty, nothing to score ({reports}/results.md says how)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
