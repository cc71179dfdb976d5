"""The layouts table: one Parquet row per image with its slice layout and token counts.

`layout_batch` is the unit of work (a record batch in, a record batch out), the same function whether
it runs in this process, in a process pool or inside Ray Data's `map_batches`.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from components.compression import COMPRESSORS

from .headers import read_header
from .train_time import TrainTimeResize, plan_training_layout

LAYOUT_SCHEMA = pa.schema(
    [
        ("path", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("format", pa.string()),
        ("orientation", pa.int8()),
        ("strategy", pa.string()),
        ("preset", pa.string()),
        ("grid_cols", pa.int16()),
        ("grid_rows", pa.int16()),
        ("n_slices", pa.int16()),
        ("slice_sizes", pa.list_(pa.list_(pa.int32(), 2))),
        ("overview_w", pa.int32()),
        ("overview_h", pa.int32()),
        ("pre_resized_w", pa.int32()),
        ("pre_resized_h", pa.int32()),
        ("vit_images", pa.int16()),
        ("vit_patches", pa.int32()),
        ("num_separators", pa.int32()),
        ("num_tokens", pa.int32()),
        ("tokens_resampler", pa.int32()),
        ("tokens_spatial_resampler", pa.int32()),
        ("tokens_mlp", pa.int32()),
        ("schema_separators", pa.int32()),
        ("error", pa.string()),
    ]
)
# Pretraining's visual tokens when it encodes overviews only (`slicing.train_time.pretrain_overview_only`,
# `Layout.overview_record`). Only tables laid out with that switch have them, so the default table is unchanged.
OVERVIEW_COLUMNS = [pa.field(f"overview_tokens_{c}", pa.int32()) for c in COMPRESSORS]
NO_RESIZE = TrainTimeResize()


def layout_schema(overview_only: bool = False) -> pa.Schema:
    """LAYOUT_SCHEMA, plus the overview-only token columns when pretraining encodes overviews only."""
    return pa.schema([*LAYOUT_SCHEMA, *OVERVIEW_COLUMNS]) if overview_only else LAYOUT_SCHEMA


def _error_row(path: str, width, height, message: str, schema: pa.Schema = LAYOUT_SCHEMA) -> dict:
    row = dict.fromkeys(schema.names)
    row.update(path=path, width=width, height=height, error=message)
    return row


def layout_one(path: str, image_root: str, strategy: str, preset: str, width=None, height=None,
               train_time: TrainTimeResize = NO_RESIZE, overview_only: bool = False) -> dict:
    """The layout row of one image, as training will encode it (`plan_training_layout`: the train-time resize, if
    any, is the row's `pre_resized` size). Sizes given by the input table are trusted (no file access); otherwise
    the header is read. Any failure becomes an error row: the row is kept, never dropped."""
    schema = layout_schema(overview_only)
    fmt, orientation = None, None
    if width is None or height is None:
        try:
            header = read_header(os.path.join(image_root, path))
        except Exception as err:  # missing, unreadable, not an image, decompression bomb
            return _error_row(path, None, None, f"{type(err).__name__}: {err}", schema)
        width, height, fmt, orientation = header.width, header.height, header.format, header.orientation
    try:
        layout = plan_training_layout(path, int(width), int(height), strategy, preset, train_time)
    except ValueError as err:
        return _error_row(path, width, height, f"ValueError: {err}", schema)
    row = {"path": path, "width": width, "height": height, "format": fmt, "orientation": orientation, "error": None}
    row.update(layout.to_record())
    if overview_only:
        row.update(layout.overview_record())
    return row


def layout_batch(batch: pa.RecordBatch | pa.Table, image_root: str, strategy: str, preset: str,
                 train_time: TrainTimeResize = NO_RESIZE, overview_only: bool = False) -> pa.RecordBatch:
    """Rows (path[, width, height]) -> layout rows, in input order."""
    data = batch.to_pydict()
    paths = data["path"]
    widths = data.get("width") or [None] * len(paths)
    heights = data.get("height") or [None] * len(paths)
    rows = [layout_one(p, image_root, strategy, preset, w, h, train_time, overview_only)
            for p, w, h in zip(paths, widths, heights, strict=True)]
    return pa.RecordBatch.from_pylist(rows, schema=layout_schema(overview_only))


@dataclass
class LayoutSummary:
    """Streaming summary: exact percentiles from value counts (few distinct token counts)."""

    images: int = 0
    errors: int = 0
    tokens: Counter = field(default_factory=Counter)
    slices: Counter = field(default_factory=Counter)
    log2_aspect: Counter = field(default_factory=Counter)  # bins of 0.25 in log2(width / height)

    def update(self, batch: pa.RecordBatch) -> None:
        self.images += batch.num_rows
        ok = batch.filter(pc.is_null(batch.column("error")))
        self.errors += batch.num_rows - ok.num_rows
        self.tokens.update(ok.column("num_tokens").to_pylist())
        self.slices.update(ok.column("n_slices").to_pylist())
        w = ok.column("width").to_numpy(zero_copy_only=False).astype(np.float64)
        h = ok.column("height").to_numpy(zero_copy_only=False).astype(np.float64)
        bins = np.floor(np.log2(w / h) * 4) / 4 if len(w) else []
        self.log2_aspect.update(float(b) for b in bins)

    def percentile(self, q: float) -> int | None:
        """Nearest-rank percentile of the token counts (an actual observed value)."""
        total = sum(self.tokens.values())
        if not total:
            return None
        rank, seen = max(1, int(np.ceil(q / 100 * total))), 0
        for value in sorted(self.tokens):
            seen += self.tokens[value]
            if seen >= rank:
                return int(value)
        return int(max(self.tokens))

    def metrics(self) -> dict:
        n = sum(self.tokens.values())
        mean = sum(v * c for v, c in self.tokens.items()) / n if n else None
        return {
            "images": self.images,
            "errors": self.errors,
            "laid_out": n,
            "tokens": {
                "mean": round(mean, 3) if mean is not None else None,
                "p50": self.percentile(50),
                "p95": self.percentile(95),
                "max": max(self.tokens) if n else None,
                "total": sum(v * c for v, c in self.tokens.items()),
            },
            "slices_histogram": {str(k): v for k, v in sorted(self.slices.items())},
        }
