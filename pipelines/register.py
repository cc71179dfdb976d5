"""DVC stage `register`: the evaluated model into the MLflow Model Registry, with alias gates.

models/finetune/ (the weights, named by their sha256; models/finetune.json, this machine's record of their training
run, when it is theirs) + reports/eval/metrics.json + reports/validate/metrics.json + params `registry`
-> a registered version of `registry.model_name` (provenance, headline scores and validation figures as tags;
   the version already registered for these weights on a rerun)
-> alias `candidate` always; alias `champion` only when the gates pass (components/tracking/gates.py)
-> reports/registry/registered.json (the DVC out: model name and sha256, the same bytes on a rerun),
   reports/registry/decision.json (this registry's versions and gates) and a line in promotions.jsonl.
The work is components/tracking/stage_records.py; this module parses arguments and writes the outs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from components.config import load_params
from components.tracking.stage_records import RegisterInputs, decision_summary, read_json, register_from_reports


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--pointer", default="models/finetune.json", help="the training run's record")
    parser.add_argument("--model-dir", default="models/finetune")
    parser.add_argument("--eval-metrics", default="reports/eval/metrics.json")
    parser.add_argument("--validate-metrics", default="reports/validate/metrics.json")
    parser.add_argument("--dvc-lock", default="dvc.lock", help="read for the data version (md5 of data/validated)")
    parser.add_argument("--decision", default="reports/registry/decision.json")
    parser.add_argument("--registered", default="reports/registry/registered.json")
    parser.add_argument("--log", default="reports/registry/promotions.jsonl", help="append-only promotion log")
    parser.add_argument("--tracking-uri", default=None, help="default: params tracking.uri, $MLFLOW_TRACKING_URI")
    parser.add_argument("--summary-only", action="store_true", help="print the last decision.json and exit")
    args = parser.parse_args(argv)
    if args.summary_only:
        print(decision_summary(read_json(args.decision, "registry decision")))
        return 0
    inputs = RegisterInputs(args.pointer, args.eval_metrics, args.validate_metrics, args.dvc_lock, args.model_dir)
    params = load_params(args.params)

    def log_weights() -> str:  # only for weights this machine never trained: torch and the model code load lazily
        from components.inference.pyfunc import log_restored_weights

        return log_restored_weights(params, args.model_dir, args.tracking_uri)

    decision = register_from_reports(params, inputs, args.log, args.tracking_uri, log_weights=log_weights)
    Path(args.decision).parent.mkdir(parents=True, exist_ok=True)
    Path(args.decision).write_text(json.dumps(decision, indent=2, sort_keys=True) + "\n")
    registered = {"model_name": decision["model_name"], "model_sha256": decision["model_sha256"]}
    Path(args.registered).write_text(json.dumps(registered, indent=2, sort_keys=True) + "\n")
    print(decision_summary(decision))
    return 0  # a rejected candidate is a result, not a failure: the DAG stays green and decision.json says why


if __name__ == "__main__":
    sys.exit(main())
