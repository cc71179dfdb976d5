"""The slice layout: what the vision tower will be fed for one image, and how many tokens the LLM sees.

A `Layout` is pure geometry plus the token accounting that follows from it. It is computed from the
image size alone (never from pixels), so the layouts stage, the data loader, the model and the FLOPs
counter all agree by construction. Sizes are (width, height) throughout.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from components.compression import COMPRESSORS, queries_per_image

Size = tuple[int, int]

SLICE_SEPARATOR = ","  # between slices of one row (spatial schema, after Fuyu)
ROW_SEPARATOR = "\n"  # after the last slice of each row

def visual_token_count(record: dict, compressor: str, spatial_schema: bool, overview_only: bool = False) -> int:
    """Visual tokens for a layouts-table row under a model's compressor and spatial-schema switch.

    Equals `layout.with_compressor(compressor, spatial_schema).num_tokens` of the layout the row was made
    from (AnyRes rows have one projector and no schema: every column holds the same count), or with
    `overview_only` that of `layout.overview_only()` (the `overview_tokens_*` columns, see `overview_record`)."""
    if overview_only:
        return int(record[f"overview_tokens_{compressor}"])
    return int(record[f"tokens_{compressor}"]) + (int(record["schema_separators"]) if spatial_schema else 0)


def spatial_schema_separators(grid: Size) -> tuple[str, ...]:
    """One separator after every slice, row-major: ',' inside a row, '\\n' after a row's last slice."""
    cols, rows = grid
    return tuple(SLICE_SEPARATOR if c < cols - 1 else ROW_SEPARATOR for _ in range(rows) for c in range(cols))


def patch_grid(size: Size, patch_size: int) -> Size:
    """ViT patch grid (cols, rows) of an image of `size`; partial patches are dropped as the conv does."""
    return size[0] // patch_size, size[1] // patch_size


@dataclass(frozen=True)
class Layout:
    """How one image is encoded.

    slices     row-major (w, h) of every slice fed to the ViT; empty when the image is not sliced.
    overview   (w, h) of the low-resolution whole image, encoded last.
    queries    compressed tokens per encoded image (None: one token per ViT patch, the MLP projector).
    separators one spatial-schema token after each slice ([] when the schema is off or unsliced).
    """

    strategy: str
    preset: str
    size: Size
    grid: Size
    slices: tuple[Size, ...]
    overview: Size
    patch_size: int
    queries: int | None
    separators: tuple[str, ...] = ()
    pre_resized: Size | None = None
    extras: dict = field(default_factory=dict, compare=False)

    @property
    def sliced(self) -> bool:
        return bool(self.slices)

    @property
    def n_slices(self) -> int:
        return len(self.slices)

    @property
    def images(self) -> tuple[Size, ...]:
        """Every image the ViT encodes, in LLM order: slices row-major, then the overview."""
        return (*self.slices, self.overview)

    @property
    def vit_patches(self) -> int:
        """ViT patch tokens over all encoded images (the vision tower's cost driver)."""
        total = 0
        for size in self.images:
            cols, rows = patch_grid(size, self.patch_size)
            total += cols * rows
        return total

    def tokens_per_image(self) -> list[int]:
        if self.queries is None:
            return [c * r for c, r in (patch_grid(s, self.patch_size) for s in self.images)]
        return [self.queries] * len(self.images)

    @property
    def num_tokens(self) -> int:
        """Visual tokens the LLM sees for this image, separators included."""
        return sum(self.tokens_per_image()) + len(self.separators)

    def segments(self) -> list[tuple[str, int]]:
        """The LLM-side sequence as (kind, length) pairs: ("slice", n), ("sep", 1), ..., ("overview", n).

        The model builds its embedding sequence from exactly this list, so its token count and the
        layouts table's count cannot drift apart.
        """
        per_image = self.tokens_per_image()
        out: list[tuple[str, int]] = []
        for i, n in enumerate(per_image[:-1]):
            out.append(("slice", n))
            if self.separators:
                out.append(("sep:" + self.separators[i], 1))
        out.append(("overview", per_image[-1]))
        return out

    def with_compressor(self, compressor: str, spatial_schema: bool) -> Layout:
        """The same geometry under another compressor / schema switch (the Table 2 ablations)."""
        separators = spatial_schema_separators(self.grid) if (spatial_schema and self.sliced) else ()
        return Layout(
            strategy=self.strategy,
            preset=self.preset,
            size=self.size,
            grid=self.grid,
            slices=self.slices,
            overview=self.overview,
            patch_size=self.patch_size,
            queries=queries_per_image(compressor),
            separators=separators,
            pre_resized=self.pre_resized,
            extras=self.extras,
        )

    def overview_only(self) -> Layout:
        """The overview alone, no slices: how the ECCV code's pretraining (`--single True`) encodes every image.

        The overview of every UHD rule is the unsliced image's own size (eccv: `find_best_resize` resizes any
        image bigger than R^2 whether upscaling is allowed or not, and only those are sliced; arxiv/paper:
        `adapt_size` of the whole image either way), so this is the layout of the image never split."""
        return dataclasses.replace(self, grid=(1, 1), slices=(), separators=())

    def overview_record(self) -> dict:
        """The `overview_tokens_*` columns: the overview-only count under every compressor (no separators)."""
        only = self.overview_only()
        return {f"overview_tokens_{c}": only.with_compressor(c, spatial_schema=False).num_tokens for c in COMPRESSORS}

    def to_record(self) -> dict:
        """A flat row for the layouts Parquet table (see `components.slicing.table.LAYOUT_SCHEMA`)."""
        return {
            "strategy": self.strategy,
            "preset": self.preset,
            "grid_cols": self.grid[0],
            "grid_rows": self.grid[1],
            "n_slices": self.n_slices,
            "slice_sizes": [list(s) for s in self.slices],
            "overview_w": self.overview[0],
            "overview_h": self.overview[1],
            "pre_resized_w": self.pre_resized[0] if self.pre_resized else None,
            "pre_resized_h": self.pre_resized[1] if self.pre_resized else None,
            "vit_images": len(self.images),
            "vit_patches": self.vit_patches,
            "num_separators": len(self.separators),
            "num_tokens": self.num_tokens,
            # The same geometry under every compressor, without separators, plus the separators the spatial
            # schema adds: a model with any (compressor, spatial_schema) reads its count from this row
            # (`visual_token_count`) and `-S compressor=...` never needs a new layouts table.
            **{f"tokens_{c}": self.with_compressor(c, spatial_schema=False).num_tokens for c in COMPRESSORS},
            "schema_separators": len(spatial_schema_separators(self.grid)) if self.sliced else 0,
        }
