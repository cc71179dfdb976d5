"""Peak memory of the layouts stage on a 1.2M-row image table (the size of LCS-558K + the 665K mix).

The table carries known width/height (as the validated table will), so this measures the streaming
machinery itself: record-batch reading, the process pool, Parquet writing and the summary. The input is
written by a separate process so its construction does not count. Target: well under 2 GiB.

    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.layout_memory [--rows 1200000] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def make_table(path: Path, rows: int) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    schema = pa.schema([("path", pa.string()), ("width", pa.int32()), ("height", pa.int32())])
    with pq.ParquetWriter(path, schema) as w:
        for start in range(0, rows, 100_000):
            n = min(100_000, rows - start)
            w.write_table(pa.table({
                "path": [f"images/{i:09d}.jpg" for i in range(start, start + n)],
                "width": rng.integers(32, 4033, n).astype("int32"),
                "height": rng.integers(32, 3025, n).astype("int32"),
            }))


def run_layouts(table: Path, out: Path, workers: int) -> dict:
    from components.slicing.runner import write_layouts

    start = time.perf_counter()
    summary = write_layouts(table, table.parent, out, "uhd", "uhd-eccv", batch_rows=4096, workers=workers,
                            progress=False)
    seconds = time.perf_counter() - start
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"rows": summary.images, "seconds": round(seconds, 1), "rows_per_s": round(summary.images / seconds),
            "driver_peak_rss_mib": round(own), "largest_worker_peak_rss_mib": round(children),
            "peak_rss_upper_bound_mib": round(own + workers * children),
            "output_mib": round(out.stat().st_size / 2**20, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_200_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--role", choices=["driver", "make", "run"], default="driver", help=argparse.SUPPRESS)
    parser.add_argument("--dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "make":
        make_table(Path(args.dir) / "images.parquet", args.rows)
        return
    if args.role == "run":
        print(json.dumps(run_layouts(Path(args.dir) / "images.parquet", Path(args.dir) / "layouts.parquet",
                                     args.workers)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        base = [sys.executable, "-m", "benchmarks.layout_memory", "--rows", str(args.rows), "--dir", tmp,
                "--workers", str(args.workers)]
        subprocess.run([*base, "--role", "make"], check=True)
        result = json.loads(subprocess.run([*base, "--role", "run"], check=True, capture_output=True,
                                           text=True).stdout.strip().splitlines()[-1])
    print(f"{result['rows']:,} rows in {result['seconds']} s ({result['rows_per_s']:,} rows/s, {args.workers} workers)")
    print(f"peak RSS: driver {result['driver_peak_rss_mib']} MiB, largest worker "
          f"{result['largest_worker_peak_rss_mib']} MiB, upper bound for the stage "
          f"{result['peak_rss_upper_bound_mib']} MiB (target < 2048)")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
