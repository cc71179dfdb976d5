"""DVC stages `pretrain` and `finetune`: train the tiny LLaVA-UHD on Ray Train + DeepSpeed, export, track.

params.yaml -> components/training/stage.py: TrainConfig and RaySettings from params -> ray_trainer.fit (the driver
owns the MLflow run; rank 0 logs every step) -> the final checkpoint exported with save_pretrained into
models/<stage>/ -> logged to the run as a pyfunc -> models/<stage>.json (this machine's run record, gitignored: run
id, model URI, checkpoint URI, sha256 of the weights) and reports/train/<stage>_*. Finetune starts from the
weights of models/pretrain (--init-from).
With `cluster.address` = http(s)://head:8265 the stage submits itself there as a Ray job (the job runs this module
with `--local`, so it never resubmits) and copies the job's outputs back: components/training/submit.py.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

from components.config import load_params
from components.training.stage import StageFiles, run_training_stage, submit_training_stage
from components.training.submit import is_job_address


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
    files = StageFiles(args.validated, args.layouts, args.raw, args.models, args.reports, args.init_from)
    if is_job_address(params.cluster.address) and not args.local:
        print(json.dumps(submit_training_stage(params, args.stage, files, args.params), indent=2))
        return 0
    if args.stage == "finetune" and files.init_from is None:
        files = replace(files, init_from=str(Path(args.models) / "pretrain"))
    print(json.dumps(run_training_stage(params, args.stage, files, args.storage_path), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
