"""The raw data of `data.source` under one root, and its manifest (path, bytes, sha256, source, status).

  synthetic  the embedded dataset, generated offline and deterministically (synthetic.py) into <raw>/synthetic/
  hub        LCS-558K, the 665K mix and the benchmark files from their public sources (catalog.py, download/),
             resumable and sha256-verified

`acquire_raw_data(raw, params.data)` returns the manifest with paths relative to <raw>; the download stage writes
it as its DVC out, so DVC hashes that small file, never the images themselves.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from components.config import DataConfig

from .synthetic import DatasetWriter, SyntheticSpec, build_synthetic


def synthetic_manifest(raw: Path, data: DataConfig) -> pa.Table:
    out = raw / "synthetic"
    if out.exists():  # regenerated from the seed: start clean so no stale file survives a size change
        shutil.rmtree(out)
    build_synthetic(out, SyntheticSpec.from_params(data))
    table = pq.read_table(out / "manifest.parquet")
    paths = pa.array(["synthetic/" + p for p in table.column("path").to_pylist()])
    table = table.set_column(0, "path", paths)
    return table.append_column("status", pa.array(["present"] * table.num_rows))


def hub_manifest(raw: Path, data: DataConfig) -> pa.Table:
    from .download import download_all

    return download_all(raw, limit=data.hub.limit, workers=data.hub.workers)


def acquire_benchmarks(raw: str | Path, data: DataConfig) -> Path:
    """The benchmark files alone, for evaluating a model this pipeline did not train (released/dvc.yaml): their
    root. Embedded: the download stage's when present, else generated on their own (each benchmark has its own
    random stream, so the bytes are the same); hub: LLaVA's eval.zip and the benchmarks' sources, nothing else, linked
    into one LLaVA playground/data/eval folder, <raw>/eval_hub (eval_layout.py)."""
    from .synthetic_eval import write_benchmarks

    raw = Path(raw)
    if data.source == "synthetic":
        if (raw / "synthetic" / "eval").is_dir():
            return raw / "synthetic" / "eval"
        out = raw / "synthetic_benchmarks"
        shutil.rmtree(out, ignore_errors=True)
        write_benchmarks(DatasetWriter(out), SyntheticSpec.from_params(data))
        return out / "eval"
    from .catalog import EVAL_DATASETS
    from .download import download_all
    from .eval_layout import build_hub_eval_root

    download_all(raw, limit=data.hub.limit, workers=data.hub.workers, names=EVAL_DATASETS)
    return build_hub_eval_root(raw).root


def acquire_raw_data(raw: str | Path, data: DataConfig) -> pa.Table:
    """Raises DownloadError / ArchiveError / OSError (unreachable hosts, disk space, unsafe archives)."""
    raw = Path(raw)
    raw.mkdir(parents=True, exist_ok=True)
    return synthetic_manifest(raw, data) if data.source == "synthetic" else hub_manifest(raw, data)
