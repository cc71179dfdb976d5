"""`uhd layout IMAGE [--strategy S] [--preset P] [--compressor C]`: print an image's slice plan and write a PNG
with the grid drawn on it (`<image stem>.layout.png` unless --out)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from components.compression import COMPRESSORS
from components.slicing import ANYRES_PRESETS, PRESETS, STRATEGIES, Layout, default_preset, plan_layout
from components.slicing.headers import read_header
from components.slicing.overlay import describe, draw_layout
from components.slicing.pixels import load_image


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
    if not image_path.is_file():
        print(f"uhd layout: no such file: {image_path}", file=sys.stderr)
        return 2
    header = read_header(image_path)
    try:
        layout = plan_layout(header.width, header.height, args.strategy, args.preset or default_preset(args.strategy))
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


if __name__ == "__main__":
    sys.exit(main())
