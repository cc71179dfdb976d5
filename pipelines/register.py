"""DVC stage `register`: the evaluated model into the MLflow Model Registry, with alias gates.

models/finetune.json (pointer) + reports/eval/metrics.json + reports/validate/metrics.json + params `registry`
-> a registered version of `registry.model_name` (provenance, headline scores and validation figures as tags)
-> alias `candidate` always; alias `champion` only when the gates pass (components/tracking/gates.py)
-> reports/registry/decision.json (the declared metric) and a line in reports/registry/promotions.jsonl.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import yaml

from components.compression import effective_compressor
from components.config import load_params
from components.tracking.gates import figures_from_reports
from components.tracking.mlflow_logging import resolve_tracking_uri, sha256_file
from components.tracking.registry import GateConfig, Registry, git_commit, register_evaluated, sha256_json


def read_json(path: str | Path, what: str) -> dict:
    path = Path(path)
    if not path.exists():
        raise SystemExit(f"register: {what} not found at {path} (run the stage that writes it first)")
    return json.loads(path.read_text())


def dvc_lock_md5(lock: str | Path, out_path: str) -> str | None:
    """The md5 DVC recorded for an out (the data version this model was trained on), if dvc.lock has it."""
    lock = Path(lock)
    if not lock.exists():
        return None
    for stage in (yaml.safe_load(lock.read_text()) or {}).get("stages", {}).values():
        for out in stage.get("outs", []):
            if out.get("path") == out_path:
                return out.get("md5")
    return None


def provenance(pointer: dict, params, args) -> dict:
    return {"model_sha256": pointer.get("model_sha256"), "mlflow_run_id": pointer.get("mlflow_run_id"),
            "model_uri": pointer.get("model_uri"), "checkpoint_uri": pointer.get("checkpoint_uri"),
            "git_commit": git_commit(), "params_sha256": sha256_json(dataclasses.asdict(params)),
            "compressor": effective_compressor(params.compressor, params.slicing.strategy),
            "slicing.preset": params.slicing.active_preset,
            "data.source": params.data.source, "data.validated_md5": dvc_lock_md5(args.dvc_lock, "data/validated"),
            "eval_metrics_sha256": sha256_file(args.eval_metrics),
            "validate_metrics_sha256": sha256_file(args.validate_metrics)}


def summary(decision: dict) -> str:
    verdict = {"promote": "PROMOTED to champion", "keep": "already the champion"}.get(
        decision["action"], "not promoted (champion unchanged)")
    lines = [f"{decision['model_name']} version {decision['version']}: candidate; {verdict}"]
    lines += [f"  - {reason}" for reason in decision["reasons"]]
    lines.append(f"  aliases now: {decision['aliases_after']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--pointer", default="models/finetune.json")
    parser.add_argument("--eval-metrics", default="reports/eval/metrics.json")
    parser.add_argument("--validate-metrics", default="reports/validate/metrics.json")
    parser.add_argument("--dvc-lock", default="dvc.lock", help="read for the data version (md5 of data/validated)")
    parser.add_argument("--decision", default="reports/registry/decision.json")
    parser.add_argument("--log", default="reports/registry/promotions.jsonl", help="append-only promotion log")
    parser.add_argument("--tracking-uri", default=None, help="default: params tracking.uri, $MLFLOW_TRACKING_URI")
    parser.add_argument("--summary-only", action="store_true", help="print the last decision.json and exit")
    args = parser.parse_args(argv)
    if args.summary_only:
        print(summary(read_json(args.decision, "registry decision")))
        return 0
    params = load_params(args.params)
    pointer = read_json(args.pointer, "model pointer")
    figures = figures_from_reports(read_json(args.eval_metrics, "eval metrics"),
                                   read_json(args.validate_metrics, "validation metrics"))
    registry = Registry(params.registry.model_name, resolve_tracking_uri(args.tracking_uri or params.tracking.uri))
    decision = register_evaluated(registry, pointer.get("model_uri"), pointer.get("mlflow_run_id"), figures,
                                  provenance(pointer, params, args), GateConfig.of(params.registry), args.log)
    decision["model_sha256"] = pointer.get("model_sha256")
    Path(args.decision).parent.mkdir(parents=True, exist_ok=True)
    Path(args.decision).write_text(json.dumps(decision, indent=2, sort_keys=True) + "\n")
    print(summary(decision))
    return 0  # a rejected candidate is a result, not a failure: the DAG stays green and decision.json says why


if __name__ == "__main__":
    sys.exit(main())
