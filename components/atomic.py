"""Files other stages read are replaced whole or not at all: written beside the target, checked, then renamed
(a rename within one folder is atomic), so an interrupted or failed write leaves the previous file in place."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq


def partial_path(path: str | Path) -> Path:
    """Where `path` is written before it is renamed into place (hidden, per process)."""
    path = Path(path)
    return path.with_name(f".{path.name}.partial-{os.getpid()}")


def write_table_atomically(table: pa.Table, path: str | Path, **options) -> Path:
    path, tmp = Path(path), partial_path(path)
    try:
        pq.write_table(table, tmp, **options)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
