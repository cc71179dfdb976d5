"""DVC stage `validate`: LLaVA annotation files + their images -> valid / quarantine tables, GX report, metrics.

    python -m pipelines.validate --stage [--raw data/raw --validated ... --quarantine ... --reports ...]
        the DVC stage: every training set of `data.source` (pretrain, finetune), plus the combined
        data/validated/images.parquet the layouts stage reads


    python -m pipelines.validate --annotations FILE --image-root DIR --out DIR [--quarantine DIR]
        [--reports DIR] [--dataset-name NAME] [--full-decode-fraction F] [--max-pixels N] [--seed S]
        [--workers N] [--max-quarantine-fraction F] [--params params.yaml] [--quiet]

Writes into --out: valid.parquet and images.parquet (one row per valid image, with its displayed size:
what the layouts stage reads); into --quarantine (default: --out): quarantine.parquet (`reason`, `reasons`,
`detail`, raw JSON) and bad_images.parquet; into --reports (default: --out): metrics.json, gx_report.json
and gx_report.html. Flags override the `validate` block of params.yaml (when the file exists), else the
defaults of that block (components/config.py ValidateConfig).

Exit codes: 0 done; 1 done, but the quarantined share is above --max-quarantine-fraction; 2 the input
cannot be read at all (not JSON, no such file or folder) or the checks disagree (nothing published).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from components.config import ConfigError, ValidateConfig, load_params
from components.data.llava_format import AnnotationFormatError
from components.data.validation import ValidationEngineError, validate_annotations


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="validate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--annotations", required=True, help="LLaVA annotation file (JSON list or JSON Lines)")
    parser.add_argument("--image-root", required=True, help="folder the image paths are relative to")
    parser.add_argument("--out", required=True, help="output folder for the Parquet tables")
    parser.add_argument("--quarantine", help="folder for quarantine.parquet, bad_images.parquet (default: --out)")
    parser.add_argument("--reports", help="folder for metrics.json and the GX report (default: --out)")
    parser.add_argument("--dataset-name", help="name in the reports (default: the annotation file's stem)")
    parser.add_argument("--full-decode-fraction", type=float, help="share of images fully decoded, 0..1")
    parser.add_argument("--max-pixels", type=int, help="decompression-bomb limit (default: PIL's)")
    parser.add_argument("--seed", type=int, help="seed of the full-decode sample")
    parser.add_argument("--workers", type=int, help="processes; 0 = one per core, 1 = all in this process")
    parser.add_argument("--max-quarantine-fraction", type=float, help="exit 1 above this quarantined share")
    parser.add_argument("--params", default="params.yaml", help="params file (its `validate` block, if any)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def settings(args: argparse.Namespace) -> ValidateConfig:
    """Flag > params.yaml `validate.<key>` > the ValidateConfig default, for each tunable."""
    base = load_params(args.params).validate if Path(args.params).is_file() else ValidateConfig()
    flags = {f.name: getattr(args, f.name) for f in dataclasses.fields(ValidateConfig)}
    return dataclasses.replace(base, **{key: value for key, value in flags.items() if value is not None})


def run_stage(argv: list[str]) -> int:
    """The DVC stage: every training set of `data.source` (components/data/training_sets.py)."""
    from components.data.training_sets import validate_training_sets

    parser = argparse.ArgumentParser(prog="validate --stage")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--raw", default="data/raw")
    parser.add_argument("--validated", default="data/validated")
    parser.add_argument("--quarantine", default="data/quarantine")
    parser.add_argument("--reports", default="reports/validate")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    params = load_params(args.params)
    metrics = validate_training_sets(args.raw, params.data.source, args.validated, args.quarantine, args.reports,
                                     params.validate, progress=not args.quiet)
    print(json.dumps(metrics, indent=2))
    worst = max(s["quarantined_fraction"] for s in metrics["sets"].values())
    if worst > params.validate.max_quarantine_fraction:
        print(f"validate: a training set has {worst:.2%} of its rows quarantined, above validate."
              f"max_quarantine_fraction; see {args.quarantine}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--stage" in argv:
        return run_stage([a for a in argv if a != "--stage"])
    args = build_parser().parse_args(argv)
    try:
        opts = settings(args)
        report = validate_annotations(
            args.annotations,
            args.image_root,
            args.out,
            dataset_name=args.dataset_name or Path(args.annotations).stem,
            full_decode_fraction=opts.full_decode_fraction,
            max_pixels=opts.max_pixels,
            seed=opts.seed,
            workers=opts.workers,
            report_dir=args.reports,
            quarantine_dir=args.quarantine,
            progress=not args.quiet,
        )
    except (AnnotationFormatError, FileNotFoundError, NotADirectoryError, ConfigError, ValueError,
            ValidationEngineError) as err:
        print(f"validate: {err}", file=sys.stderr)
        return 2
    print(json.dumps(report.summary(), indent=2))
    print(f"validate: valid rows {report.outputs['valid.parquet']}, quarantine {report.outputs['quarantine.parquet']}, "
          f"report {report.outputs['gx_report.html']}")
    share, limit = report.metrics["quarantined_fraction"], opts.max_quarantine_fraction
    if share > limit:
        print(f"validate: {share:.2%} of the rows were quarantined, above the limit of {limit:.2%}; "
              f"see {report.outputs['quarantine.parquet']}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
