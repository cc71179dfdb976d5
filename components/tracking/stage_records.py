"""What the train, evaluate and register stages record in MLflow and the Model Registry.

    log_evaluation(...)        the scores, provenance and reports of an evaluation, in `<prefix>-evaluate`
    register_from_reports(...) the weights (by sha256) + eval/validate metrics -> a registered version with alias gates
    decision_summary(...)      the printed verdict of a registry decision

The stage modules (pipelines/) only parse their arguments and call these.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable
from pathlib import Path

import yaml

from components.compression import effective_compressor
from components.tracking.gates import figures_from_reports
from components.tracking.mlflow_logging import resolve_tracking_uri, sha256_file
from components.tracking.registry import GateConfig, Registry, git_commit, register_evaluated, sha256_json

EVALUATION_ARTIFACTS = ("metrics.json", "results.md", "benchmarks.png")


def log_evaluation(tracking, metrics: dict, provenance: dict, links: dict, reports: Path) -> str:
    """A run in `<tracking.experiment_prefix>-evaluate` tagged with the model's training run (`links`, when known)
    and commit; the speed of this machine as metrics; returns the run's id."""
    import mlflow

    mlflow.set_tracking_uri(resolve_tracking_uri(tracking.uri))
    mlflow.set_experiment(f"{tracking.experiment_prefix}-evaluate")
    with mlflow.start_run(run_name="evaluate") as run:
        mlflow.set_tags({**{k: v or "" for k, v in links.items()}, "model_sha256": provenance["model_sha256"]})
        mlflow.log_params({k: json.dumps(v) if isinstance(v, dict) else v for k, v in provenance.items()})
        mlflow.log_metrics({f"{name}_headline": value for name, value in metrics["headline"].items()})
        speed = json.loads((reports / "speed.json").read_text()) if (reports / "speed.json").exists() else {}
        mlflow.log_metrics({f"{name}_questions_per_s": v for name, v in speed.get("questions_per_s", {}).items()})
        for name in EVALUATION_ARTIFACTS:
            if (reports / name).exists():
                mlflow.log_artifact(str(reports / name))
        return run.info.run_id


def read_json(path: str | Path, what: str) -> dict:
    path = Path(path)
    if not path.exists():
        raise SystemExit(f"register: {what} not found at {path} (run the stage that writes it first)")
    return json.loads(path.read_text())


def _locked_stages(lock: str | Path) -> dict:
    lock = Path(lock)
    return (yaml.safe_load(lock.read_text()) or {}).get("stages", {}) if lock.exists() else {}


def dvc_lock_md5(lock: str | Path, out_path: str) -> str | None:
    """The md5 DVC recorded for an out (the data version this model was trained on), if dvc.lock has it."""
    for stage in _locked_stages(lock).values():
        for out in stage.get("outs", []):
            if out.get("path") == out_path:
                return out.get("md5")
    return None


def upstream_params(lock: str | Path) -> dict:
    """The params values the model and its scores were made with: every stage's but register's own, as dvc.lock
    recorded them. Not the whole params file: register would then have to rerun (and register a version) on any
    params change, even one that changes no output."""
    merged = {}
    for name, stage in sorted(_locked_stages(lock).items()):
        if name != "register":
            for values in (stage.get("params") or {}).values():
                merged.update(values)
    return merged


@dataclasses.dataclass(frozen=True)
class RegisterInputs:
    """The files the register stage reads (its DVC deps)."""

    pointer: str  # this machine's record of the training run (not a DVC dep: a rerun writes new MLflow ids)
    eval_metrics: str
    validate_metrics: str
    dvc_lock: str
    model_dir: str = "models/finetune"  # the weights: what is registered is named by their sha256


def registration_provenance(sha: str, source: str, record: dict, params, inputs: RegisterInputs) -> dict:
    return {"model_sha256": sha, "model_uri": source, "mlflow_run_id": record.get("mlflow_run_id"),
            "checkpoint_uri": record.get("checkpoint_uri"),
            "git_commit": git_commit(), "params_sha256": sha256_json(upstream_params(inputs.dvc_lock)),
            "compressor": effective_compressor(params.compressor, params.slicing.strategy),
            "slicing.preset": params.slicing.active_preset,
            "data.source": params.data.source, "data.validated_md5": dvc_lock_md5(inputs.dvc_lock, "data/validated"),
            "eval_metrics_sha256": sha256_file(inputs.eval_metrics),
            "validate_metrics_sha256": sha256_file(inputs.validate_metrics)}


def training_record(inputs: RegisterInputs, sha: str) -> dict:
    """This machine's record of the run that trained these weights; {} when there is none or it is another run's
    (the weights came from `dvc checkout`, the run cache or `dvc pull`, the record from the last local run)."""
    path = Path(inputs.pointer)
    record = json.loads(path.read_text()) if path.exists() else {}
    return record if record.get("model_sha256") == sha else {}


def model_source(registry: Registry, sha: str, record: dict, log_weights: Callable[[], str] | None) -> str | None:
    """The MLflow model to register for the weights `sha`: the source of the version already registered for them (a
    rerun that reproduced the same bytes gets the same version, not one per MLflow run), else the training run's
    (None: the model its run logged, found by the registry), else `log_weights()` (the folder logged now: weights
    this machine never trained)."""
    if source := registry.source_of(sha):
        return source
    if record:
        return record.get("model_uri")
    if log_weights is None:
        raise SystemExit(f"register: no MLflow model for weights {sha[:12]}… (no run record, no version): retrain "
                         "with `dvc repro --force finetune`")
    return log_weights()


def register_from_reports(params, inputs: RegisterInputs, log_path: str | Path | None,
                          tracking_uri: str | None = None, log_weights: Callable[[], str] | None = None) -> dict:
    """Register the evaluated weights of `inputs.model_dir`; `candidate` always moves, `champion` through the gates.
    `log_weights` logs the folder as an MLflow model and returns its URI (the stage passes the pyfunc logger:
    tracking stays below inference). Returns the decision (with the model's sha256); a rejected candidate is a
    result, not an error."""
    sha = sha256_file(Path(inputs.model_dir) / "model.safetensors")
    record = training_record(inputs, sha)
    figures = figures_from_reports(read_json(inputs.eval_metrics, "eval metrics"),
                                   read_json(inputs.validate_metrics, "validation metrics"))
    registry = Registry(params.registry.model_name, resolve_tracking_uri(tracking_uri or params.tracking.uri))
    source = model_source(registry, sha, record, log_weights)
    decision = register_evaluated(registry, source, record.get("mlflow_run_id"), figures,
                                  registration_provenance(sha, source, record, params, inputs),
                                  GateConfig.of(params.registry),
                                  log_path, experiment=os.environ.get("DVC_EXP_NAME"))  # set by `dvc exp run`
    decision["model_sha256"] = sha
    return decision


def decision_summary(decision: dict) -> str:
    verdict = {"promote": "PROMOTED to champion", "keep": "already the champion"}.get(
        decision["action"], "not promoted (champion unchanged)")
    lines = [f"{decision['model_name']} version {decision['version']}: candidate; {verdict}"]
    lines += [f"  - {reason}" for reason in decision["reasons"]]
    lines.append(f"  aliases now: {decision['aliases_after']}")
    return "\n".join(lines)
