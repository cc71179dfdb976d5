"""A training stage (pretrain or finetune) as one call, on this machine's Ray or submitted to a Ray job server.

    run_training_stage(params, stage, files)     TrainConfig + RaySettings from params -> ray_trainer.fit (the
        driver owns the MLflow run; rank 0 logs every step) -> the final checkpoint exported with save_pretrained
        into <models>/<stage>/ -> logged to the run as a pyfunc -> <models>/<stage>.json (this machine's run
        record: run id, model URI, checkpoint URI, sha256 of the weights) and <reports>/<stage>_* (the tracked
        loss CSV and metrics, the gitignored speed); returns the summary it reports.
    submit_training_stage(params, stage, files, params_file)     the same stage as a Ray job (submit.py), its
        outputs copied back; returns the job's result.

Every call is a new run with its own folder, `<train.ray.storage_path>/<stage>/<run id>/` (ray_trainer.py):
checkouts and queued DVC experiments that share a storage path never overwrite, delete or resume each other's
checkpoints. Nothing deletes old runs: they accumulate there (one checkpoint each, num_to_keep=1), to be removed
by hand when no run needs them. The run id reaches models/<stage>.json (its checkpoint_uri) and MLflow only: the
exported model and <reports>/<stage>_loss.csv do not depend on it.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from components.config import Params
from components.training.export import export_checkpoint, write_reports
from components.training.loop import TrainConfig
from components.training.ray_trainer import RaySettings, fit, read_steps
from components.training.submit import SubmitSpec, is_job_address
from components.training.submit import run as run_job

# Throughput figures of the run (components/training/throughput.py) copied into <reports>/<stage>_metrics.json.
RATES = ("tokens_per_s", "visual_tokens_per_s", "text_tokens_per_s", "samples_per_s", "tflops_per_s", "mfu",
         "peak_memory_mib")


@dataclass(frozen=True)
class StageFiles:
    """What a training stage reads and writes (its DVC deps and outs)."""

    validated: str
    layouts: str
    raw: str  # the image root of the validated tables
    models: str  # writes <models>/<stage>/ and <models>/<stage>.json
    reports: str  # writes <reports>/<stage>_loss.csv, <stage>_metrics.json, ...
    init_from: str | None = None  # a save_pretrained dir to start from (finetune: <models>/pretrain)


def ray_address(cluster_address: str) -> str:
    """Inside a submitted job: the supervisor's RAY_ADDRESS (stack.md §4). Otherwise the configured cluster, or
    "local": a fresh instance of our own, never whichever cluster happens to run on this machine."""
    if is_job_address(cluster_address):
        return os.environ.get("RAY_ADDRESS", "local")
    return cluster_address or "local"


# Ray's documented logging switches (read when ray is first imported, so set before that; a user's value wins):
# - Train's print patch copies each worker print into its logger, so the driver showed every step line twice;
# - without the dashboard the State API is off, and Train's PlacementGroupCleaner warns that it cannot query it
#   every second of a run (harmless, ray-project/ray stack note; the dashboard would cost ~1 GB RSS).
RAY_LOG_SETTINGS = {"RAY_TRAIN_ENABLE_PRINT_PATCH": "0",
                    "RAY_DEDUP_LOGS_SKIP_REGEX": "Failed to query Ray Train Controller actor state"}


def quiet_ray_logs() -> None:
    for name, value in RAY_LOG_SETTINGS.items():
        os.environ.setdefault(name, value)


def fit_on_ray(cfg: TrainConfig, settings: RaySettings, address: str):
    """ray.init -> fit -> ray.shutdown; a failed run raises with Ray's error."""
    quiet_ray_logs()
    import ray

    ray.init(address=address, include_dashboard=False, log_to_driver=True)
    try:
        result = fit(cfg, settings=settings)
    finally:
        ray.shutdown()
    if result.error is not None:
        raise RuntimeError(f"training failed: {result.error}") from result.error
    return result


def log_trained_model(tracking_uri: str, run_id: str, model_dir: Path, tokenizer: str, tokenizer_dir: str,
                      pointer_path: Path, checkpoint_uri: str, wall_seconds: float) -> dict:
    """Into the run the Ray driver opened: the pyfunc model and the wall time; returns the run record written."""
    import mlflow

    from components.inference.pyfunc import log_pyfunc_model
    from components.tracking.mlflow_logging import resolve_tracking_uri, write_pointer

    mlflow.set_tracking_uri(resolve_tracking_uri(tracking_uri))
    with mlflow.start_run(run_id=run_id):
        info = log_pyfunc_model(model_dir, tokenizer_dir, tokenizer)
        pointer = write_pointer(pointer_path, run_id, info.model_uri, checkpoint_uri, model_dir)
        mlflow.log_metric("wall_seconds", wall_seconds)
    return pointer


def run_training_stage(params: Params, stage: str, files: StageFiles, storage_path: str | None = None) -> dict:
    """Train, export, track; `storage_path` overrides train.ray.storage_path (a submitted job's shared storage)."""

    # A fresh run id: the run's folder is new, so it starts fresh without deleting anything (the folder of the
    # stage is shared by every run on this storage, which may be training right now).
    settings = RaySettings.from_params(params, stage, storage_path)
    cfg = TrainConfig.from_params(params, stage, validated_dir=files.validated, layouts_path=files.layouts,
                                  raw_root=files.raw, output_dir=str(settings.run_dir), init_from=files.init_from)
    t0 = time.perf_counter()
    result = fit_on_ray(cfg, settings, ray_address(params.cluster.address))
    wall = time.perf_counter() - t0

    model_dir = Path(files.models) / stage
    with result.checkpoint.as_directory() as ckpt:
        export_checkpoint(cfg, ckpt, model_dir)
    pointer = log_trained_model(params.tracking.uri, result.mlflow_run_id, model_dir, params.model.tokenizer,
                                cfg.tokenizer_dir, Path(files.models) / f"{stage}.json", result.checkpoint.path, wall)
    loop_metrics = result.return_value or {}
    steps = read_steps(result.run_dir)
    losses = loop_metrics.get("losses") or [s["loss"] for s in steps]
    lrs = loop_metrics.get("lrs") or [s["lr"] for s in steps]
    rates = {k: loop_metrics.get(k, result.metrics.get(k)) for k in RATES}
    speed = {**{k: round(v, 4) for k, v in rates.items() if v is not None}, "wall_seconds": round(wall, 2),
             "mlflow_run_id": result.mlflow_run_id}  # this machine's and this run's: <stage>_speed.json, gitignored
    # tracked: how long the run was meant to be and what it trained on (counts that reconcile with validation's)
    plan = {key: loop_metrics[key] for key in ("epochs", "steps_per_epoch", "planned_steps", "data")
            if key in loop_metrics}
    return write_reports(files.reports, stage, losses, lrs, {"model_sha256": pointer["model_sha256"], **plan}, speed)


def submit_training_stage(params: Params, stage: str, files: StageFiles, params_file: str) -> dict:
    """`dvc repro` with a job-server address: the same stage as a Ray job, then its outputs copied back here.
    The job's stage run gets the data paths of `files`; its models and reports go to shared storage (submit.py)."""
    from components.tracking.mlflow_logging import resolve_tracking_uri

    repo = Path.cwd().resolve()
    data = (("--validated", files.validated), ("--layouts", files.layouts), ("--raw", files.raw),
            ("--init-from", files.init_from))
    spec = SubmitSpec(address=params.cluster.address, stage=stage, repo=repo, params=params_file,
                      storage_path=params.train.ray.storage_path,
                      train_args=tuple(part for flag, value in data if value for part in (flag, value)))
    return run_job(spec, tracking_uri=resolve_tracking_uri(params.tracking.uri, root=repo))
