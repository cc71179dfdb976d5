"""What the train, evaluate and register stages record in MLflow and the Model Registry.

    log_evaluation(...)        the scores, provenance and reports of an evaluation, in `<prefix>-evaluate`
    register_from_reports(...) pointer + eval/validate metrics -> a registered version with alias gates
    decision_summary(...)      the printed verdict of a registry decision

The stage modules (pipelines/) only parse their arguments and call these.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import yaml

from components.compression import effective_compressor
from components.tracking.gates import figures_from_reports
from components.tracking.mlflow_logging import resolve_tracking_uri, sha256_file
from components.tracking.registry import GateConfig, Registry, git_commit, register_evaluated, sha256_json

EVALUATION_ARTIFACTS = ("metrics.json", "results.md", "benchmarks.png")


def log_evaluation(tracking, metrics: dict, provenance: dict, reports: Path) -> str:
    """A run in `<tracking.experiment_prefix>-evaluate` tagged with the model's training run; returns its id."""
    import mlflow

    mlflow.set_tracking_uri(resolve_tracking_uri(tracking.uri))
    mlflow.set_experiment(f"{tracking.experiment_prefix}-evaluate")
    with mlflow.start_run(run_name="evaluate") as run:
        mlflow.set_tags({"model_run_id": provenance["mlflow_run_id"] or "", "model_sha256": provenance["model_sha256"]})
        mlflow.log_params({k: json.dumps(v) if isinstance(v, dict) else v for k, v in provenance.items()})
        mlflow.log_metrics({f"{name}_headline": value for name, value in metrics["headline"].items()})
        for name in EVALUATION_ARTIFACTS:
            if (reports / name).exists():
                mlflow.log_artifact(str(reports / name))
        return run.info.run_id


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


@dataclasses.dataclass(frozen=True)
class RegisterInputs:
    """The files the register stage reads (its DVC deps)."""

    pointer: str
    eval_metrics: str
    validate_metrics: str
    dvc_lock: str


def registration_provenance(pointer: dict, params, inputs: RegisterInputs) -> dict:
    return {"model_sha256": pointer.get("model_sha256"), "mlflow_run_id": pointer.get("mlflow_run_id"),
            "model_uri": pointer.get("model_uri"), "checkpoint_uri": pointer.get("checkpoint_uri"),
            "git_commit": git_commit(), "params_sha256": sha256_json(dataclasses.asdict(params)),
            "compressor": effective_compressor(params.compressor, params.slicing.strategy),
            "slicing.preset": params.slicing.active_preset,
            "data.source": params.data.source, "data.validated_md5": dvc_lock_md5(inputs.dvc_lock, "data/validated"),
            "eval_metrics_sha256": sha256_file(inputs.eval_metrics),
            "validate_metrics_sha256": sha256_file(inputs.validate_metrics)}


def register_from_reports(params, inputs: RegisterInputs, log_path: str | Path | None,
                          tracking_uri: str | None = None) -> dict:
    """Register the evaluated model of `inputs.pointer`; `candidate` always moves, `champion` through the gates.
    Returns the decision (with the model's sha256); a rejected candidate is a result, not an error."""
    pointer = read_json(inputs.pointer, "model pointer")
    figures = figures_from_reports(read_json(inputs.eval_metrics, "eval metrics"),
                                   read_json(inputs.validate_metrics, "validation metrics"))
    registry = Registry(params.registry.model_name, resolve_tracking_uri(tracking_uri or params.tracking.uri))
    decision = register_evaluated(registry, pointer.get("model_uri"), pointer.get("mlflow_run_id"), figures,
                                  registration_provenance(pointer, params, inputs), GateConfig.of(params.registry),
                                  log_path, experiment=os.environ.get("DVC_EXP_NAME"))  # set by `dvc exp run`
    decision["model_sha256"] = pointer.get("model_sha256")
    return decision


def decision_summary(decision: dict) -> str:
    verdict = {"promote": "PROMOTED to champion", "keep": "already the champion"}.get(
        decision["action"], "not promoted (champion unchanged)")
    lines = [f"{decision['model_name']} version {decision['version']}: candidate; {verdict}"]
    lines += [f"  - {reason}" for reason in decision["reasons"]]
    lines.append(f"  aliases now: {decision['aliases_after']}")
    return "\n".join(lines)
