"""`uhd submit`: run the pretrain or finetune stage as a Ray job on a running cluster and wait for it.

    uhd submit --address http://HEAD:8265 --stage finetune [--params params.yaml] [--no-wait]
    uhd submit --address http://HEAD:8265 --stage finetune --attach JOB_ID   # follow + fetch a submitted job
    uhd submit ... -- --raw /mnt/shared/data/raw                              # extra pipelines.train arguments

The job runs `python -m pipelines.train --stage S --local ...` with this checkout as its working_dir, writes its
outputs under shared storage (`--output-dir`, default <train.ray.storage_path>/outputs/<stage>/<job id>: every
job its own folder), and this command copies that job's outputs back into models/ and reports/train/ and prints
the pointer JSON (contract:
components/training/submit.py). Token auth: export RAY_AUTH_MODE=token with the cluster's ~/.ray/auth_token.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from components.config import load_params
from components.training.submit import JobFailed, SubmitSpec, run


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="uhd submit", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--address", required=True, help="Ray dashboard / job server, e.g. http://127.0.0.1:8265")
    parser.add_argument("--stage", choices=("pretrain", "finetune"), required=True)
    parser.add_argument("--params", default="params.yaml", help="relative to the repository root (it is uploaded)")
    parser.add_argument("--output-dir", default=None,
                        help="shared path the job writes its outputs to (default: <train.ray.storage_path>/outputs/"
                             "<stage>/<job id>, one folder per job; with --attach, the attached job's)")
    parser.add_argument("--runtime-pip", action=argparse.BooleanOptionalAction, default=False,
                        help="install requirements.lock into the job env (default: the cluster image has the pins)")
    parser.add_argument("--exclude", action="append", default=[], help="extra working_dir exclude pattern")
    parser.add_argument("--no-wait", action="store_true", help="print the job id and return after submitting")
    parser.add_argument("--no-fetch", action="store_true", help="do not copy the outputs into the checkout")
    parser.add_argument("--attach", default=None, metavar="JOB_ID", help="follow an already submitted job")
    parser.add_argument("--entrypoint", default=None, help=argparse.SUPPRESS)  # tests: a stand-in job
    parser.add_argument("train_args", nargs="*", help="after `--`: extra pipelines.train arguments")
    return parser.parse_args(argv)


def spec_from_args(args: argparse.Namespace, repo: Path) -> tuple[SubmitSpec, str]:
    params = load_params(repo / args.params)
    spec = SubmitSpec(address=args.address, stage=args.stage, repo=repo, params=args.params,
                      storage_path=params.train.ray.storage_path, output_dir=args.output_dir,
                      runtime_pip=args.runtime_pip, excludes=tuple(args.exclude), train_args=tuple(args.train_args),
                      entrypoint=args.entrypoint, job_id=args.attach)
    from components.tracking.mlflow_logging import resolve_tracking_uri

    return spec, resolve_tracking_uri(params.tracking.uri, root=repo)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    logging.getLogger("ray").setLevel(logging.WARNING)  # Ray's per-file packaging INFO lines drown the job log
    spec, tracking_uri = spec_from_args(args, Path.cwd().resolve())
    try:
        result = run(spec, wait_for_it=not args.no_wait, fetch=not args.no_fetch, attach=args.attach,
                     tracking_uri=tracking_uri)
    except (JobFailed, FileNotFoundError) as err:
        print(f"uhd submit: {err}", file=sys.stderr)
        return 1
    if args.no_wait:
        print(f"submitted {result['job_id']}; follow: uhd submit --address {args.address} --stage {args.stage} "
              f"--attach {result['job_id']}", file=sys.stderr)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
