"""Pixel preprocessing: `encode_image` vs the Hugging Face reference flows, speed and agreement.

What, per test JPEG (1920x1080 and 4032x3024, photo-like, quality 90), best-of-5 wall time each:
  (a) UHD reference: PIL decode, one bicubic resize of the whole image to the slice canvas, row-major
      crops, bicubic overview, then transformers' CLIPImageProcessorPil (no resize, no crop) on every
      tile and on the overview;
  (b) ours: `encode_image(path, plan_layout(w, h, "uhd", "uhd-eccv"))`, with JPEG draft decoding (the
      default) and without it (draft=False), which separates the draft lever from the rest
      (lookup-table normalization, no per-tile processor calls);
  (c) OneVision: transformers' LlavaOnevisionImageProcessorPil configured like the lmms-lab OneVision
      checkpoints vs `encode_image(path, plan_layout(w, h, "anyres", "onevision"))`.
Agreement is the mean absolute difference (MAD, normalized units) over every element of every tile
and the overview (UHD) or of the base image and the crops (OneVision, crop counts must match).

Why: the training data loader spends its CPU here. Target (UHD, draft on): >= 2x faster than (a) with
MAD < 0.01, i.e. the speed-up must not change what the vision tower sees.

Run from the repository root:
    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.preprocess
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil
from transformers.models.llava_onevision.image_processing_pil_llava_onevision import (
    LlavaOnevisionImageProcessorPil,
)

from benchmarks.corpus import GENERATOR_VERSION, make_photo
from components.slicing import pixels
from components.slicing.pixels import encode_image
from components.slicing.strategies import plan_layout

SIZES = ((1920, 1080), (4032, 3024))
JPEG_QUALITY = 90
SPEEDUP_TARGET = 2.0
MAD_TARGET = 0.01
BICUBIC = Image.Resampling.BICUBIC
ONEVISION_SIDE = 384


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", default="/tmp/uhd-bench-preprocess", help="where the test JPEGs are kept")
    parser.add_argument("--repeats", type=int, default=5, help="best of this many runs per figure")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def test_images(directory: str, seed: int) -> list[Path]:
    """The test JPEGs, generated deterministically on first use."""
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, (width, height) in enumerate(SIZES):
        path = root / f"photo_{width}x{height}_s{seed}_v{GENERATOR_VERSION}_q{JPEG_QUALITY}.jpg"
        if not path.exists():
            make_photo(width, height, seed, 1000 + index).save(path, "JPEG", quality=JPEG_QUALITY)
        paths.append(path)
    return paths


def best_of(fn: Callable[[], object], repeats: int) -> tuple[float, object]:
    """Best wall time over `repeats` calls, and the last result."""
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def draft_decoded_size(path: Path, layout) -> list[int] | None:
    """The size libjpeg decodes at under draft mode (None if pixels' private helper has moved)."""
    draft_size = getattr(pixels, "_draft_size", None)
    if draft_size is None:
        return None
    with Image.open(path) as image:
        image.draft("RGB", draft_size(layout))
        return list(image.size)


def decode(path: Path) -> Image.Image:
    with Image.open(path) as image:
        return image.convert("RGB")


# ---------------------------------------------------------------------------------------------------
# Reference flows (Hugging Face processors)


def clip_processor() -> CLIPImageProcessorPil:
    return CLIPImageProcessorPil(do_resize=False, do_center_crop=False)


def onevision_processor() -> LlavaOnevisionImageProcessorPil:
    """As in the lmms-lab OneVision checkpoints' preprocessor_config.json (SigLIP 384, anyres 6x6)."""
    pinpoints = [[ONEVISION_SIDE * i, ONEVISION_SIDE * j] for i in range(1, 7) for j in range(1, 7)]
    return LlavaOnevisionImageProcessorPil(
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
        size={"height": ONEVISION_SIDE, "width": ONEVISION_SIDE},
        image_grid_pinpoints=pinpoints,
        resample=BICUBIC,
        do_pad=True,
    )


def reference_uhd(path: Path, layout, processor: CLIPImageProcessorPil) -> list[np.ndarray]:
    """Tiles row-major, then the overview, each (3, h, w) float32."""
    image = decode(path)
    cols, rows = layout.grid
    w, h = layout.slices[0]
    canvas = image.resize((cols * w, rows * h), BICUBIC)
    tiles = [canvas.crop((c * w, r * h, (c + 1) * w, (r + 1) * h)) for r in range(rows) for c in range(cols)]
    overview = image.resize(layout.overview, BICUBIC)
    return [processor(t, return_tensors="np")["pixel_values"][0] for t in [*tiles, overview]]


def reference_onevision(path: Path, processor: LlavaOnevisionImageProcessorPil) -> np.ndarray:
    """(1 + crops, 3, 384, 384): the base image first, then the crops row-major."""
    return processor(decode(path), return_tensors="np")["pixel_values"][0]


# ---------------------------------------------------------------------------------------------------
# Comparison


def mad(ours: list[np.ndarray], reference: list[np.ndarray]) -> tuple[float, float]:
    """Mean and max absolute difference over all elements of all images (shapes must match)."""
    if len(ours) != len(reference) or any(a.shape != b.shape for a, b in zip(ours, reference, strict=True)):
        raise ValueError(f"shape mismatch: {[a.shape for a in ours]} vs {[b.shape for b in reference]}")
    diff = np.concatenate([np.abs(a - b).ravel() for a, b in zip(ours, reference, strict=True)])
    return float(diff.mean()), float(diff.max())


def bench_uhd(path: Path, size, repeats: int) -> dict:
    layout = plan_layout(*size, "uhd", "uhd-eccv")
    processor = clip_processor()
    t_ref, ref = best_of(lambda: reference_uhd(path, layout, processor), repeats)
    t_draft, ours = best_of(lambda: encode_image(path, layout), repeats)
    t_full, ours_full = best_of(lambda: encode_image(path, layout, draft=False), repeats)
    decoded = draft_decoded_size(path, layout)
    mad_draft, max_draft = mad(ours.images, ref)
    mad_full, max_full = mad(ours_full.images, ref)
    return {
        "layout": f"grid {layout.grid[0]}x{layout.grid[1]} of {layout.slices[0][0]}x{layout.slices[0][1]}, "
                  f"overview {layout.overview[0]}x{layout.overview[1]}",
        "draft_decoded": list(decoded),
        "reference_ms": t_ref * 1e3,
        "ours_ms": t_draft * 1e3,
        "ours_nodraft_ms": t_full * 1e3,
        "speedup": t_ref / t_draft,
        "speedup_nodraft": t_ref / t_full,
        "mad": mad_draft,
        "max_abs": max_draft,
        "mad_nodraft": mad_full,
        "max_abs_nodraft": max_full,
        "target_met": t_ref / t_draft >= SPEEDUP_TARGET and mad_draft < MAD_TARGET,
    }


def bench_onevision(path: Path, size, repeats: int) -> dict:
    layout = plan_layout(*size, "anyres", "onevision")
    processor = onevision_processor()
    t_ref, ref = best_of(lambda: reference_onevision(path, processor), repeats)
    t_ours, ours = best_of(lambda: encode_image(path, layout), repeats)
    ref_crops, our_crops = len(ref) - 1, len(ours.slices)
    out = {
        "layout": f"canvas {layout.best_resolution[0]}x{layout.best_resolution[1]}, "
                  f"grid {layout.grid[0]}x{layout.grid[1]}",
        "reference_ms": t_ref * 1e3,
        "ours_ms": t_ours * 1e3,
        "speedup": t_ref / t_ours,
        "crops_reference": ref_crops,
        "crops_ours": our_crops,
        "crops_match": ref_crops == our_crops,
    }
    if out["crops_match"]:
        out["mad_base"], out["max_abs_base"] = mad([ours.overview], [ref[0]])
        out["mad_crops"], out["max_abs_crops"] = mad(list(ours.slices), list(ref[1:]))
        out["mad"], out["max_abs"] = mad(ours.images[-1:] + ours.images[:-1], list(ref))
    return out


# ---------------------------------------------------------------------------------------------------
# Report


def verdict(ok: bool) -> str:
    return "MET" if ok else "NOT MET"


def print_report(results: list[dict]) -> None:
    print(f"{'image':<11}{'flow':<58}{'best ms':>9}{'speed-up':>10}{'MAD':>11}{'max |d|':>9}")
    for r in results:
        u, o = r["uhd"], r["onevision"]
        name = r["image"]
        print(f"{name:<11}{'(a) UHD reference: PIL + CLIPImageProcessorPil':<58}{u['reference_ms']:>9.1f}"
              f"{'1.00x':>10}")
        print(f"{'':<11}{'(b) encode_image, draft=True':<58}{u['ours_ms']:>9.1f}{u['speedup']:>9.2f}x"
              f"{u['mad']:>11.2e}{u['max_abs']:>9.1e}")
        print(f"{'':<11}{'    encode_image, draft=False':<58}{u['ours_nodraft_ms']:>9.1f}"
              f"{u['speedup_nodraft']:>9.2f}x{u['mad_nodraft']:>11.2e}{u['max_abs_nodraft']:>9.1e}")
        print(f"{'':<11}{'(c) OneVision reference: LlavaOnevisionImageProcessorPil':<58}"
              f"{o['reference_ms']:>9.1f}{'1.00x':>10}")
        mad_o = f"{o['mad']:>11.2e}{o['max_abs']:>9.1e}" if o["crops_match"] else f"{'n/a':>11}{'n/a':>9}"
        print(f"{'':<11}{'    encode_image, anyres/onevision':<58}{o['ours_ms']:>9.1f}{o['speedup']:>9.2f}x{mad_o}")
        decoded = "x".join(map(str, u["draft_decoded"])) if u["draft_decoded"] else "n/a"
        print(f"{'':<11}  UHD {u['layout']}; JPEG decoded at {decoded} under draft=True")
        print(f"{'':<11}  OneVision {o['layout']}; crops HF {o['crops_reference']} vs ours {o['crops_ours']}"
              + (f" (base MAD {o['mad_base']:.2e}, crops MAD {o['mad_crops']:.2e})" if o["crops_match"] else ""))
        print(f"{'':<11}  target UHD >= {SPEEDUP_TARGET:.0f}x with MAD < {MAD_TARGET}: {verdict(u['target_met'])}")


def main(argv=None) -> dict:
    args = parse_args(argv)
    results = []
    for path, size in zip(test_images(args.dir, args.seed), SIZES, strict=True):
        decode(path)  # page cache and PIL plugin imports
        results.append({
            "image": f"{size[0]}x{size[1]}",
            "uhd": bench_uhd(path, size, args.repeats),
            "onevision": bench_onevision(path, size, args.repeats),
        })
    print(f"\npreprocessing, one core, best of {args.repeats}; MAD in normalized units over all tiles and "
          "the overview (UHD) / the base image and all crops (OneVision)\n")
    print_report(results)
    figures = {
        "benchmark": "preprocess",
        "repeats": args.repeats,
        "results": _rounded(results),
        "targets": {"uhd_speedup_ge_2x_and_mad_lt_0.01": all(r["uhd"]["target_met"] for r in results),
                    "onevision_crop_counts_match": all(r["onevision"]["crops_match"] for r in results)},
    }
    print(json.dumps(figures))
    return figures


def _rounded(value):
    if isinstance(value, float):
        return float(f"{value:.4g}")
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


if __name__ == "__main__":
    main()
