"""DVC stage `layouts`: the slice layout of every image, from headers only, as Parquet.

Reads an image table (column `path` relative to --image-root; optional `width`/`height` are trusted
and skip the file), writes one row per image with grid, slice sizes, overview, ViT patches, visual
tokens and an `error` column (unreadable files keep their row). Also writes DVC metrics and plots.
With `slicing.train_time` on, rows follow the training code's resizes (the size in `pre_resized_*`) and carry
pretraining's overview-only counts (`overview_tokens_*`).
"""

from __future__ import annotations

import argparse
import json
import sys

from components.config import load_params
from components.slicing.report import write_report
from components.slicing.runner import write_layouts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--images", required=True, help="Parquet image table with a `path` column")
    parser.add_argument("--image-root", required=True, help="folder the paths are relative to")
    parser.add_argument("--out", default="data/layouts/layouts.parquet")
    parser.add_argument("--reports", default="reports/layouts", help="metrics.json, plot tables, PNG")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    params = load_params(args.params)
    slicing = params.slicing

    summary = write_layouts(
        args.images,
        args.image_root,
        args.out,
        strategy=slicing.strategy,
        preset=slicing.active_preset,
        batch_rows=params.layouts.batch_rows,
        workers=params.layouts.workers,
        ray_address=params.cluster.address,
        progress=not args.quiet,
        train_time=slicing.train_time.resize,
        overview_only=slicing.train_time.pretrain_overview_only,
    )
    metrics = write_report(summary, args.reports, f"{slicing.strategy}/{slicing.active_preset}")
    print(json.dumps(metrics, indent=2))
    if metrics["errors"]:
        print(f"layouts: {metrics['errors']} image(s) could not be read; see the `error` column of {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
