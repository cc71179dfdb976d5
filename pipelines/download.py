"""DVC stage `download`: acquire the raw data named by `data.*`.

So far the embedded source only: a deterministic set of high-resolution images generated offline
(components/data/synthetic_images.py). Writes <out>/images/* and <out>/manifest.parquet
(path, bytes, sha256, source + the rendered ground truth).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from components.config import load_params
from components.data.synthetic_images import generate_images


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--out", default="data/raw/synthetic", help="output folder (a DVC out)")
    args = parser.parse_args(argv)
    params = load_params(args.params)

    out = Path(args.out)
    if out.exists():  # a stage owns its out: start clean so a smaller num_images leaves no stale files
        shutil.rmtree(out)
    rows = generate_images(out, params.data.num_images, params.data.seed)
    pq.write_table(pa.Table.from_pylist(rows), out / "manifest.parquet")
    print(f"download: {len(rows)} synthetic images (seed {params.data.seed}) -> {out}/manifest.parquet")
    return 0


if __name__ == "__main__":
    sys.exit(main())
