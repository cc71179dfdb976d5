"""Layouts-stage throughput: header-only layout planning vs decoding every image first.

What: on one core, in-process,
  (a) the real `layout_batch` over a whole image table that has no width/height columns, so every
      size comes from `read_header` (no pixel decode) -> images/s, also split by file format;
  (b) the naive baseline "decode then measure": PIL `Image.open(p).convert("RGB")` (a full decode),
      `.size`, then `plan_layout` -> images/s, timed on a random sample of K files because it is slow;
and the end-to-end `write_layouts` (Parquet in, Parquet out) with workers=2.

Why: the layouts stage must scan a large corpus in minutes, which is only possible if it never decodes
pixels. Targets: (a) >= 5,000 images/s on one core, and (a) >= 30x (b).

Method: the corpus (benchmarks/corpus.py) is generated once and cached; every file is read once before
timing (page cache), the plan caches are cleared before every run, and each figure is the best of up
to 3 runs (fewer when one run is slow, see --budget).

Run from the repository root:
    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.layout_throughput
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from PIL import Image

from benchmarks.corpus import ensure_corpus
from components.slicing import anyres, uhd
from components.slicing.anyres import ANYRES_PRESETS
from components.slicing.runner import write_layouts
from components.slicing.strategies import plan_layout
from components.slicing.table import layout_batch

RATIO_TARGET = 30.0
HEADER_RATE_TARGET = 5000.0
WRITE_BATCH_ROWS = 256  # several batches per worker even for a 2,000-image table (default is 4096)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000, help="corpus size")
    parser.add_argument("--dir", default="/tmp/uhd-bench-corpus", help="corpus cache directory")
    parser.add_argument("--preset", default="uhd-eccv", help="UHD preset, or an AnyRes preset (onevision)")
    parser.add_argument("--baseline-sample", type=int, default=200, help="files decoded for baseline (b)")
    parser.add_argument("--seed", type=int, default=0, help="corpus and sample seed")
    parser.add_argument("--repeats", type=int, default=3, help="best of this many runs ...")
    parser.add_argument("--budget", type=float, default=20.0, help="... while their total stays under this (s)")
    return parser.parse_args(argv)


# ---------------------------------------------------------------------------------------------------
# Timing helpers


def clear_plan_caches() -> None:
    """Planning is lru_cached per size; clear it so no run profits from the previous one."""
    for cached in (getattr(uhd, "_plan_cached", None), getattr(anyres, "_plan_anyres_cached", None)):
        if hasattr(cached, "cache_clear"):
            cached.cache_clear()


def best_of(fn: Callable[[], object], repeats: int, budget_s: float) -> float:
    """Best wall time of up to `repeats` calls; stops early once `budget_s` has been spent."""
    best, spent = float("inf"), 0.0
    for _ in range(repeats):
        clear_plan_caches()
        start = time.perf_counter()
        fn()
        elapsed = time.perf_counter() - start
        best, spent = min(best, elapsed), spent + elapsed
        if spent >= budget_s:
            break
    return best


def warm_page_cache(root: Path, paths: list[str]) -> int:
    total = 0
    for path in paths:
        with open(root / path, "rb") as f:
            while chunk := f.read(1 << 22):
                total += len(chunk)
    return total


# ---------------------------------------------------------------------------------------------------
# The measured work


def strategy_of(preset: str) -> str:
    return "anyres" if preset in ANYRES_PRESETS else "uhd"


def header_only(table: pa.Table, root: Path, preset: str) -> pa.RecordBatch:
    """(a): the layouts stage's own per-batch function; sizes come from the file headers."""
    return layout_batch(table, str(root), strategy_of(preset), preset)


def decode_then_measure(paths: list[str], root: Path, preset: str) -> None:
    """(b): what a loader that knows no better does: decode the whole image to learn its size."""
    strategy = strategy_of(preset)
    for path in paths:
        with Image.open(root / path) as image:
            width, height = image.convert("RGB").size
        plan_layout(width, height, strategy, preset)


def open_size_only(paths: list[str], root: Path) -> None:
    """Floor for (a): PIL's lazy open and .size, no EXIF, no layout, no Arrow."""
    for path in paths:
        with Image.open(root / path) as image:
            image.size  # noqa: B018


def run_write_layouts(table_path: Path, root: Path, preset: str, workers: int) -> None:
    with tempfile.TemporaryDirectory(prefix="uhd-bench-layouts-") as tmp:
        write_layouts(table_path, root, Path(tmp) / "layouts.parquet", strategy_of(preset), preset,
                      batch_rows=WRITE_BATCH_ROWS, workers=workers, progress=False)


# ---------------------------------------------------------------------------------------------------
# Report


def rate(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else float("inf")


def print_table(rows: list[tuple[str, int, float]]) -> None:
    print(f"{'measurement':<58}{'images':>8}{'best s':>10}{'images/s':>12}")
    for label, n, seconds in rows:
        print(f"{label:<58}{n:>8}{seconds:>10.3f}{rate(n, seconds):>12,.0f}")


def verdict(ok: bool) -> str:
    return "MET" if ok else "NOT MET"


def main(argv=None) -> dict:
    args = parse_args(argv)
    corpus = ensure_corpus(args.dir, args.images, args.seed)
    root = corpus.root
    table = pq.read_table(corpus.table, columns=["path"])
    paths = table.column("path").to_pylist()
    is_png = pc.ends_with(table.column("path"), ".png")
    jpeg_table, png_table = table.filter(pc.invert(is_png)), table.filter(is_png)
    sample = sorted(np.random.default_rng(args.seed).choice(len(paths), args.baseline_sample, replace=False))
    sample_paths = [paths[i] for i in sample]
    sample_table = table.take(pa.array(sample))

    warm_page_cache(root, paths)
    laid_out = header_only(table, root, args.preset)  # warm-up; also gives the sizes for the stats
    errors = laid_out.num_rows - pc.sum(pc.is_null(laid_out.column("error"))).as_py()
    megapixels = (pc.multiply(pc.cast(laid_out.column("width"), pa.float64()), laid_out.column("height"))
                  .to_numpy(zero_copy_only=False) / 1e6)

    def timed(fn):
        return best_of(fn, args.repeats, args.budget)

    t_a = timed(lambda: header_only(table, root, args.preset))
    t_a_jpeg = timed(lambda: header_only(jpeg_table, root, args.preset))
    t_a_png = timed(lambda: header_only(png_table, root, args.preset))
    t_open = timed(lambda: open_size_only(paths, root))
    t_a_sample = timed(lambda: header_only(sample_table, root, args.preset))
    t_b = timed(lambda: decode_then_measure(sample_paths, root, args.preset))
    t_write = timed(lambda: run_write_layouts(corpus.table, root, args.preset, workers=2))

    n, k = len(paths), len(sample_paths)
    r_a, r_b = rate(n, t_a), rate(k, t_b)
    ratio, ratio_sample = r_a / r_b, rate(k, t_a_sample) / r_b
    print(f"\nlayouts throughput: preset {args.preset}, {n} images ({jpeg_table.num_rows} JPEG, "
          f"{png_table.num_rows} PNG; mean {megapixels.mean():.2f} MP, {errors} error rows), "
          f"{os.cpu_count()} cores on this machine, one core unless stated")
    print(f"baseline (b) decodes a random sample of {k} files (mean {megapixels[sample].mean():.2f} MP), "
          "not the whole corpus: decoding is slow\n")
    print_table([
        ("(a) header-only layout_batch, whole table", n, t_a),
        ("    (a) JPEG files only", jpeg_table.num_rows, t_a_jpeg),
        ("    (a) PNG files only", png_table.num_rows, t_a_png),
        ("    floor: Image.open + .size only, whole table", n, t_open),
        ("    (a) on the baseline's sample", k, t_a_sample),
        ("(b) decode-then-measure, sample", k, t_b),
        (f"write_layouts, workers=2, batch_rows={WRITE_BATCH_ROWS} (incl. Parquet)", n, t_write),
    ])
    print(f"\nratio (a)/(b): {ratio:,.1f}x (same-sample {ratio_sample:,.1f}x)   "
          f"target >= {RATIO_TARGET:.0f}x: {verdict(ratio >= RATIO_TARGET)}")
    print(f"(a) rate: {r_a:,.0f} images/s   target >= {HEADER_RATE_TARGET:,.0f}: "
          f"{verdict(r_a >= HEADER_RATE_TARGET)}")
    figures = {
        "benchmark": "layout_throughput",
        "preset": args.preset,
        "images": n,
        "jpeg": jpeg_table.num_rows,
        "png": png_table.num_rows,
        "error_rows": errors,
        "header_only_ips": round(r_a, 1),
        "header_only_jpeg_ips": round(rate(jpeg_table.num_rows, t_a_jpeg), 1),
        "header_only_png_ips": round(rate(png_table.num_rows, t_a_png), 1),
        "open_size_only_ips": round(rate(n, t_open), 1),
        "header_only_sample_ips": round(rate(k, t_a_sample), 1),
        "decode_baseline_ips": round(r_b, 1),
        "decode_baseline_sample": k,
        "ratio": round(ratio, 2),
        "ratio_same_sample": round(ratio_sample, 2),
        "write_layouts_workers2_ips": round(rate(n, t_write), 1),
        "write_layouts_batch_rows": WRITE_BATCH_ROWS,
        "targets": {
            "ratio_ge_30x": ratio >= RATIO_TARGET,
            "header_only_ge_5000_ips": r_a >= HEADER_RATE_TARGET,
        },
    }
    print(json.dumps(figures))
    return figures


if __name__ == "__main__":
    main()
