"""DVC stage `download`: acquire the raw data named by `data.*` into data/raw/<source>/.

  synthetic  the embedded dataset, generated offline and deterministically (components/data/synthetic.py)
  hub        LCS-558K, the 665K mix and the benchmark files from their public sources
             (components/data/catalog.py), resumable and sha256-verified

The DVC out is the combined manifest (path, bytes, sha256, source, status): DVC tracks that small file,
never the images themselves, so a million files are hashed once (by the downloader), not by DVC again.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from components.config import load_params
from components.data.archives import ArchiveError
from components.data.download import DownloadError
from components.data.synthetic import SyntheticSpec, build_synthetic


def _synthetic(params, raw: Path) -> pa.Table:
    out = raw / "synthetic"
    if out.exists():  # regenerated from the seed: start clean so no stale file survives a size change
        shutil.rmtree(out)
    cfg = params.data.synthetic
    build_synthetic(out, SyntheticSpec(params.data.seed, cfg.train_scenes, cfg.eval_scenes, cfg.easy_vqa_images,
                                       cfg.fine_line_scenes))
    table = pq.read_table(out / "manifest.parquet")
    paths = pa.array(["synthetic/" + p for p in table.column("path").to_pylist()])
    table = table.set_column(0, "path", paths)
    return table.append_column("status", pa.array(["present"] * table.num_rows))


def _hub(params, raw: Path) -> pa.Table:
    from components.data.download import download_all

    return download_all(raw, limit=params.data.hub.limit, workers=params.data.hub.workers)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--raw", default="data/raw", help="root of the raw data")
    parser.add_argument("--manifest", default="data/raw/manifest.parquet", help="the stage's DVC out")
    args = parser.parse_args(argv)
    params = load_params(args.params)
    raw = Path(args.raw)
    raw.mkdir(parents=True, exist_ok=True)

    try:
        manifest = _synthetic(params, raw) if params.data.source == "synthetic" else _hub(params, raw)
    except (DownloadError, ArchiveError, OSError) as err:  # unreachable hosts, disk space, unsafe archives
        print(f"download: {err}", file=sys.stderr)
        return 2
    tmp = Path(args.manifest + ".tmp")
    pq.write_table(manifest, tmp)
    tmp.replace(args.manifest)
    statuses = dict(Counter(manifest.column("status").to_pylist()))
    print(f"download ({params.data.source}): {manifest.num_rows} files {statuses} -> {args.manifest}")
    return 0 if statuses.get("present", 0) else 1


if __name__ == "__main__":
    sys.exit(main())
