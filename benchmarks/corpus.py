"""A deterministic, photo-like image corpus for the benchmarks (cached on disk).

Why: the layouts and preprocessing benchmarks need many real image *files* (JPEG and PNG, tiny to
4032x3024, aspect 1:4 to 4:1) whose cost to open and decode resembles real data, without
downloading anything. Pure noise would be unrealistic (it defeats JPEG/PNG compression and makes
every resize error look huge), so each image is a smooth gradient-and-blob texture, a few sharp-edged
shapes, a few rendered text strings, a mid-frequency surface grain and mild sensor-like noise.

Speed: colour content is made at low resolution from a handful of shared base textures and upscaled
by PIL; shapes and text are drawn by PIL and grain + noise is one tiled, precomputed pattern added in
C (ImageChops.add).
Files are independent (file i depends only on (seed, i)), so they are written by a process pool and
the corpus is byte-identical whatever the number of workers.

Layout of the cache directory:
    manifest.json    generation parameters (a corpus is reused when they match) and statistics
    images.parquet   the image table: one column `path`, relative to the directory
    xx/NNNNNN.jpg    the images (xx: 16 sub-folders), .png for about a quarter of them

Run directly to (re)build a corpus:  python -m benchmarks.corpus --images 2000 --dir /tmp/uhd-bench-corpus
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from dataclasses import dataclass
from functools import lru_cache
from multiprocessing import Pool
from pathlib import Path

import matplotlib
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageChops, ImageDraw, ImageFont

GENERATOR_VERSION = 4  # bump when the content or size distribution changes: invalidates caches
MANIFEST = "manifest.json"
TABLE = "images.parquet"

MAX_SIZE = (4032, 3024)  # a 12 MP phone photo, the largest file of the corpus
MIN_AREA = 32 * 32
MIN_SIDE = 16
MAX_ASPECT = 4.0
PHONE_PHOTO_SHARE = 0.03  # exact 4032x3024 / 3024x4032 files on top of the log-uniform tail
JPEG_SHARE = 0.75
PNG_MAX_AREA = 2560 * 1600  # PNGs are screenshot-sized at most (and PNG encoding is the slow part)

TEXTURE_SIDE = 96  # base textures are this small; every image is a crop of one, upscaled
N_TEXTURES = 6
GRAIN_TILE = (509, 521)  # (h, w) of the precomputed grain pattern; odd sides hide the tiling period
DETAIL_STD = 10.0  # grey levels: mid-frequency luminance "surface" texture (features of ~4-8 px)
NOISE_STD = 3.0  # grey levels: per-channel sensor-like noise
GRAIN_OFFSET = 40  # the grain is stored as uint8 around this value and added with offset -GRAIN_OFFSET

FONT_PATH = os.path.join(matplotlib.get_data_path(), "fonts", "ttf", "DejaVuSans.ttf")
WORDS = (
    "LLaVA-UHD", "TOTAL $37.20", "Exit 12", "Invoice 2024-03-17", "OPEN 9-17", "Figure 3: accuracy",
    "km/h 80", "Sale -30%", "Platform 4", "tokens 1014", "www.example.org", "No parking",
)


# ---------------------------------------------------------------------------------------------------
# Content


@lru_cache(maxsize=4)
def _textures(seed: int) -> tuple[np.ndarray, ...]:
    """N_TEXTURES float32 (TEXTURE_SIDE, TEXTURE_SIDE, 3) images: a two-colour gradient plus blobs."""
    rng = np.random.default_rng([seed, 0x7E57])
    yy, xx = np.mgrid[0.0 : 1.0 : TEXTURE_SIDE * 1j, 0.0 : 1.0 : TEXTURE_SIDE * 1j]
    out = []
    for _ in range(N_TEXTURES):
        c0, c1 = rng.uniform(20, 235, size=(2, 3))
        angle = rng.uniform(0, 2 * math.pi)
        ramp = np.clip(0.5 + (xx - 0.5) * math.cos(angle) + (yy - 0.5) * math.sin(angle), 0, 1)
        img = c0 + (c1 - c0) * ramp[..., None]
        for _ in range(rng.integers(8, 16)):
            cx, cy = rng.uniform(0, 1, 2)
            sigma = rng.uniform(0.03, 0.25)
            blob = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * sigma**2))
            img += blob[..., None] * rng.uniform(-90, 90, 3)
        out.append(np.clip(img, 0, 255).astype(np.float32))
    return tuple(out)


@lru_cache(maxsize=4)
def _grain_tile(seed: int) -> np.ndarray:
    """uint8 (h, w, 3): smooth luminance detail + per-channel noise, centred on GRAIN_OFFSET."""
    rng = np.random.default_rng([seed, 0x4015E])
    h, w = GRAIN_TILE
    coarse = rng.normal(0, 1, (h // 4 + 1, w // 4 + 1)).astype(np.float32)
    field = Image.fromarray(coarse, "F").resize((w, h), Image.Resampling.BICUBIC)
    detail = np.asarray(field, dtype=np.float64)
    detail *= DETAIL_STD / detail.std()
    grain = detail[..., None] + rng.normal(0, NOISE_STD, (h, w, 3))
    return np.clip(grain + GRAIN_OFFSET, 0, 2 * GRAIN_OFFSET).round().astype(np.uint8)


@lru_cache(maxsize=64)
def _font(size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(FONT_PATH, size)


def _low_res_content(width: int, height: int, rng: np.random.Generator, seed: int) -> Image.Image:
    """A crop of a base texture with the target's aspect ratio, channels shuffled; still tiny."""
    texture = _textures(seed)[rng.integers(N_TEXTURES)]
    aspect = width / height
    side = rng.uniform(0.35, 1.0) * TEXTURE_SIDE  # the crop's long side
    cw, ch = (side, side / aspect) if aspect >= 1 else (side * aspect, side)
    cw, ch = (max(4, min(TEXTURE_SIDE, round(v))) for v in (cw, ch))
    x0 = rng.integers(0, TEXTURE_SIDE - cw + 1)
    y0 = rng.integers(0, TEXTURE_SIDE - ch + 1)
    crop = texture[y0 : y0 + ch, x0 : x0 + cw][..., rng.permutation(3)]
    return Image.fromarray(crop.astype(np.uint8), "RGB")


def _draw_text(image: Image.Image, rng: np.random.Generator) -> None:
    draw = ImageDraw.Draw(image)
    width, height = image.size
    for _ in range(rng.integers(1, 5)):
        size = max(6, round(min(width, height) * rng.uniform(0.04, 0.12)))
        size = int(2 ** (round(math.log2(size) * 4) / 4))  # a few distinct sizes, so fonts are cached
        text = " ".join(rng.choice(WORDS, size=rng.integers(1, 3)))
        xy = (rng.uniform(-0.1, 0.9) * width, rng.uniform(-0.05, 0.95) * height)
        dark = rng.random() < 0.5
        colour = tuple(int(v) for v in (rng.integers(0, 60, 3) if dark else rng.integers(200, 256, 3)))
        draw.text(xy, text, fill=colour, font=_font(size))


def _draw_shapes(image: Image.Image, rng: np.random.Generator) -> None:
    """Opaque "objects" with sharp edges: ellipses, polygons and a few thin lines."""
    draw = ImageDraw.Draw(image)
    width, height = image.size
    for _ in range(rng.integers(3, 12)):
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        cx, cy = rng.uniform(0, 1, 2) * (width, height)
        rx, ry = rng.uniform(0.02, 0.2, 2) * min(width, height)
        kind = rng.integers(3)
        if kind == 0:
            draw.ellipse((cx - rx, cy - ry, cx + rx, cy + ry), fill=colour)
        elif kind == 1:
            angles = np.sort(rng.uniform(0, 2 * math.pi, rng.integers(3, 7)))
            draw.polygon([(cx + rx * math.cos(a), cy + ry * math.sin(a)) for a in angles], fill=colour)
        else:
            line_width = max(1, round(min(width, height) * rng.uniform(0.002, 0.01)))
            draw.line((cx - rx, cy - ry, cx + rx, cy + ry), fill=colour, width=line_width)


@lru_cache(maxsize=2)
def _grain_canvas(seed: int) -> Image.Image:
    """The grain tile repeated over (MAX + tile) pixels, so any image's grain is one PIL crop."""
    tile = _grain_tile(seed)
    th, tw = tile.shape[:2]
    side = max(MAX_SIZE)
    reps = (-(-side // th) + 1, -(-side // tw) + 1, 1)
    return Image.fromarray(np.tile(tile, reps), "RGB")


def _add_grain(image: Image.Image, rng: np.random.Generator, seed: int) -> Image.Image:
    th, tw = GRAIN_TILE
    oy, ox = int(rng.integers(th)), int(rng.integers(tw))
    width, height = image.size
    grain = _grain_canvas(seed).crop((ox, oy, ox + width, oy + height))
    return ImageChops.add(image, grain, scale=1.0, offset=-GRAIN_OFFSET)


def make_photo(width: int, height: int, seed: int = 0, index: int = 0) -> Image.Image:
    """A deterministic photo-like RGB image of exactly `width` x `height` (depends on (seed, index))."""
    rng = np.random.default_rng([seed, index, width, height])
    image = _low_res_content(width, height, rng, seed).resize((width, height), Image.Resampling.BICUBIC)
    _draw_shapes(image, rng)
    _draw_text(image, rng)
    return _add_grain(image, rng, seed)


# ---------------------------------------------------------------------------------------------------
# Corpus plan and files


@dataclass(frozen=True)
class FileSpec:
    index: int
    path: str  # relative to the corpus directory
    width: int  # stored pixel size (before any EXIF orientation)
    height: int
    mode: str  # RGB, RGBA, L
    quality: int  # JPEG only
    orientation: int  # EXIF orientation tag written into JPEGs (1: none written)


def _sample_size(rng: np.random.Generator) -> tuple[int, int]:
    """Log-uniform area from 32x32 to 12 MP, log-uniform aspect in [1/4, 4], plus exact phone photos."""
    if rng.random() < PHONE_PHOTO_SHARE:
        return MAX_SIZE if rng.random() < 0.6 else MAX_SIZE[::-1]
    area = math.exp(rng.uniform(math.log(MIN_AREA), math.log(MAX_SIZE[0] * MAX_SIZE[1])))
    aspect = math.exp(rng.uniform(-math.log(MAX_ASPECT), math.log(MAX_ASPECT)))
    width, height = math.sqrt(area * aspect), math.sqrt(area / aspect)
    long_cap, short_cap = MAX_SIZE
    if width >= height:
        width, height = min(width, long_cap), min(height, short_cap)
    else:
        width, height = min(width, short_cap), min(height, long_cap)
    return max(MIN_SIDE, round(width)), max(MIN_SIDE, round(height))


def _cap_area(width: int, height: int, max_area: int) -> tuple[int, int]:
    scale = min(1.0, math.sqrt(max_area / (width * height)))
    return max(MIN_SIDE, int(width * scale)), max(MIN_SIDE, int(height * scale))


def plan_corpus(n: int, seed: int) -> list[FileSpec]:
    specs = []
    for i in range(n):
        rng = np.random.default_rng([seed, i, 0xF11E])
        width, height = _sample_size(rng)
        is_jpeg = rng.random() < JPEG_SHARE or (width, height) in (MAX_SIZE, MAX_SIZE[::-1])
        if not is_jpeg:
            width, height = _cap_area(width, height, PNG_MAX_AREA)
        if is_jpeg:
            mode = "L" if rng.random() < 0.05 else "RGB"
            orientation = int(rng.choice([3, 6, 8])) if rng.random() < 0.10 else 1
        else:
            mode = str(rng.choice(["RGB", "RGBA", "L"], p=[0.8, 0.1, 0.1]))
            orientation = 1
        ext = "jpg" if is_jpeg else "png"
        specs.append(FileSpec(i, f"{i % 16:02x}/{i:06d}.{ext}", width, height, mode,
                              int(rng.integers(80, 96)), orientation))
    return specs


def write_file(root: str, spec: FileSpec, seed: int) -> int:
    """Render and save one file; return its size in bytes."""
    image = make_photo(spec.width, spec.height, seed, spec.index)
    if spec.mode == "L":
        image = image.convert("L")
    elif spec.mode == "RGBA":
        image.putalpha(Image.linear_gradient("L").resize(image.size).point(lambda v: 128 + v // 2))
    path = os.path.join(root, spec.path)
    if spec.path.endswith(".jpg"):
        exif = Image.Exif()
        if spec.orientation != 1:
            exif[0x0112] = spec.orientation
        image.save(path, "JPEG", quality=spec.quality, exif=exif.tobytes())
    else:
        image.save(path, "PNG", compress_level=1)
    return os.path.getsize(path)


def _write_one(args: tuple[str, FileSpec, int]) -> tuple[int, int]:
    return args[1].index, write_file(*args)


# ---------------------------------------------------------------------------------------------------
# Cache


@dataclass(frozen=True)
class Corpus:
    root: Path
    table: Path  # Parquet image table (column `path`, relative to root)
    manifest: dict

    @property
    def n(self) -> int:
        return self.manifest["params"]["images"]


def _params(n: int, seed: int) -> dict:
    return {"generator_version": GENERATOR_VERSION, "images": n, "seed": seed}


def _load_cached(root: Path, params: dict) -> Corpus | None:
    try:
        manifest = json.loads((root / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    if manifest.get("params") != params or not (root / TABLE).exists():
        return None
    return Corpus(root, root / TABLE, manifest)


def ensure_corpus(root: str | Path, n: int = 2000, seed: int = 0, workers: int | None = None,
                  log=print) -> Corpus:
    """The corpus of `n` images in `root`, generated unless a manifest with the same parameters exists.

    The manifest is written last, so an interrupted generation is redone from scratch next time.
    """
    root = Path(root)
    params = _params(n, seed)
    cached = _load_cached(root, params)
    if cached is not None:
        return cached
    (root / MANIFEST).unlink(missing_ok=True)
    specs = plan_corpus(n, seed)
    for sub in sorted({os.path.dirname(s.path) for s in specs}):
        (root / sub).mkdir(parents=True, exist_ok=True)
    workers = workers or os.cpu_count() or 1
    log(f"generating {n} images in {root} with {workers} processes ...")
    start = time.perf_counter()
    # Largest first, one file per task: keeps both cores busy until the end (the tail is tiny files).
    jobs = sorted(((str(root), s, seed) for s in specs), key=lambda j: -j[1].width * j[1].height)
    sizes = [0] * n
    with Pool(workers) as pool:
        for index, size in pool.imap_unordered(_write_one, jobs):
            sizes[index] = size
    seconds = time.perf_counter() - start
    pq.write_table(pa.table({"path": [s.path for s in specs]}), root / TABLE)
    manifest = {"params": params, "stats": _stats(specs, sizes, seconds)}
    (root / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    log(f"generated {n} images in {seconds:.1f} s ({sum(sizes) / 1e9:.2f} GB)")
    return Corpus(root, root / TABLE, manifest)


def _stats(specs: list[FileSpec], sizes: list[int], seconds: float) -> dict:
    megapixels = np.array([s.width * s.height / 1e6 for s in specs])
    return {
        "jpeg": sum(s.path.endswith(".jpg") for s in specs),
        "png": sum(s.path.endswith(".png") for s in specs),
        "exif_rotated": sum(s.orientation != 1 for s in specs),
        "megapixels": {
            "mean": round(float(megapixels.mean()), 3),
            "p50": round(float(np.median(megapixels)), 3),
            "max": round(float(megapixels.max()), 3),
        },
        "bytes": int(sum(sizes)),
        "generation_s": round(seconds, 1),
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--dir", default="/tmp/uhd-bench-corpus")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=0, help="processes (default: all cores)")
    args = parser.parse_args(argv)
    corpus = ensure_corpus(args.dir, args.images, args.seed, args.workers or None)
    print(json.dumps(corpus.manifest))


if __name__ == "__main__":
    main()
