"""Validate every training set of a data source and publish the tables the later stages read.

    <validated>/<set>/valid.parquet, images.parquet     valid samples and valid images of one set
    <validated>/images.parquet                          every valid image of every set, path relative to
                                                        the raw root (what the layouts stage lays out)
    <quarantine>/<set>/quarantine.parquet, bad_images.parquet
    <reports>/<set>/metrics.json, gx_report.json, gx_report.html, and <reports>/metrics.json (all sets)
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from components.atomic import write_table_atomically

from .catalog import TRAINING_SETS
from .validation import validate_annotations


def validate_training_sets(raw_root: str | Path, source: str, validated: str | Path, quarantine: str | Path,
                           reports: str | Path, settings, progress: bool = True) -> dict:
    """Run validate_annotations on each training set of `source`; return the combined metrics."""
    raw_root, validated, quarantine, reports = map(Path, (raw_root, validated, quarantine, reports))
    for folder in (validated, quarantine):
        if folder.exists():  # the stage owns these outs: nothing stale from another source survives
            shutil.rmtree(folder)
    combined, image_tables = {"source": source, "sets": {}}, []
    for spec in TRAINING_SETS[source]:
        out = validated / spec.name
        report = validate_annotations(
            raw_root / spec.annotations, raw_root / spec.image_root, out, dataset_name=spec.name,
            full_decode_fraction=settings.full_decode_fraction, max_pixels=settings.max_pixels,
            seed=settings.seed, workers=settings.workers, report_dir=reports / spec.name,
            quarantine_dir=quarantine / spec.name, progress=progress)
        images = pq.read_table(out / "images.parquet")
        prefixed = pc.binary_join_element_wise(spec.image_root, images.column("path"), "/")
        image_tables.append(images.set_column(images.schema.get_field_index("path"), "path", prefixed))
        combined["sets"][spec.name] = {key: report.metrics[key] for key in
                                       ("rows_in", "valid", "quarantined", "quarantined_fraction")}
        combined["sets"][spec.name]["images"] = {k: report.metrics["images"][k] for k in ("referenced", "valid", "bad")}
    # An image used by two sets is laid out once.
    union = pa.concat_tables(image_tables).to_pandas().drop_duplicates("path").sort_values("path")
    union = pa.Table.from_pandas(union, preserve_index=False)
    write_table_atomically(union, validated / "images.parquet")
    combined["images"] = union.num_rows
    combined["rows_in"] = sum(s["rows_in"] for s in combined["sets"].values())
    combined["quarantined"] = sum(s["quarantined"] for s in combined["sets"].values())
    (reports / "metrics.json").write_text(json.dumps(combined, indent=2) + "\n")
    return combined
