"""DVC stages `pretrain` and `finetune`: train the tiny LLaVA-UHD on Ray Train + DeepSpeed, export, track.

params.yaml -> TrainConfig -> ray_trainer.fit (the driver owns the MLflow run; rank 0 logs every step) ->
the final checkpoint exported with save_pretrained into models/<stage>/ -> logged to the run as a pyfunc ->
models/<stage>.json (run id, model URI, checkpoint URI, sha256 of the weights) and reports/train/<stage>_*.
Finetune starts from the weights of models/pretrain (TrainConfig.init_from).
With `cluster.address` = http(s)://head:8265 the stage submits itself there as a Ray job (the job runs this module
with `--local`, so it never resubmits) and copies the job's outputs back: components/training/submit.py.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

from components.config import load_params
from components.training.export import export_checkpoint, write_reports
from components.training.loop import TrainConfig
from components.training.ray_trainer import RaySettings, fit, read_steps
from components.training.submit import SubmitSpec, is_job_address
from components.training.submit import run as run_job

# Throughput figures of the run (components/training/throughput.py) copied into reports/train/<stage>_metrics.json.
RATES = ("tokens_per_s", "visual_tokens_per_s", "text_tokens_per_s", "samples_per_s", "tflops_per_s", "mfu",
         "peak_memory_mib")


def build_config(params, stage: str, args) -> TrainConfig:
    """Paths are absolute: Ray workers do not run in the repository root."""
    recipe = getattr(params.train, stage)

    def absolute(path):
        return str(Path(path).resolve()) if path else None

    return TrainConfig(
        architecture=params.model.architecture, vision_weights=params.model.vision_weights,
        llm_weights=params.model.llm_weights, gradient_checkpointing=recipe.gradient_checkpointing,
        tune_vision=params.train.tune_vision, bf16=recipe.bf16,
        validated_dir=absolute(args.validated), layouts_path=absolute(args.layouts), raw_root=absolute(args.raw),
        output_dir=absolute(Path(args.storage_path or params.train.ray.storage_path) / stage), stage=stage,
        source=params.data.source, tokenizer=params.model.tokenizer, tokenizer_dir=absolute(params.model.tokenizer_dir),
        compressor=params.compressor,
        strategy=params.slicing.strategy, preset=params.slicing.active_preset, spatial_schema=params.spatial_schema,
        max_length=recipe.max_length, limit=recipe.limit or None, steps=recipe.steps,
        global_batch=recipe.global_batch, micro_batch=recipe.micro_batch, zero_stage=recipe.zero_stage,
        lr=recipe.lr, weight_decay=recipe.weight_decay, warmup_ratio=recipe.warmup_ratio,
        save_every=recipe.save_every, vision_hidden=params.model.vision_hidden,
        vision_layers=params.model.vision_layers, llm_hidden=params.model.llm_hidden,
        llm_layers=params.model.llm_layers, init_from=absolute(args.init_from))


def submit_stage(params, args) -> int:
    """`dvc repro` with a job-server address: the same stage as a Ray job, then its outputs copied back here."""
    from components.tracking.mlflow_logging import resolve_tracking_uri

    repo = Path.cwd().resolve()
    passthrough = [(flag, value) for flag, value in (("--validated", args.validated), ("--layouts", args.layouts),
                                                     ("--raw", args.raw), ("--init-from", args.init_from)) if value]
    spec = SubmitSpec(address=params.cluster.address, stage=args.stage, repo=repo, params=args.params,
                      storage_path=params.train.ray.storage_path, train_args=tuple(x for p in passthrough for x in p))
    result = run_job(spec, tracking_uri=resolve_tracking_uri(params.tracking.uri, root=repo))
    print(json.dumps(result, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stage", choices=("pretrain", "finetune"), required=True)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--validated", default="data/validated")
    parser.add_argument("--layouts", default="data/layouts/layouts.parquet")
    parser.add_argument("--raw", default="data/raw", help="image root of the validated tables")
    parser.add_argument("--init-from", default=None, help="save_pretrained dir to start from (finetune: pretrain)")
    parser.add_argument("--models", default="models", help="writes <models>/<stage>/ and <models>/<stage>.json")
    parser.add_argument("--reports", default="reports/train")
    parser.add_argument("--local", action="store_true", help="train here even when cluster.address is a job server")
    parser.add_argument("--storage-path", default=None, help="overrides train.ray.storage_path (submitted jobs)")
    args = parser.parse_args(argv)
    params = load_params(args.params)
    if is_job_address(params.cluster.address) and not args.local:
        return submit_stage(params, args)
    if args.stage == "finetune" and args.init_from is None:
        args.init_from = str(Path(args.models) / "pretrain")
    cfg = build_config(params, args.stage, args)
    ray_cfg = params.train.ray
    storage = args.storage_path or ray_cfg.storage_path
    settings = RaySettings(num_workers=ray_cfg.num_workers, storage_path=storage, name=args.stage,
                           max_failures=ray_cfg.max_failures, num_to_keep=1, use_gpu=ray_cfg.use_gpu,
                           tracking_uri=params.tracking.uri, experiment_prefix=params.tracking.experiment_prefix)
    shutil.rmtree(Path(storage) / args.stage, ignore_errors=True)  # a DVC run starts fresh
    import ray

    # Inside a submitted job: the supervisor's RAY_ADDRESS (stack.md §4). Otherwise "local": a fresh instance of
    # our own, never whichever cluster happens to run on this machine.
    address = params.cluster.address
    address = os.environ.get("RAY_ADDRESS", "local") if is_job_address(address) else address or "local"
    ray.init(address=address, include_dashboard=False, log_to_driver=True)
    t0 = time.perf_counter()
    try:
        result = fit(cfg, settings=settings)
    finally:
        ray.shutdown()
    if result.error is not None:
        raise RuntimeError(f"training failed: {result.error}") from result.error
    wall = time.perf_counter() - t0

    model_dir = Path(args.models) / args.stage
    with result.checkpoint.as_directory() as ckpt:
        export_checkpoint(cfg, ckpt, model_dir)
    import mlflow

    from components.inference.pyfunc import log_pyfunc_model
    from components.tracking.mlflow_logging import resolve_tracking_uri, write_pointer

    mlflow.set_tracking_uri(resolve_tracking_uri(params.tracking.uri))
    with mlflow.start_run(run_id=result.mlflow_run_id):
        info = log_pyfunc_model(model_dir, cfg.tokenizer_dir, params.model.tokenizer)
        pointer = write_pointer(Path(args.models) / f"{args.stage}.json", result.mlflow_run_id, info.model_uri,
                                result.checkpoint.path, model_dir)
        mlflow.log_metric("wall_seconds", wall)

    loop_metrics = result.return_value or {}
    steps = read_steps(storage, args.stage)
    losses = loop_metrics.get("losses") or [s["loss"] for s in steps]
    lrs = loop_metrics.get("lrs") or [s["lr"] for s in steps]
    rates = {k: loop_metrics.get(k, result.metrics.get(k)) for k in RATES}
    summary = {**{k: round(v, 4) for k, v in rates.items() if v is not None}, "wall_seconds": round(wall, 2),
               "mlflow_run_id": result.mlflow_run_id, "model_sha256": pointer["model_sha256"]}
    print(json.dumps(write_reports(args.reports, args.stage, losses, lrs, summary), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
