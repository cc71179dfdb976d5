"""Run `layout_batch` over an image table with bounded memory: in-process, on local cores, or on Ray.

Memory stays bounded because the input is read in record batches and at most `2 x workers` batches
are in flight; results are written in input order as they complete, so the output is byte-for-byte
the same whatever the parallelism.
"""

from __future__ import annotations

import math
import os
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from components.atomic import partial_path

from .table import NO_RESIZE, LayoutSummary, layout_batch, layout_schema
from .train_time import TrainTimeResize


def read_image_table(path: str | Path, batch_rows: int) -> tuple[Iterator[pa.RecordBatch], int]:
    """Stream (path[, width, height]) batches from a Parquet image table; also return its row count."""
    table = pq.ParquetFile(path)
    names = table.schema_arrow.names
    if "path" not in names:
        raise ValueError(f"{path}: the image table needs a 'path' column (has {names})")
    columns = ["path"] + [c for c in ("width", "height") if c in names]
    return table.iter_batches(batch_size=batch_rows, columns=columns), table.metadata.num_rows


def _local_batches(batches, work: Callable, workers: int) -> Iterator[pa.RecordBatch]:
    if workers <= 1:
        yield from map(work, batches)
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
        pending: deque = deque()
        for batch in batches:
            pending.append(pool.submit(work, batch))
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def _ray_batches(table_path: str, work: Callable, address: str, batch_rows: int) -> Iterator[pa.RecordBatch]:
    """Ray Data: the cluster computes layouts; the driver streams results back and writes one file."""
    import ray

    ray.init(address=address, ignore_reinit_error=True, log_to_driver=False)
    try:
        # Rows come back in input order, so the table is the same as a local run's.
        ray.data.DataContext.get_current().execution_options.preserve_order = True
        names = pq.ParquetFile(table_path).schema_arrow.names
        columns = ["path"] + [c for c in ("width", "height") if c in names]
        ds = ray.data.read_parquet(os.path.abspath(table_path)).select_columns(columns)
        ds = ds.map_batches(lambda t: pa.Table.from_batches([work(t)]), batch_format="pyarrow",
                            batch_size=batch_rows)
        for table in ds.iter_batches(batch_format="pyarrow", batch_size=batch_rows):
            yield from table.to_batches()
    finally:
        ray.shutdown()


def write_layouts(
    table_path: str | Path,
    image_root: str | Path,
    out_path: str | Path,
    strategy: str,
    preset: str,
    batch_rows: int = 4096,
    workers: int = 0,
    ray_address: str = "",
    progress: bool = True,
    train_time: TrainTimeResize = NO_RESIZE,
    overview_only: bool = False,
) -> LayoutSummary:
    """Lay out every image of `table_path` into `out_path` (Parquet, `layout_schema`); return the summary.

    train_time / overview_only: `slicing.train_time` (components/slicing/train_time.py); off, the table is the
    plain layouts of the images. The file is written under a temporary name and renamed at the end, so an
    interrupted run never leaves a truncated table behind and a re-run simply replaces it.
    """
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    work = partial(layout_batch, image_root=str(image_root), strategy=strategy, preset=preset,
                   train_time=train_time, overview_only=overview_only)
    workers = workers or os.cpu_count() or 1
    total = pq.ParquetFile(table_path).metadata.num_rows
    # Small tables still get a few batches per worker (but never tiny ones): all cores stay busy.
    batch_rows = max(min(batch_rows, math.ceil(total / (4 * workers))), min(batch_rows, 256))
    batches, _ = read_image_table(table_path, batch_rows)
    if ray_address:
        results = _ray_batches(str(table_path), work, ray_address, batch_rows)
    else:
        results = _local_batches(batches, work, workers)
    summary = LayoutSummary()
    tmp = partial_path(out_path)
    with pq.ParquetWriter(tmp, layout_schema(overview_only), compression="zstd") as writer, tqdm(
        total=total, unit="img", desc=f"layouts {strategy}/{preset}", disable=not progress
    ) as bar:
        for batch in results:
            writer.write_batch(batch)
            summary.update(batch)
            bar.update(batch.num_rows)
    if summary.images != total:  # checked before the rename: a short table never replaces a whole one
        tmp.unlink(missing_ok=True)
        raise RuntimeError(f"layouts: {total} input rows but {summary.images} output rows")
    os.replace(tmp, out_path)
    return summary
