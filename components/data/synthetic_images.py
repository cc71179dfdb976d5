"""Deterministic high-resolution scenes whose questions need fine detail: small digits, shapes, colours.

Each scene has a large, readable title word (what an OCR system or a 336x336 view would catch), and a
small six-digit code plus small coloured shapes sized relative to the *long* side of the image, so that a
336x336 downscale (LLaVA-1.5's pad336) shrinks the code to a few pixels while UHD's slices keep it
legible. Every aspect ratio the slicing must cope with appears (1:6 .. 6:1, photo and screen shapes,
small images), and the files exercise the decoder paths (PNG, palette with transparency, EXIF-rotated
JPEG).

Scenes with a long side >= FINE_LINES_MIN_SIDE also carry a texture of fine lines over the whole background,
horizontal or vertical, with an even integer period chosen so that pad336's downscale maps one period to at
most 1.25 output pixels: the antialiased resize averages it to the same flat colour for both orientations,
while UHD's slices (scale >= sqrt(6) x pad336's) keep >= 2.4 px periods. See benchmarks/fine_detail.py.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import matplotlib
import numpy as np
from PIL import Image, ImageDraw, ImageFont

# (width, height) shapes cycled through; the scale is drawn per scene.
ASPECTS = [(4, 3), (16, 9), (1, 1), (9, 16), (3, 4), (1, 4), (4, 1), (6, 1), (1, 6), (21, 9), (2, 3), (3, 2)]
COLOURS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220), "yellow": (235, 200, 30),
           "black": (20, 20, 20), "purple": (140, 60, 170), "orange": (245, 130, 20), "white": (250, 250, 250)}
SHAPES = ("circle", "square", "triangle")
LINES = ("horizontal", "vertical")
FINE_LINES_MIN_SIDE = 1280  # below this no even period >= 4 px is both erased at 336 and kept by UHD's slices
FINE_LINES_QUESTION = "Are the fine lines in the background horizontal or vertical?"
FINE_LINES_AMPLITUDE = 64  # grey levels above/below the background: equal mean colour for both orientations
TITLES = ("harbour", "market", "station", "garden", "museum", "library", "bakery", "stadium", "bridge", "forest")


@lru_cache(maxsize=32)
def font(size: int) -> ImageFont.FreeTypeFont:
    """DejaVu Sans ships inside matplotlib: no system font and no download needed."""
    path = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    return ImageFont.truetype(str(path), size)


@dataclass(frozen=True)
class PlacedShape:
    shape: str
    colour: str
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 in display pixels


@dataclass(frozen=True)
class Scene:
    """Ground truth of one rendered image (display orientation)."""

    width: int
    height: int
    title: str  # large, readable even at 336x336
    code: str  # small six digits: the fine detail
    code_box: tuple[int, int, int, int]
    shapes: tuple[PlacedShape, ...] = field(default=())
    lines: str | None = None  # "horizontal" | "vertical": orientation of the fine background lines, None = none
    line_period: int = 0  # pixels per on+off cycle of those lines

    @property
    def shape_names(self) -> set[str]:
        return {s.shape for s in self.shapes}

    def describe(self) -> str:
        parts = [f"a {s.colour} {s.shape}" for s in self.shapes]
        listed = ", ".join(parts[:-1]) + (" and " if len(parts) > 1 else "") + parts[-1]
        return f"a sign reading {self.title} with the code {self.code} in small print, {listed}"


def scene_size(rng: np.random.Generator, index: int) -> tuple[int, int]:
    aw, ah = ASPECTS[index % len(ASPECTS)]
    long_side = int(rng.integers(48, 320)) if index % 9 == 8 else int(rng.integers(896, 2049))
    scale = long_side / max(aw, ah)
    return max(int(aw * scale), 8), max(int(ah * scale), 8)


def _background(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """Smooth colour field made at low resolution and upscaled (cheap, photo-like gradients)."""
    low = rng.integers(110, 235, size=(4, 4, 3), dtype=np.uint8)
    return Image.fromarray(low).resize((width, height), Image.Resampling.BICUBIC)


def line_period(long_side: int) -> int:
    """Largest even period (px) whose pad336 image is <= 1.25 output px: 4 at 1280-1612, 6 at 1613-2150."""
    return 2 * int(1.25 * long_side / (2 * 336))


def add_fine_lines(image: Image.Image, lines: str, period: int) -> Image.Image:
    """Alternate +/- FINE_LINES_AMPLITUDE in bands of period/2 px (rows: horizontal, columns: vertical)."""
    pixels = np.asarray(image, dtype=np.int16)
    h, w = pixels.shape[:2]
    coord = np.arange(h if lines == "horizontal" else w)
    offset = np.where((coord // (period // 2)) % 2 == 0, FINE_LINES_AMPLITUDE, -FINE_LINES_AMPLITUDE)
    offset = offset[:, None, None] if lines == "horizontal" else offset[None, :, None]
    return Image.fromarray(np.clip(pixels + offset, 0, 255).astype(np.uint8))


def _free_box(rng, width, height, w, h, taken) -> tuple[int, int, int, int]:
    """A random box of w x h inside the image that overlaps no earlier box (best effort)."""
    box = (0, 0, w, h)
    for _ in range(50):
        x = int(rng.integers(0, max(width - w, 1)))
        y = int(rng.integers(0, max(height - h, 1)))
        box = (x, y, x + w, y + h)
        if all(box[2] <= t[0] or box[0] >= t[2] or box[3] <= t[1] or box[1] >= t[3] for t in taken):
            break
    return box


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, box, colour) -> None:
    x0, y0, x1, y1 = box
    if shape == "circle":
        draw.ellipse(box, fill=colour, outline=(0, 0, 0))
    elif shape == "square":
        draw.rectangle(box, fill=colour, outline=(0, 0, 0))
    else:
        draw.polygon([((x0 + x1) // 2, y0), (x0, y1), (x1, y1)], fill=colour, outline=(0, 0, 0))


def render_scene(rng: np.random.Generator, width: int, height: int,
                 lines: str | None = None) -> tuple[Image.Image, Scene]:
    """lines: force the fine-line orientation (balanced eval sets); None draws it (large scenes only)."""
    image = _background(rng, width, height)
    long_side, short_side = max(width, height), min(width, height)
    period = 0
    if long_side >= FINE_LINES_MIN_SIDE:
        drawn = LINES[int(rng.integers(len(LINES)))]  # always drawn, so forcing keeps the stream aligned
        lines, period = lines or drawn, line_period(long_side)
        image = add_fine_lines(image, lines, period)
    else:
        lines = None
    draw = ImageDraw.Draw(image)
    title = TITLES[int(rng.integers(len(TITLES)))]
    title_font = font(max(10, min(short_side // 5, long_side // 8)))
    tw, th = draw.textbbox((0, 0), title, font=title_font)[2:]
    title_box = _free_box(rng, width, height, tw, th, [])
    draw.text(title_box[:2], title, fill=(15, 15, 15), font=title_font)
    taken = [title_box]
    # The code is ~1/70 of the long side: ~14 px in a UHD slice of a 2048 px image, ~5 px at 336x336.
    code = f"{int(rng.integers(0, 10**6)):06d}"
    code_font = font(max(7, long_side // 70))
    cw, ch = draw.textbbox((0, 0), code, font=code_font)[2:]
    code_box = _free_box(rng, width, height, cw + 4, ch + 4, taken)
    draw.rectangle(code_box, fill=(255, 255, 255))
    draw.text((code_box[0] + 2, code_box[1] + 2), code, fill=(0, 0, 0), font=code_font)
    taken.append(code_box)
    shapes = []
    for shape in rng.permutation(SHAPES)[: int(rng.integers(1, 3))]:
        side = max(6, long_side // 40)
        box = _free_box(rng, width, height, side, side, taken)
        colour = list(COLOURS)[int(rng.integers(len(COLOURS)))]
        _draw_shape(draw, str(shape), box, COLOURS[colour])
        taken.append(box)
        shapes.append(PlacedShape(str(shape), colour, box))
    return image, Scene(width, height, title, code, code_box, tuple(shapes), lines, period)


def other_code(code: str, rng: np.random.Generator) -> str:
    """A six-digit code that is not `code` (a wrong option or a "No" question)."""
    while True:
        other = f"{int(rng.integers(0, 10**6)):06d}"
        if other != code:
            return other


def encode_image_file(image: Image.Image, variant: int) -> tuple[bytes, str]:
    """Vary the container so decoding paths are exercised: JPEG, PNG, palette+transparency, EXIF-rotated.
    The *displayed* image is always `image` (orientation is undone by EXIF)."""
    buf = io.BytesIO()
    kind = variant % 10
    if kind == 5:
        image.save(buf, "PNG")
        return buf.getvalue(), "png"
    if kind == 7:
        # A transparent palette entry that no pixel uses: the P+tRNS decode path, content unchanged.
        palette = image.convert("P", palette=Image.Palette.ADAPTIVE, colors=255)
        palette.save(buf, "PNG", transparency=255)
        return buf.getvalue(), "png"
    if kind == 3:  # stored rotated; EXIF orientation 6 tells viewers to rotate it back
        exif = Image.Exif()
        exif[0x0112] = 6
        image.transpose(Image.Transpose.ROTATE_90).save(buf, "JPEG", quality=92, exif=exif)
        return buf.getvalue(), "jpg"
    image.save(buf, "JPEG", quality=92)
    return buf.getvalue(), "jpg"
