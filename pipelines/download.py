"""DVC stage `download`: acquire the raw data named by `data.*` into data/raw/<source>/.

  synthetic  the embedded dataset, generated offline and deterministically (components/data/synthetic.py)
  hub        LCS-558K, the 665K mix and the benchmark files from their public sources
             (components/data/catalog.py), resumable and sha256-verified

The DVC out is the combined manifest (path, bytes, sha256, source, status): DVC tracks that small file,
never the images themselves, so a million files are hashed once (by the downloader), not by DVC again.
The work is components/data/raw_data.py.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter

from components.atomic import write_table_atomically
from components.config import load_params
from components.data.archives import ArchiveError
from components.data.download import DownloadError
from components.data.raw_data import acquire_raw_data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--raw", default="data/raw", help="root of the raw data")
    parser.add_argument("--manifest", default="data/raw/manifest.parquet", help="the stage's DVC out")
    args = parser.parse_args(argv)
    params = load_params(args.params)
    try:
        manifest = acquire_raw_data(args.raw, params.data)
    except (DownloadError, ArchiveError, OSError) as err:  # unreachable hosts, disk space, unsafe archives
        print(f"download: {err}", file=sys.stderr)
        return 2
    write_table_atomically(manifest, args.manifest)
    statuses = dict(Counter(manifest.column("status").to_pylist()))
    print(f"download ({params.data.source}): {manifest.num_rows} files {statuses} -> {args.manifest}")
    return 0 if statuses.get("present", 0) else 1


if __name__ == "__main__":
    sys.exit(main())
