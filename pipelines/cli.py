"""`uhd`: the command-line entry point. Each sub-command is a thin shell over components/ or a stage."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from components.compression import COMPRESSORS
from components.slicing import PRESETS
from components.slicing.anyres import ANYRES_PRESETS
from components.slicing.strategies import STRATEGIES

_ALL_PRESETS = sorted(PRESETS) + sorted(ANYRES_PRESETS)


def _layout(args: argparse.Namespace) -> int:
    from components.slicing.headers import read_header
    from components.slicing.layout import Layout
    from components.slicing.overlay import describe, draw_layout
    from components.slicing.pixels import load_image
    from components.slicing.strategies import plan_layout

    image_path = Path(args.image)
    if not image_path.is_file():
        print(f"uhd layout: no such file: {image_path}", file=sys.stderr)
        return 2
    header = read_header(image_path)
    preset = args.preset or {"uhd": "uhd-arxiv", "anyres": "onevision"}.get(args.strategy, args.strategy)
    try:
        layout = plan_layout(header.width, header.height, args.strategy, preset)
    except ValueError as err:
        print(f"uhd layout: {err}", file=sys.stderr)
        return 2
    if isinstance(layout, Layout) and args.compressor:
        layout = layout.with_compressor(args.compressor, spatial_schema=not args.no_spatial_schema)
    print(describe(layout))
    if args.json:
        print(json.dumps(layout.to_record()))
    out = Path(args.out or f"{image_path.stem}.layout.png")
    draw_layout(load_image(image_path), layout).save(out)
    print(f"overlay written to {out}")
    return 0


# Sub-commands that hand their whole argument list to a stage/tool module's own parser.
FORWARDED = {
    "data": ("validate", "`uhd data validate --annotations FILE --image-root DIR --out DIR`: check a LLaVA "
             "annotation file and its images (valid.parquet, quarantine.parquet with a `reason` column)"),
    "download": ("download", "run the download stage"),
    "layouts": ("layouts", "run the layouts stage"),
    "flops": ("flops_cli", "inference TFLOPs, parameters and training memory per model and image size"),
    "submit": ("submit", "`uhd submit --address http://HEAD:8265 --stage finetune`: run a training stage as a Ray job"),
    "evaluate": ("evaluate", "run the evaluate stage (benchmarks -> reports/eval)"),
    "register": ("register", "run the register stage (candidate alias; champion only through the gates)"),
    "promote": ("promote", "`uhd promote [--version N] --reason TEXT`: move the registry alias `champion`"),
    "rollback": ("rollback", "`uhd rollback --reason TEXT`: give `champion` back to the previous champion"),
    "infer": ("infer", "`uhd infer IMAGE \"question\" [--model models:/llava-uhd@champion | RUN | DIR]`"),
}


def _forward(name: str, argv: list[str]) -> int:
    import importlib

    return importlib.import_module(f"pipelines.{FORWARDED[name][0]}").main(argv)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="uhd", description="LLaVA-UHD reproducible pipeline")
    sub = parser.add_subparsers(dest="command", required=True)

    lay = sub.add_parser("layout", help="print an image's slice plan and write a PNG with the grid drawn on it")
    lay.add_argument("image")
    lay.add_argument("--strategy", default="uhd", choices=STRATEGIES)
    lay.add_argument("--preset", choices=_ALL_PRESETS, help="default: uhd-arxiv (uhd), onevision (anyres)")
    lay.add_argument("--compressor", choices=COMPRESSORS,
                     help="count tokens for this compressor instead of the preset's own")
    lay.add_argument("--no-spatial-schema", action="store_true", help="with --compressor: no separators")
    lay.add_argument("--out", help="overlay PNG path (default: <image stem>.layout.png)")
    lay.add_argument("--json", action="store_true", help="also print the layouts-table row as JSON")
    lay.set_defaults(func=_layout)

    for name, (_, helptext) in FORWARDED.items():
        sub.add_parser(name, help=helptext, add_help=False)  # listed in --help; parsed by the module itself
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["data"]:
        if argv[1:2] != ["validate"]:
            print("uhd data: the sub-command is `validate` (uhd data validate --help)", file=sys.stderr)
            return 2
        return _forward("data", argv[2:])
    if argv and argv[0] in FORWARDED:
        return _forward(argv[0], argv[1:])
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
