"""The output tables: their Parquet schemas (the columns are described in the package docstring) and the
writers that fill them from a background thread under temporary names, published (renamed) once verified."""

from __future__ import annotations

import os
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from ..llava_format import CONVERSATIONS_TYPE

VALID_SCHEMA = pa.schema([
    ("row", pa.int64()), ("id", pa.string()), ("image", pa.string()), ("conversations", CONVERSATIONS_TYPE),
    ("n_turns", pa.int32()), ("width", pa.int32()), ("height", pa.int32()),
])
QUARANTINE_SCHEMA = pa.schema([
    ("row", pa.int64()), ("id", pa.string()), ("image", pa.string()), ("n_turns", pa.int32()),
    ("reason", pa.string()), ("reasons", pa.list_(pa.string())), ("detail", pa.string()),
    ("raw_json", pa.string()), ("raw", pa.binary()),
])
IMAGES_SCHEMA = pa.schema([
    ("path", pa.string()), ("width", pa.int32()), ("height", pa.int32()), ("format", pa.string()),
    ("mode", pa.string()), ("orientation", pa.int8()), ("full_decode", pa.bool_()),
])
BAD_IMAGES_SCHEMA = pa.schema([
    ("path", pa.string()), ("reason", pa.string()), ("reasons", pa.list_(pa.string())), ("detail", pa.string()),
    ("rows", pa.int64()),
])
OUTPUT_FILES = ("valid.parquet", "quarantine.parquet", "images.parquet", "bad_images.parquet")


class ParquetWriters:
    """Parquet writers fed from a background thread: Arrow encodes and compresses without the GIL, so
    writing overlaps with parsing the next chunk. At most `depth` batches wait."""

    def __init__(self, final: dict[str, Path], depth: int = 2):
        self.final = final
        self.tmp = {name: path.with_name(f".{path.name}.tmp") for name, path in final.items()}
        self.writers = {
            "valid.parquet": pq.ParquetWriter(self.tmp["valid.parquet"], VALID_SCHEMA, compression="zstd"),
            "quarantine.parquet": pq.ParquetWriter(self.tmp["quarantine.parquet"], QUARANTINE_SCHEMA,
                                                   compression="zstd"),
        }
        self.thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="validate-writer")
        self.pending: deque[Future] = deque()
        self.depth = depth

    def write(self, name: str, batch: pa.RecordBatch) -> None:
        if batch.num_rows == 0:
            return
        self.pending.append(self.thread.submit(self.writers[name].write_batch, batch))
        while len(self.pending) > self.depth:
            self.pending.popleft().result()

    def close(self) -> None:
        try:
            while self.pending:
                self.pending.popleft().result()
        finally:
            self.thread.shutdown(wait=True)
            for writer in self.writers.values():
                writer.close()

    def publish(self) -> None:
        for name, tmp in self.tmp.items():
            os.replace(tmp, self.final[name])

    def discard(self) -> None:
        """After a failure: stop writing and remove every temporary file (nothing is published)."""
        self.thread.shutdown(wait=True, cancel_futures=True)
        for writer in self.writers.values():
            try:
                writer.close()
            except Exception:  # already closed, or broken by the failure being handled
                pass
        for path in self.tmp.values():
            path.unlink(missing_ok=True)
