"""Draw a layout over its image: what `uhd layout IMAGE` shows a person."""

from __future__ import annotations

from PIL import Image, ImageDraw

from .anyres import AnyresLayout
from .layout import Layout


def _cell_boxes(size, grid):
    (w, h), (cols, rows) = size, grid
    for r in range(rows):
        for c in range(cols):
            yield c, r, (c * w / cols, r * h / rows, (c + 1) * w / cols, (r + 1) * h / rows)


def draw_layout(image: Image.Image, layout: Layout | AnyresLayout, max_side: int = 1600) -> Image.Image:
    """The image (downscaled to max_side for viewing) with the slice grid and per-slice sizes drawn on.

    For AnyRes the grid is drawn over the letterboxed canvas region the image occupies.
    """
    scale = min(1.0, max_side / max(image.size))
    view = image.convert("RGB").resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))))
    draw = ImageDraw.Draw(view, "RGBA")
    line = max(2, round(min(view.size) / 200))
    labels = layout.slices if isinstance(layout, Layout) else [(layout.base_resolution,) * 2] * (
        layout.grid[0] * layout.grid[1])
    for c, r, box in _cell_boxes(view.size, layout.grid):
        draw.rectangle(box, outline=(255, 40, 40, 255), width=line)
        if labels:
            w, h = labels[r * layout.grid[0] + c]
            draw.text((box[0] + 2 * line, box[1] + 2 * line), f"{w}x{h}", fill=(255, 255, 0, 255),
                      stroke_width=2, stroke_fill=(0, 0, 0, 255))
    return view


def describe(layout: Layout | AnyresLayout) -> str:
    """A short human-readable plan."""
    w, h = layout.size
    if isinstance(layout, AnyresLayout):
        return (
            f"{w}x{h} anyres/{layout.preset}: canvas {layout.best_resolution[0]}x{layout.best_resolution[1]}, "
            f"grid {layout.grid[0]}x{layout.grid[1]} + base ({layout.num_crops} crops of {layout.base_resolution}), "
            f"unpadded {layout.unpadded_hw[0]}x{layout.unpadded_hw[1]} -> final {layout.final_hw[0]}x"
            f"{layout.final_hw[1]} (h x w tokens), {layout.num_tokens} visual tokens"
        )
    lines = [f"{w}x{h} {layout.strategy}/{layout.preset}: grid {layout.grid[0]}x{layout.grid[1]} (cols x rows)"]
    if layout.pre_resized:
        lines.append(f"  pre-resized to {layout.pre_resized[0]}x{layout.pre_resized[1]}")
    if layout.slices:
        sw, sh = layout.slices[0]
        pw, ph = sw // layout.patch_size, sh // layout.patch_size
        lines.append(f"  {layout.n_slices} slices of {sw}x{sh} ({pw}x{ph} patches)")
    else:
        lines.append("  not sliced")
    ow, oh = layout.overview
    lines.append(f"  overview {ow}x{oh}; ViT patches {layout.vit_patches}; separators {len(layout.separators)}")
    lines.append(f"  visual tokens {layout.num_tokens}")
    return "\n".join(lines)
