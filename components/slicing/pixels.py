"""Pixels: image file -> normalized slice and overview arrays ready for the vision tower.

The geometry always comes from a layout (`plan_layout`); this module only moves pixels. Speed comes
from three choices, measured in benchmarks/preprocess.py:
  * JPEG draft decoding: libjpeg's DCT scaling decodes at 1/2, 1/4 or 1/8 size when the targets are
    that much smaller, skipping most of the IDCT work. It never goes below DRAFT_MARGIN x the largest
    target, so the final bicubic resize still does the last >= 2x reduction and the result stays within
    ~0.004 (normalized units) of a full decode on photo-like content;
  * one resize of the whole image to the slice canvas (cols*w, rows*h), then crops that are array views,
    instead of one resize per slice; resizes run through torch's vectorised uint8 antialiased bicubic,
    which reproduces PIL's bicubic (mean difference ~0.005 grey levels) about 5x faster;
  * normalization by a per-channel 256-entry lookup table on uint8 data instead of float arithmetic.
"""

from __future__ import annotations

import io
import math
import os
import warnings
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from .anyres import AnyresLayout
from .headers import TRANSPOSING_ORIENTATIONS, exif_orientation
from .layout import Layout, Size

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
SIGLIP_MEAN = SIGLIP_STD = (0.5, 0.5, 0.5)  # lmms-lab OneVision checkpoints


# Decode JPEGs at no less than this multiple of the largest size the layout needs (see module doc).
DRAFT_MARGIN = 2.0


@dataclass(frozen=True)
class Normalization:
    mean: tuple[float, float, float] = CLIP_MEAN
    std: tuple[float, float, float] = CLIP_STD

    def lookup_table(self) -> np.ndarray:
        """(3, 256) float32: value v of channel c maps to (v/255 - mean[c]) / std[c]."""
        levels = np.arange(256, dtype=np.float64) / 255.0
        table = (levels[None, :] - np.array(self.mean)[:, None]) / np.array(self.std)[:, None]
        return table.astype(np.float32)


CLIP = Normalization()
SIGLIP = Normalization(SIGLIP_MEAN, SIGLIP_STD)

_TABLES: dict[Normalization, np.ndarray] = {}


# ---------------------------------------------------------------------------------------------------
# Decoding


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode -> RGB. Transparency is composited on white; 16/32-bit greyscale is rescaled."""
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        values = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if (image.mode.startswith("I;16") or values.max(initial=0) > 255) else 255.0
        grey = np.clip(values / peak * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(grey, mode="L").convert("RGB")
    has_alpha = image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or (
        image.mode == "P" and "transparency" in image.info
    )
    if has_alpha:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")  # L, 1, P, CMYK, YCbCr, LAB, HSV


# How files become RGB pixels. "project" (the default everywhere: training, layouts, inference) shows the image as
# a viewer does: EXIF orientation applied, transparency composited on white. "reference" is what LLaVA-1.5's and
# LLaVA-UHD's eval scripts do, `Image.open(path).convert('RGB')`: the stored orientation, alpha simply dropped
# (transparent pixels keep whatever colour they store); the paper protocols use it to reproduce their numbers.
LOADINGS = ("project", "reference")


def load_image(source, min_size: Size | None = None, loading: str = "project") -> Image.Image:
    """Open, decode and orient an image as RGB.

    source    a path, bytes, or a binary file object.
    min_size  (w, h) in *display* orientation that the caller still needs; JPEGs are then decoded at the
              smallest DCT scale (1/2, 1/4, 1/8) that keeps at least this size. None: full resolution.
    loading   "project" or "reference" (see LOADINGS above).
    """
    if loading not in LOADINGS:
        raise ValueError(f"loading must be one of {LOADINGS}, got {loading!r}")
    if isinstance(source, bytes | bytearray):
        source = io.BytesIO(source)
    elif isinstance(source, str | os.PathLike):
        source = os.fspath(source)
    image = Image.open(source)
    if loading == "reference":
        return image.convert("RGB")
    orientation = exif_orientation(image)
    if min_size is not None and image.format == "JPEG":
        need = min_size[::-1] if orientation in TRANSPOSING_ORIENTATIONS else min_size
        image.draft("RGB", (max(int(need[0]), 1), max(int(need[1]), 1)))
    image.load()
    if orientation != 1:
        image = ImageOps.exif_transpose(image)
    return to_rgb(image)


# ---------------------------------------------------------------------------------------------------
# Geometry -> pixels. Images travel as HWC uint8 numpy arrays; crops are views, resizes go through torch.


@dataclass
class EncodedImage:
    """Vision-tower input for one image: slices (n, 3, h, w) row-major, overview (3, h, w)."""

    slices: np.ndarray  # float32; shape (0, 3, 1, 1) when unsliced
    overview: np.ndarray

    @property
    def images(self) -> list[np.ndarray]:
        return [*self.slices, self.overview]


def resize(pixels: np.ndarray, size: Size) -> np.ndarray:
    """HWC uint8 -> HWC uint8 at (w, h): antialiased bicubic, PIL's kernel (a = -0.5), ~5x faster than PIL.

    torch's uint8 antialias path was written to match PIL (mean difference ~0.005 grey levels) and is
    vectorised; on one core it resizes 1920x1080 -> 1092x924 in 3.4 ms against PIL's 16.5 ms.
    """
    w, h = size
    if pixels.shape[1] == w and pixels.shape[0] == h:
        return pixels
    with warnings.catch_warnings():
        # Decoded PIL buffers are read-only; torch warns about that, but nothing here writes to them.
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        tensor = torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1).unsqueeze(0)
    out = F.interpolate(tensor, size=(h, w), mode="bicubic", antialias=True, align_corners=False)
    return out[0].permute(1, 2, 0).numpy()


def resize_image(image: Image.Image, size: Size) -> Image.Image:
    """A whole PIL image resized (RGB) with `resize`'s kernel: the eval and train-time pre-resizes, before slicing."""
    if image.size == tuple(size):
        return image
    return Image.fromarray(resize(np.asarray(image.convert("RGB")), size))


def normalize(pixels: np.ndarray | Image.Image, norm: Normalization = CLIP) -> np.ndarray:
    """HWC uint8 (or an RGB PIL image) -> (3, H, W) float32, normalized by table lookup."""
    table = _TABLES.get(norm)
    if table is None:
        table = _TABLES[norm] = norm.lookup_table()
    chw = np.asarray(pixels, dtype=np.uint8).transpose(2, 0, 1)
    out = np.empty(chw.shape, dtype=np.float32)
    for c in range(3):
        np.take(table[c], chw[c], out=out[c])
    return out


def _tiles(canvas: np.ndarray, grid: Size, tile: Size) -> list[np.ndarray]:
    cols, rows = grid
    tw, th = tile
    return [canvas[r * th:(r + 1) * th, c * tw:(c + 1) * tw] for r in range(rows) for c in range(cols)]


def _draft_size(layout: Layout | AnyresLayout) -> Size:
    if isinstance(layout, AnyresLayout):
        targets = [layout.best_resolution]
    else:
        targets = _uhd_targets(layout)
    return (int(max(t[0] for t in targets) * DRAFT_MARGIN), int(max(t[1] for t in targets) * DRAFT_MARGIN))


def _uhd_targets(layout: Layout) -> list[Size]:
    targets = [layout.overview]
    if layout.slices:
        (w, h), (cols, rows) = layout.slices[0], layout.grid
        targets.append((w * cols, h * rows))
    if layout.pre_resized:
        targets.append(layout.pre_resized)
    return targets


def _check_oriented_size(pixels: np.ndarray, layout) -> None:
    """The decoded image must be the size the layout was planned for (modulo draft scaling)."""
    w, h = layout.size
    ih, iw = pixels.shape[:2]
    if abs(iw / ih - w / h) > 0.02 * (w / h) + 2 / min(ih, h):
        raise ValueError(
            f"image is {iw}x{ih} after EXIF orientation but its layout was planned for {w}x{h}; "
            "re-run the layouts stage for this image"
        )


def encode_uhd(pixels: np.ndarray, layout: Layout, norm: Normalization = CLIP) -> EncodedImage:
    """UHD-style layouts (uhd presets, fixed2x2): one resize to the slice canvas, then crops."""
    if layout.pre_resized:
        pixels = resize(pixels, layout.pre_resized)
    overview = normalize(resize(pixels, layout.overview), norm)
    if not layout.slices:
        return EncodedImage(np.empty((0, 3, 1, 1), np.float32), overview)
    tile = layout.slices[0]
    if any(s != tile for s in layout.slices):
        raise ValueError("canvas slicing needs equal slice sizes; this layout mixes sizes")
    cols, rows = layout.grid
    canvas = resize(pixels, (tile[0] * cols, tile[1] * rows))
    slices = np.stack([normalize(t, norm) for t in _tiles(canvas, layout.grid, tile)])
    return EncodedImage(slices, overview)


def _paste_centered(pixels: np.ndarray, size: Size, fill) -> np.ndarray:
    """Place `pixels` in the middle of a (w, h) canvas of colour `fill`; odd remainders go right/bottom."""
    w, h = size
    canvas = np.empty((h, w, 3), dtype=np.uint8)
    canvas[...] = np.asarray(fill, dtype=np.uint8)
    ph, pw = pixels.shape[:2]
    top, left = (h - ph) // 2, (w - pw) // 2
    canvas[top:top + ph, left:left + pw] = pixels
    return canvas


def padded_square(pixels: np.ndarray, side: int, norm: Normalization) -> np.ndarray:
    """LLaVA `expand2square`: pad the short side with the mean colour, resize to side x side, normalize.
    LLaVA-1.5's pad336, and OneVision's encoding of each image of a multi-image sample."""
    square_side = max(pixels.shape[:2])
    square = _paste_centered(pixels, (square_side, square_side), [int(255 * m) for m in norm.mean])
    return normalize(resize(square, (side, side)), norm)


def squashed(pixels: np.ndarray, side: int, norm: Normalization = SIGLIP) -> np.ndarray:
    """Resize to side x side ignoring the aspect ratio: OneVision's video frames (and AnyRes base image)."""
    return normalize(resize(pixels, (side, side)), norm)


def encode_pad336(pixels: np.ndarray, layout: Layout, norm: Normalization = CLIP) -> EncodedImage:
    return EncodedImage(np.empty((0, 3, 1, 1), np.float32), padded_square(pixels, layout.overview[0], norm))


def encode_anyres(pixels: np.ndarray, layout: AnyresLayout, norm: Normalization = SIGLIP) -> EncodedImage:
    """OneVision: base image squashed to B x B; crops of the image fitted (ceil) and centred on black."""
    side = layout.base_resolution
    base = squashed(pixels, side, norm)
    target_w, target_h = layout.best_resolution
    h, w = pixels.shape[:2]
    # get_patch_output_size: fill the side with the smaller scale, ceil the other, capped at the target.
    scale_w, scale_h = target_w / w, target_h / h
    if scale_w < scale_h:
        new_w, new_h = target_w, min(math.ceil(h * scale_w), target_h)
    else:
        new_w, new_h = min(math.ceil(w * scale_h), target_w), target_h
    canvas = _paste_centered(resize(pixels, (new_w, new_h)), (target_w, target_h), (0, 0, 0))
    crops = np.stack([normalize(t, norm) for t in _tiles(canvas, layout.grid, (side, side))])
    return EncodedImage(crops, base)


def encode_image(source, layout: Layout | AnyresLayout, norm: Normalization | None = None,
                 draft: bool = True) -> EncodedImage:
    """File (or PIL image) + layout -> normalized vision-tower input.

    draft=False decodes JPEGs at full resolution (the reference behaviour), e.g. for parity checks.
    """
    if isinstance(source, Image.Image):
        image = to_rgb(source)
    else:
        image = load_image(source, min_size=_draft_size(layout) if draft else None)
    pixels = np.asarray(image)
    _check_oriented_size(pixels, layout)
    if isinstance(layout, AnyresLayout):
        return encode_anyres(pixels, layout, norm or SIGLIP)
    if layout.strategy == "pad336":
        return encode_pad336(pixels, layout, norm or CLIP)
    return encode_uhd(pixels, layout, norm or CLIP)
