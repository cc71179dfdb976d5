"""The DeepSpeed loop (loop.py) on a Ray Train V2 `TorchTrainer`, with Ray-managed checkpoints and restarts.

`fit(config, settings)` -> `ray.train.Result`. Every run has its own id (`new_run_id`: `<stage>-<UTC time>-<8 hex>`)
and its own folder, the run dir `<storage_path>/<name>/<run_id>/` (Ray's RunConfig name is the run id under
`<storage_path>/<name>`), so runs of the same stage that share storage (two checkouts, queued DVC experiments,
submitted jobs) never write, delete or resume each other's files. Nothing here deletes a run dir: finished runs
stay there (each with its last `num_to_keep` checkpoints) until someone removes them by hand. Each worker runs
`loop.train` unchanged except for three `TrainHooks`:
- resume: `ray.train.get_checkpoint()` (the latest reported checkpoint after a worker-group restart, or the
  one given to `fit(resume_from=...)`) is loaded through loop.py's own `engine.load_checkpoint` path, so the
  step, the sampler position, the RNG states, optimizer and LR schedule all come back from `client_state`;
- save: every `save_every` steps (and at the last step) every rank writes its DeepSpeed shard into a temp dir
  and calls `ray.train.report(metrics, checkpoint=Checkpoint.from_directory(dir))`: Ray merges all ranks'
  files into one checkpoint directory `checkpoint_step<NNNNNN>/` in the run dir;
- on_step: rank 0 logs loss / lr / tokens_per_s to MLflow (into the run `fit` opened on the driver, so a
  restart keeps one run) and appends `{"step", "loss", "lr", "resumed"}` to `<run dir>/steps.jsonl`.

Trust boundary: DeepSpeed's `engine.load_checkpoint` reads checkpoints with `torch.load(weights_only=False)`, i.e.
it unpickles them, and a pickle can run any code. So a run resumes only from (a) its own run dir, which it
created fresh (Ray's restart checkpoints, and Ray's snapshot of an interrupted run, both live there), or (b) the
folder the caller named explicitly in `fit(resume_from=...)` or by passing an existing `RaySettings.run_id`.
Nothing picks a checkpoint automatically from anywhere else, and `train_loop_per_worker` refuses one outside
those folders (`check_resume_source`). Only name folders whose writers you trust.

Ray sets RANK / WORLD_SIZE / MASTER_* and the gloo process group; `deepspeed.initialize` runs inside the
worker (no `prepare_model`). Ray connection: an existing `ray.init` is reused; otherwise Ray starts a local one.

Params: `RaySettings.from_params` is the one mapping (`train.ray.{num_workers, max_failures, storage_path,
use_gpu}`, `tracking.{uri, experiment_prefix}`); `name` is the stage, `run_id` a fresh id, and `num_to_keep` is
not a param. The checkpoint period is TrainConfig.save_every (`train.<stage>.save_every`). The run id is never
written into the exported model or the loss CSV (they stay byte-identical between runs); the stage's pointer
JSON holds it, through the checkpoint URI.
"""

from __future__ import annotations

import json
import os
import signal
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from components.config import Params

from .loop import TrainConfig, TrainHooks, train

# Fault injection for tests: "<flag file>:<step>[:kill]": rank 0 fails once at that step, by raising or (kill) by
# SIGKILL-ing its own process, i.e. a worker that dies without a word, as on a lost node.
FAIL_FLAG_ENV = "LLAVA_UHD_FAIL_ONCE"


_RAY, _TRACKING = Params().train.ray, Params().tracking  # the defaults of the params-backed fields


def new_run_id(name: str) -> str:
    """`<name>-<UTC time>-<8 hex>`: unique without any coordination between the runs that share a storage (the
    random part), and readable / sortable by start within a stage's folder (the time)."""
    return f"{name}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class RaySettings:
    num_workers: int = _RAY.num_workers
    storage_path: str = _RAY.storage_path
    name: str = "train"  # the stage: its runs live under <storage_path>/<name>/ (the stages use their name)
    run_id: str | None = None  # the run's own folder in there; None: fit() takes a fresh new_run_id(name)
    max_failures: int = _RAY.max_failures
    num_to_keep: int | None = 2
    use_gpu: bool = _RAY.use_gpu
    tracking_uri: str | None = None  # None: no MLflow; "env" or "" -> resolve_tracking_uri()
    experiment_prefix: str = _TRACKING.experiment_prefix
    worker_env: tuple[tuple[str, str], ...] = ()  # extra env vars for the workers (Ray's worker_runtime_env)

    @property
    def run_dir(self) -> Path:
        """`<storage_path>/<name>/<run_id>/`: Ray's checkpoints and steps.jsonl of this run, and nothing else."""
        if self.run_id is None:
            raise ValueError("no run_id yet: fit() assigns a fresh one (or use RaySettings.from_params)")
        return Path(self.storage_path).resolve() / self.name / self.run_id

    @classmethod
    def from_params(cls, params: Params, name: str, storage_path: str | None = None) -> RaySettings:
        """A training stage's settings, for one new run (a fresh run id: its run dir is known before fit, and
        is no other run's); `storage_path` overrides train.ray.storage_path (a submitted job's)."""
        ray, tracking = params.train.ray, params.tracking
        # num_to_keep 1: a stage exports only its last checkpoint; resuming after a restart needs no older one.
        return cls(num_workers=ray.num_workers, storage_path=storage_path or ray.storage_path, name=name,
                   run_id=new_run_id(name),
                   max_failures=ray.max_failures, num_to_keep=1, use_gpu=ray.use_gpu, tracking_uri=tracking.uri,
                   experiment_prefix=tracking.experiment_prefix)


def _maybe_fail(step: int, rank: int) -> None:
    spec = os.environ.get(FAIL_FLAG_ENV)
    if not spec or rank != 0:
        return
    flag, at, *mode = spec.split(":")
    if step == int(at) and Path(flag).exists():
        Path(flag).unlink()
        if mode == ["kill"]:
            # Ray Train's controller registers a reported checkpoint when it next polls the workers (every
            # RAY_TRAIN_HEALTH_CHECK_INTERVAL_S, 2 s); a death inside that window resumes from the one before.
            # Wait it out, so the test checks resuming, not the polling.
            time.sleep(2.5 * float(os.environ.get("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", 2.0)))
            os.kill(os.getpid(), signal.SIGKILL)
        raise RuntimeError(f"injected failure at step {step}")


def _within(path: str, folder: str) -> bool:
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return path == folder or path.startswith(folder + os.sep)


def check_resume_source(checkpoint_path: str, run_dir: str, resume_from: str | None) -> None:
    """The trust boundary of the module docstring: DeepSpeed unpickles what it resumes from, so only the run's
    own folder or the caller's explicit `resume_from` may be read."""
    if not (_within(checkpoint_path, run_dir) or (resume_from and _within(checkpoint_path, resume_from))):
        raise RuntimeError(f"refusing to resume from {checkpoint_path}: not in this run's folder {run_dir} nor "
                           f"the explicit resume_from ({resume_from}); DeepSpeed checkpoints are pickles")


def train_loop_per_worker(loop_config: dict) -> dict:
    """Ray's worker function: `loop_config` = {"train": asdict(TrainConfig), "run_dir", "resume_from",
    "mlflow": {...}|None}."""
    import ray.train
    from ray.train import Checkpoint

    cfg = TrainConfig(**loop_config["train"])
    rank = ray.train.get_context().get_world_rank()
    run_dir = Path(loop_config["run_dir"])
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        check_resume_source(checkpoint.path, str(run_dir), loop_config.get("resume_from"))
    last: dict = {}
    tracker = None
    mlflow_cfg = loop_config.get("mlflow")
    if rank == 0 and mlflow_cfg:
        from components.tracking.mlflow_logging import StageRun

        tracker = StageRun(cfg.stage, tracking_uri=mlflow_cfg["tracking_uri"], run_id=mlflow_cfg["run_id"],
                           enabled=True).__enter__()

    def on_step(step: int, metrics: dict) -> None:
        last.update(metrics, step=step)
        if rank == 0:
            with open(run_dir / "steps.jsonl", "a") as f:
                f.write(json.dumps({"step": step, "loss": metrics["loss"], "lr": metrics["lr"],
                                    "resumed": checkpoint is not None}) + "\n")
            if tracker is not None:
                tracker.log_step(step, **metrics)
        _maybe_fail(step, rank)

    def save(engine, step: int, client: dict) -> str:
        tag = f"step{step}"
        with tempfile.TemporaryDirectory(prefix=f"ds_{tag}_") as tmp:
            engine.save_checkpoint(tmp, tag=tag, client_state=client)
            ray.train.report({**last, "step": step}, checkpoint=Checkpoint.from_directory(tmp),
                             checkpoint_dir_name=f"checkpoint_step{step:06d}")
        return tag

    try:
        if checkpoint is not None:
            with checkpoint.as_directory() as ckpt_dir:
                metrics = train(cfg, TrainHooks(resume_dir=ckpt_dir, on_step=on_step, save=save))
        else:
            metrics = train(cfg, TrainHooks(on_step=on_step, save=save))
    finally:
        if tracker is not None:
            tracker.__exit__(None, None, None)  # ends the attached run; the driver sets its final status
    return metrics  # the driver's result.return_value: losses, the run's plan and its data counts


def build_trainer(config: TrainConfig, settings: RaySettings, mlflow_run: dict | None = None,
                  resume_from: str | None = None):
    from ray.train import Checkpoint, CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    run_dir = settings.run_dir  # Ray's run `<run_id>` under `<storage>/<stage>`: this run's folder only
    run_dir.mkdir(parents=True, exist_ok=True)
    resume_from = str(Path(resume_from).resolve()) if resume_from else None  # the workers run elsewhere
    # resume=False: the loop's own resume reads cfg.output_dir; here only Ray's checkpoint resumes (see docstring).
    loop_config = {"train": asdict(replace(config, resume=False)), "run_dir": str(run_dir),
                   "resume_from": resume_from, "mlflow": mlflow_run}
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config=loop_config,
        scaling_config=ScalingConfig(num_workers=settings.num_workers, use_gpu=settings.use_gpu),
        torch_config=TorchConfig(backend="nccl" if settings.use_gpu else "gloo"),
        run_config=RunConfig(name=settings.run_id, storage_path=str(run_dir.parent),
                             failure_config=FailureConfig(max_failures=settings.max_failures),
                             checkpoint_config=CheckpointConfig(num_to_keep=settings.num_to_keep),
                             worker_runtime_env={"env_vars": dict(settings.worker_env)} if settings.worker_env
                             else None),
        resume_from_checkpoint=Checkpoint.from_directory(resume_from) if resume_from else None,
    )


def fit(config: TrainConfig, settings: RaySettings = RaySettings(), resume_from: str | None = None):
    """Train on `num_workers` Ray workers; returns the `ray.train.Result` (result.checkpoint: the last one,
    result.metrics: its report, result.return_value: rank 0's loop metrics, result.error on failure,
    result.run_id / result.run_dir: this run's id and folder).
    Without `settings.run_id` the run gets a fresh one, so its folder holds nothing of any other run; an explicit
    run_id whose folder exists continues that run (Ray restores its checkpoint snapshot): pass only your own.
    With `settings.tracking_uri` set, the MLflow run is opened here (rank 0 of every attempt appends to it);
    its id is `result.mlflow_run_id` (None without tracking)."""
    if settings.run_id is None:
        settings = replace(settings, run_id=new_run_id(settings.name))
    mlflow_run = None
    stage_run = None
    if settings.tracking_uri is not None:
        from components.tracking.mlflow_logging import StageRun, resolve_tracking_uri

        stage_run = StageRun(config.stage, params=config, tracking_uri=resolve_tracking_uri(settings.tracking_uri),
                             experiment_prefix=settings.experiment_prefix, enabled=True,
                             tags={"launcher": "ray", "ray.name": settings.name, "ray.run_id": settings.run_id})
        stage_run.__enter__()
        mlflow_run = {"tracking_uri": stage_run.tracking_uri, "run_id": stage_run.run_id}
    try:
        result = build_trainer(config, settings, mlflow_run, resume_from).fit()
    except BaseException as exc:
        if stage_run is not None:
            stage_run.__exit__(type(exc), exc, None)
        raise
    if stage_run is not None:
        error = getattr(result, "error", None)
        stage_run.__exit__(type(error) if error else None, error, None)
    result.mlflow_run_id = stage_run.run_id if stage_run else None
    result.run_id, result.run_dir = settings.run_id, str(settings.run_dir)
    return result


def read_steps(run_dir: str | Path) -> list[dict]:
    """Rank 0's per-step log of every attempt of the run in `run_dir` (result.run_dir, RaySettings.run_dir)."""
    path = Path(run_dir).resolve() / "steps.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
