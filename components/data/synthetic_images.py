"""Deterministic high-resolution images whose content needs fine detail: small text, digits and shapes.

Used by the embedded (offline) default of the pipeline. Every aspect ratio the slicing must cope with
appears: extreme (1:4, 4:1, 1:6), common photo and screen shapes, small images, and files that
exercise the decoder paths (PNG, palette with transparency, EXIF-rotated JPEG).
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import matplotlib
import numpy as np
from PIL import Image, ImageDraw, ImageFont

# (width, height) shapes cycled through; the scale is drawn per image.
ASPECTS = [(4, 3), (16, 9), (1, 1), (9, 16), (3, 4), (1, 4), (4, 1), (6, 1), (1, 6), (21, 9), (2, 3), (3, 2)]
COLOURS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220), "yellow": (235, 200, 30),
           "black": (20, 20, 20), "purple": (140, 60, 170)}


@lru_cache(maxsize=8)
def font(size: int) -> ImageFont.FreeTypeFont:
    """DejaVu Sans ships inside matplotlib: no system font and no download needed."""
    path = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    return ImageFont.truetype(str(path), size)


@dataclass(frozen=True)
class SyntheticImage:
    path: str  # relative to the image root
    width: int  # displayed size
    height: int
    text: str  # the small text rendered somewhere in the image (ground truth for fine-detail questions)
    shape: str
    colour: str


def _size(rng: np.random.Generator, index: int) -> tuple[int, int]:
    aw, ah = ASPECTS[index % len(ASPECTS)]
    if index % 7 == 6:  # a small image now and then
        long_side = int(rng.integers(48, 320))
    else:
        long_side = int(rng.integers(640, 2049))
    scale = long_side / max(aw, ah)
    return max(int(aw * scale), 8), max(int(ah * scale), 8)


def _background(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """Smooth colour field made at low resolution and upscaled (cheap, photo-like gradients)."""
    low = rng.integers(90, 250, size=(4, 4, 3), dtype=np.uint8)
    return Image.fromarray(low).resize((width, height), Image.Resampling.BICUBIC)


def render(rng: np.random.Generator, index: int) -> tuple[Image.Image, SyntheticImage]:
    width, height = _size(rng, index)
    image = _background(rng, width, height)
    draw = ImageDraw.Draw(image)
    text = f"{int(rng.integers(0, 10**6)):06d}"
    colour = list(COLOURS)[int(rng.integers(len(COLOURS)))]
    shape = ["circle", "square", "triangle"][int(rng.integers(3))]
    # Small enough that a 336x336 downscale of a large image makes it unreadable.
    size = max(8, min(width, height) // 24)
    x, y = int(rng.integers(0, max(width - 4 * size, 1))), int(rng.integers(0, max(height - size, 1)))
    draw.text((x, y), text, fill=(0, 0, 0), font=font(min(size, 64)))
    sx, sy = int(rng.integers(0, max(width - size, 1))), int(rng.integers(0, max(height - size, 1)))
    box = (sx, sy, sx + size, sy + size)
    if shape == "circle":
        draw.ellipse(box, fill=COLOURS[colour])
    elif shape == "square":
        draw.rectangle(box, fill=COLOURS[colour])
    else:
        draw.polygon([(sx + size // 2, sy), (sx, sy + size), (sx + size, sy + size)], fill=COLOURS[colour])
    return image, SyntheticImage("", width, height, text, shape, colour)


def encode(image: Image.Image, index: int) -> tuple[bytes, str]:
    """Vary the container so decoding paths are exercised: JPEG, PNG, palette+transparency, EXIF-rotated."""
    buf = io.BytesIO()
    kind = index % 8
    if kind == 5:
        image.save(buf, "PNG")
        return buf.getvalue(), "png"
    if kind == 7:
        palette = image.convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
        palette.info["transparency"] = 0
        palette.save(buf, "PNG", transparency=0)
        return buf.getvalue(), "png"
    if kind == 3:  # stored rotated; EXIF orientation 6 tells viewers to rotate it back
        exif = Image.Exif()
        exif[0x0112] = 6
        image.transpose(Image.Transpose.ROTATE_90).save(buf, "JPEG", quality=90, exif=exif)
        return buf.getvalue(), "jpg"
    image.save(buf, "JPEG", quality=90)
    return buf.getvalue(), "jpg"


def generate_images(out_dir: str | Path, count: int, seed: int) -> list[dict]:
    """Write `count` images under out_dir/images/; return manifest rows (path, bytes, sha256, ...).

    Sizes are deliberately not in the rows: downstream stages read them from the file headers.
    """
    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    for index in range(count):
        image, meta = render(rng, index)
        data, ext = encode(image, index)
        rel = f"images/{index:06d}.{ext}"
        (out_dir / rel).write_bytes(data)
        rows.append(
            {
                "path": rel,
                "bytes": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
                "source": f"synthetic:seed={seed}",
                "text": meta.text,
                "shape": meta.shape,
                "colour": meta.colour,
            }
        )
    return rows
