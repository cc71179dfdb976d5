"""`uhd`: the command-line entry point. It picks the sub-command's module and hands it the rest of argv.

Tools (`layout`, `flops`, `convert`, `infer`, `submit`, `promote`, `rollback`) are modules of this package; the stage
sub-commands (`download`, `data validate`, `layouts`, `evaluate`, `register`) run the DVC stage module
itself, so `uhd evaluate` and `dvc repro evaluate` cannot differ.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# sub-command -> (module whose main(argv) parses and runs it, help line)
SUBCOMMANDS = {
    "layout": ("cli.layout", "print an image's slice plan and write a PNG with the grid drawn on it"),
    "data": ("pipelines.validate", "`uhd data validate --annotations FILE --image-root DIR --out DIR`: check a "
             "LLaVA annotation file and its images (valid.parquet, quarantine.parquet with a `reason` column)"),
    "download": ("pipelines.download", "run the download stage"),
    "layouts": ("pipelines.layouts", "run the layouts stage"),
    "flops": ("cli.flops", "inference TFLOPs, parameters and training memory per model and image size"),
    "submit": ("cli.submit", "`uhd submit --address http://HEAD:8265 --stage finetune`: run a training stage as a "
               "Ray job"),
    "evaluate": ("pipelines.evaluate", "run the evaluate stage (benchmarks -> reports/eval)"),
    "evaluate-released": ("pipelines.evaluate_released", "score `eval.model` (a released checkpoint, converted on "
                          "the fly) without training -> reports/released (released/dvc.yaml)"),
    "register": ("pipelines.register", "run the register stage (candidate alias; champion only through the gates)"),
    "promote": ("cli.promote", "`uhd promote [--version N] --reason TEXT`: move the registry alias `champion`"),
    "rollback": ("cli.rollback", "`uhd rollback --reason TEXT`: give `champion` back to the previous champion"),
    "convert": ("cli.convert", "`uhd convert SRC DST --format llava|llava-hf|llava-onevision-hf|llava-onevision "
                "[--vision-tower DIR]`: a released checkpoint as a project model directory"),
    "infer": ("cli.infer", "`uhd infer IMAGE \"question\" [--model models:/llava-uhd@champion | RUN | DIR]`"),
}


def build_parser() -> argparse.ArgumentParser:
    """Only for `uhd --help` and unknown commands: each sub-command's module parses its own arguments."""
    parser = argparse.ArgumentParser(prog="uhd", description="LLaVA-UHD reproducible pipeline")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (_, helptext) in SUBCOMMANDS.items():
        sub.add_parser(name, help=helptext, add_help=False)
    return parser


def run_subcommand(name: str, argv: list[str]) -> int:
    return importlib.import_module(SUBCOMMANDS[name][0]).main(argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["data"]:
        if argv[1:2] != ["validate"]:
            print("uhd data: the sub-command is `validate` (uhd data validate --help)", file=sys.stderr)
            return 2
        return run_subcommand("data", argv[2:])
    if argv and argv[0] in SUBCOMMANDS:
        return run_subcommand(argv[0], argv[1:])
    build_parser().parse_args(argv)  # prints help / the usage error and exits
    return 2


if __name__ == "__main__":
    sys.exit(main())
