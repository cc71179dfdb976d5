"""`uhd layout IMAGE [--strategy S] [--preset P] [--compressor C]`: print an image's slice plan and write a PNG
with the grid drawn on it (`<image stem>.layout.png` unless --out)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from components.compression import COMPRESSORS
from components.slicing import ANYRES_PRESETS, PRESETS, STRATEGIES, Layout, default_preset, plan_layout
from components.slicing.image_files import check_image_file, decode_image_file
from components.slicing.overlay import describe, draw_layout


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="uhd layout", description=__doc__)
    parser.add_argument("image")
    parser.add_argument("--strategy", default="uhd", choices=STRATEGIES)
    parser.add_argument("--preset", choices=sorted(PRESETS) + sorted(ANYRES_PRESETS),
                        help="default: uhd-arxiv (uhd), onevision (anyres)")
    parser.add_argument("--compressor", choices=COMPRESSORS,
                        help="count tokens for this compressor instead of the preset's own")
    parser.add_argument("--no-spatial-schema", action="store_true", help="with --compressor: no separators")
    parser.add_argument("--out", help="overlay PNG path (default: <image stem>.layout.png)")
    parser.add_argument("--json", action="store_true", help="also print the layouts-table row as JSON")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    image_path = Path(args.image)
    out = Path(args.out or f"{image_path.stem}.layout.png")
    try:
        if out.is_dir():
            raise ValueError(f"--out {out} is a directory: give a file path for the overlay PNG")
        header = check_image_file(image_path)
        layout = plan_layout(header.width, header.height, args.strategy, args.preset or default_preset(args.strategy))
        image = decode_image_file(image_path)
    except ValueError as err:  # UnusableImage included: one line, no traceback
        print(f"uhd layout: {err}", file=sys.stderr)
        return 2
    if isinstance(layout, Layout) and args.compressor:
        layout = layout.with_compressor(args.compressor, spatial_schema=not args.no_spatial_schema)
    print(describe(layout))
    if args.json:
        print(json.dumps(layout.to_record()))
    draw_layout(image, layout).save(out)
    print(f"overlay written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
