"""The streaming run (`_Run`) and the entry point, `validate_annotations`.

Chunks of rows come from the parser (parsing.py), get their check columns (annotations.py), register their
distinct new images for the pool (images.py), wait for those images, then are routed by reason bits to
valid.parquet / quarantine.parquet (outputs.py). At the end the check tables go to Great Expectations
(suites.py), which must agree with the routing before anything is published and reported (reports.py).

Processes (workers != 1): the file is parsed in a child process that streams Arrow IPC chunks to this one
(parsing is most of the per-row work), images are checked in a process pool, and GX is imported in a child
process while the stream runs (the import alone takes 3-5 s) and evaluates the suites there; Parquet is
written from a thread. workers=1 does everything in this process (same tables, byte for byte).
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from components.config import ValidateConfig

from ..llava_format import PROBLEMS, SampleChunk, read_spans
from . import rules  # rules.supported_modes(), looked up at call time like the other callers
from .annotations import annotation_checks
from .images import ImageTable, check_images, full_decode_sample
from .outputs import BAD_IMAGES_SCHEMA, IMAGES_SCHEMA, OUTPUT_FILES, QUARANTINE_SCHEMA, VALID_SCHEMA, ParquetWriters
from .parsing import sample_chunks
from .reports import REPORT_FILES, ValidationReport, write_reports
from .rules import (
    ANNOTATION_RULES,
    ANNOTATIONS_INDEX,
    IMAGE_REASONS,
    IMAGES_INDEX,
    REASON_BIT,
    REASONS,
    Rule,
    decode_reasons,
    image_rules,
)
from .suites import GxEngine, ValidationEngineError, reconcile_with_gx

DEFAULTS = ValidateConfig()  # the defaults of validate_annotations: params `validate`'s, in one place
MAX_WAITING = 2  # chunks held while their images are checked


class _Run:
    def __init__(self, annotation_path: Path, image_root: Path, *, dataset_name: str,
                 full_decode_fraction: float, max_pixels: int, seed: int, workers: int, image_batch: int,
                 chunk_rows: int, progress: bool):
        self.annotation_path, self.image_root = annotation_path, image_root
        self.dataset = dataset_name
        self.fraction, self.max_pixels, self.seed = full_decode_fraction, max_pixels, seed
        self.workers = workers or os.cpu_count() or 1
        self.image_batch, self.chunk_rows, self.progress = image_batch, chunk_rows, progress
        self.image_rules = image_rules(max_pixels)
        self.images = ImageTable(self.image_rules, max_pixels)
        self.modes = rules.supported_modes()
        self.seen_ids: set[str] = set()
        self.checks: list[pd.DataFrame] = []
        self.annotation_bits: list[np.ndarray] = []  # per chunk: the annotation rules' bits (unsafe_path can also
        # come from an image check, a link out of the root, which the annotation suite cannot see)
        self.rows_in = self.valid = self.quarantined = self.extra_keys = self.image_samples = 0
        self.reason_counts = dict.fromkeys(REASONS, 0)
        self.primary_counts = dict.fromkeys(REASONS, 0)
        self.spans_fh = None

    # -- streaming --------------------------------------------------------------------------------

    def stream(self, writers: ParquetWriters, pool) -> None:
        work = partial(check_images, image_root=str(self.image_root), max_pixels=self.max_pixels, modes=self.modes)
        futures: deque = deque()  # (future or result, sampled mask, images in the batch), in image order
        waiting: deque = deque()  # (chunk, check table, paths, image_idx, images that must be resolved first)
        size = os.path.getsize(self.annotation_path)
        bar = tqdm(total=size, unit="B", unit_scale=True, desc=f"validate {self.dataset}", disable=not self.progress)
        with bar, open(self.annotation_path, "rb") as self.spans_fh:
            for chunk in sample_chunks(self.annotation_path, self.chunk_rows, in_process=self.workers <= 1):
                table, paths = annotation_checks(chunk)
                image_idx, new = self.images.register(paths)
                for start in range(0, len(new), self.image_batch):
                    batch = new[start:start + self.image_batch]
                    sampled = full_decode_sample(batch, self.fraction, self.seed)
                    args = (batch, sampled.tolist())
                    futures.append((pool.submit(work, *args) if pool else work(*args), sampled, len(batch)))
                waiting.append((chunk, table, paths, image_idx, len(self.images.paths)))
                # Chunks wait for their images; at most MAX_WAITING of them are held (bounded memory).
                while waiting and (len(waiting) > MAX_WAITING or self._ready(futures, waiting[0][-1])):
                    self._resolve(futures, waiting[0][-1])
                    self._finish_chunk(*waiting.popleft()[:-1], writers)
                bar.update(int(chunk.byte_len.sum()))
                bar.set_postfix(rows=self.rows_in + sum(w[0].n for w in waiting), images=len(self.images.paths),
                                refresh=False)
            while waiting:
                self._resolve(futures, waiting[0][-1])
                self._finish_chunk(*waiting.popleft()[:-1], writers)
            bar.update(size - bar.n)

    def _ready(self, futures: deque, needed: int) -> bool:
        pending = needed - self.images.resolved
        for result, _, count in futures:
            if pending <= 0:
                break
            if isinstance(result, Future) and not result.done():
                return False
            pending -= count
        return True

    def _resolve(self, futures: deque, needed: int) -> None:
        while self.images.resolved < needed:
            result, sampled, _ = futures.popleft()
            self.images.add_results(result.result() if isinstance(result, Future) else result, sampled)

    def _finish_chunk(self, chunk: SampleChunk, table: pd.DataFrame, paths: list, image_idx: np.ndarray,
                      writers: ParquetWriters) -> None:
        n = chunk.n
        bits = np.zeros(n, dtype=np.int64)
        for rule in ANNOTATION_RULES:
            if rule.kind == "unique":
                continue
            bits |= np.where(rule.violations(table[rule.column]), REASON_BIT[rule.reason], 0)
        bits |= np.where(self._duplicates(chunk.id), REASON_BIT["duplicate_id"], 0)
        self.annotation_bits.append(bits.copy())  # what the annotation suite must agree with (no image verdicts)
        has_image = image_idx >= 0
        bits[has_image] |= self.images.bits[image_idx[has_image]]
        valid = bits == 0
        np.add.at(self.images.rows, image_idx[has_image], 1)
        self.images.used[image_idx[has_image & valid]] = True

        self.rows_in += n
        self.valid += int(valid.sum())
        self.quarantined += int(n - valid.sum())
        self.extra_keys += int(chunk.extra_keys.sum())
        self.image_samples += int(chunk.has_image.sum())
        for code, bit in REASON_BIT.items():
            self.reason_counts[code] += int(np.count_nonzero(bits & bit))
        self.checks.append(table)

        keep = pa.array(valid)
        width = np.where(has_image, self.images.width[np.maximum(image_idx, 0)], 0)
        height = np.where(has_image, self.images.height[np.maximum(image_idx, 0)], 0)
        valid_batch = pa.record_batch([
            pa.array(chunk.rows), chunk.id, pa.array(paths, pa.string()), chunk.conversations(),
            pa.array(chunk.n_turns),
            pa.array(width.astype(np.int32), mask=~has_image), pa.array(height.astype(np.int32), mask=~has_image),
        ], schema=VALID_SCHEMA).filter(keep)
        writers.write("valid.parquet", valid_batch)
        if not valid.all():
            writers.write("quarantine.parquet", self._quarantine_batch(chunk, bits, image_idx, ~valid))

    def _duplicates(self, ids: pa.StringArray) -> np.ndarray:
        seen = self.seen_ids
        out = np.zeros(len(ids), dtype=bool)
        for i, sample_id in enumerate(ids.to_pylist()):
            if sample_id is None:
                continue
            if sample_id in seen:
                out[i] = True
            else:
                seen.add(sample_id)
        return out

    def _quarantine_batch(self, chunk: SampleChunk, bits: np.ndarray, image_idx: np.ndarray,
                          mask: np.ndarray) -> pa.RecordBatch:
        where = np.flatnonzero(mask)
        raws = read_spans(self.spans_fh, zip(chunk.byte_start[where].tolist(), chunk.byte_len[where].tolist(),
                                             strict=True))
        reasons, primary, details = [], [], []
        for i in where:
            codes = decode_reasons(int(bits[i]))
            reasons.append(codes)
            primary.append(codes[0])
            self.primary_counts[codes[0]] += 1
            details.append(self._detail(chunk, int(i), codes, int(image_idx[i])))
        take = pa.array(where)
        return pa.record_batch([
            pa.array(chunk.rows[where]), chunk.id.take(take), chunk.image.take(take), pa.array(chunk.n_turns[where]),
            pa.array(primary, pa.string()), pa.array(reasons, pa.list_(pa.string())), pa.array(details, pa.string()),
            pa.array([r.decode("utf-8", "backslashreplace") for r in raws], pa.string()),
            pa.array(raws, pa.binary()),
        ], schema=QUARANTINE_SCHEMA)

    def _detail(self, chunk: SampleChunk, i: int, codes: list[str], image: int) -> str:
        parts = []
        problem = chunk.problem[i]
        if problem:
            text = PROBLEMS[problem]
            parts.append(f"{text} (has {chunk.n_turns[i]})" if problem == "bad_turn_count" else text)
        for code in codes:
            if code != "malformed" and not code.startswith("image_"):
                parts.append(REASONS[code])
        if image >= 0 and self.images.bits[image]:
            parts.append(self.images.details[image])
        return "; ".join(parts)

    # -- after the stream -------------------------------------------------------------------------

    def image_outputs(self, image_frame: pd.DataFrame, tmp: dict[str, Path], image_root: Path) -> dict:
        n = len(image_frame)
        bits = self.images.bits[:n]
        good = bits == 0
        keep = good & self.images.used[:n]
        mask = pa.array(keep)
        table = pa.table({
            "path": pa.array(image_frame["path"].array, pa.string()).filter(mask),
            "width": pa.array(self.images.width[:n][keep]),
            "height": pa.array(self.images.height[:n][keep]),
            "format": pa.array(image_frame["format"].array, pa.string()).filter(mask),
            "mode": pa.array(image_frame["mode"].array, pa.string()).filter(mask),
            "orientation": pa.array(image_frame["orientation"].to_numpy()[keep].astype(np.int8)),
            "full_decode": pa.array(image_frame["full_decode"].array, pa.bool_()).filter(mask),
        }, schema=IMAGES_SCHEMA.with_metadata({"image_root": str(image_root), "dataset": self.dataset}))
        pq.write_table(table, tmp["images.parquet"], compression="zstd")
        bad = np.flatnonzero(~good)
        reasons = [decode_reasons(int(bits[i])) for i in bad]
        bad_table = pa.table({
            "path": pa.array([self.images.paths[i] for i in bad], pa.string()),
            "reason": pa.array([r[0] for r in reasons], pa.string()),
            "reasons": pa.array(reasons, pa.list_(pa.string())),
            "detail": pa.array([self.images.details[int(i)] for i in bad], pa.string()),
            "rows": pa.array(self.images.rows[bad]),
        }, schema=BAD_IMAGES_SCHEMA)
        pq.write_table(bad_table, tmp["bad_images.parquet"], compression="zstd")
        sampled = np.concatenate(self.images.sampled) if n else np.zeros(0, dtype=bool)
        decoded = image_frame["full_decode"]
        return {
            "referenced": n,
            "valid": int(good.sum()),
            "bad": int((~good).sum()),
            "by_reason": {code: int(np.count_nonzero(bits & REASON_BIT[code])) for code in IMAGE_REASONS},
            "full_decode_fraction": self.fraction,
            "full_decode_sampled": int(sampled.sum()),
            "full_decode_checked": int(decoded.notna().sum()),
            "full_decode_failed": int((decoded.notna() & ~decoded.fillna(True)).sum()),
            "in_table": int(keep.sum()),
        }


def validate_annotations(
    annotation_path: str | os.PathLike,
    image_root: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    dataset_name: str,
    full_decode_fraction: float = DEFAULTS.full_decode_fraction,
    max_pixels: int = DEFAULTS.max_pixels,
    seed: int = DEFAULTS.seed,
    workers: int = DEFAULTS.workers,
    report_dir: str | os.PathLike | None = None,
    quarantine_dir: str | os.PathLike | None = None,
    image_batch: int = 512,
    chunk_rows: int = 32768,
    progress: bool = True,
) -> ValidationReport:
    """Validate one LLaVA annotation file and its images; write the tables and the reports (package doc).

    full_decode_fraction  share of distinct images fully decoded (seeded by `seed`, by path) to catch
                          truncated files; 0 = headers only, 1 = every image.
    max_pixels            decompression-bomb limit (PIL's MAX_IMAGE_PIXELS).
    workers               processes for the image checks; 0 = one per core; 1 = everything in this process
                          (images and GX; otherwise GX runs in one child process, imported early).
    report_dir            where metrics.json and the GX report go (default: out_dir).
    quarantine_dir        where quarantine.parquet and bad_images.parquet go (default: out_dir).
    The other defaults are params `validate`'s (components/config.py ValidateConfig).

    Raises AnnotationFormatError (the file is not JSON at all), FileNotFoundError (no such annotation
    file or image root) and ValidationEngineError (GX and the streamed checks disagree). Bad samples and
    bad images never raise: they are quarantined with their reason codes.
    """
    started = time.perf_counter()
    annotation_path, image_root = Path(annotation_path), Path(image_root)
    if not annotation_path.is_file():
        raise FileNotFoundError(f"annotation file not found: {annotation_path}")
    if not image_root.is_dir():
        raise FileNotFoundError(f"image root is not a directory: {image_root}")
    if not 0.0 <= full_decode_fraction <= 1.0:
        raise ValueError(f"full_decode_fraction must be in [0, 1], got {full_decode_fraction}")
    if max_pixels < 1:
        raise ValueError(f"max_pixels must be >= 1, got {max_pixels}")
    out_dir = Path(out_dir)
    report_dir = Path(report_dir) if report_dir is not None else out_dir
    quarantine_dir = Path(quarantine_dir) if quarantine_dir is not None else out_dir
    for folder in (out_dir, report_dir, quarantine_dir):
        folder.mkdir(parents=True, exist_ok=True)
    final = {name: (quarantine_dir if name in ("quarantine.parquet", "bad_images.parquet") else out_dir) / name
             for name in OUTPUT_FILES}

    run = _Run(annotation_path, image_root, dataset_name=dataset_name,
               full_decode_fraction=full_decode_fraction, max_pixels=int(max_pixels), seed=seed, workers=workers,
               image_batch=image_batch, chunk_rows=chunk_rows, progress=progress)
    writers = ParquetWriters(final)
    gx_engine = GxEngine(in_process=run.workers <= 1)
    timings = {}
    try:
        with _image_pool(run.workers) as pool:
            run.stream(writers, pool)
        writers.close()
        timings["stream_s"] = time.perf_counter() - started

        image_frame = run.images.frame()
        image_summary = run.image_outputs(image_frame, writers.tmp, image_root)
        checks = pd.concat(run.checks, ignore_index=True)
        annotation_bits = np.concatenate(run.annotation_bits)

        gx_started = time.perf_counter()
        gx = gx_engine.evaluate({
            "annotations": (checks, ANNOTATION_RULES, ANNOTATIONS_INDEX),
            "images": (image_frame.drop(columns=["error"]), run.image_rules, IMAGES_INDEX),
        }, dataset_name)
        timings["gx_s"] = time.perf_counter() - gx_started
        reconcile_with_gx("annotations", ANNOTATION_RULES, gx["annotations"],
                          _streamed_rows(checks[ANNOTATIONS_INDEX].to_numpy(), annotation_bits, ANNOTATION_RULES),
                          first_of_duplicates=True)
        reconcile_with_gx("images", run.image_rules, gx["images"],
                          _streamed_rows(image_frame[IMAGES_INDEX].to_numpy(), run.images.bits[:len(image_frame)],
                                         run.image_rules))
        if run.rows_in != run.valid + run.quarantined:
            raise ValidationEngineError(f"rows_in {run.rows_in} != valid {run.valid} + quarantined {run.quarantined}")
        _check_written(writers.tmp, run)
    except BaseException:
        writers.discard()
        raise
    finally:
        gx_engine.close()
    writers.publish()
    timings["total_s"] = time.perf_counter() - started

    gx_summary = {name: {"success": suite["success"], "evaluated": int(suite["statistics"]["evaluated_expectations"]),
                         "failed": int(suite["statistics"]["unsuccessful_expectations"])}
                  for name, suite in gx.items()}
    metrics = {
        "dataset": dataset_name,
        "rows_in": run.rows_in,
        "valid": run.valid,
        "quarantined": run.quarantined,
        "quarantined_fraction": round(run.quarantined / run.rows_in, 6) if run.rows_in else 0.0,
        "image_samples": run.image_samples,
        "text_only_samples": run.rows_in - run.image_samples,
        "rows_with_extra_keys": run.extra_keys,
        "reasons": run.reason_counts,
        "primary_reasons": run.primary_counts,
        "images": image_summary,
        "gx": gx_summary,
    }
    report = ValidationReport(
        dataset=dataset_name, rows_in=run.rows_in, valid=run.valid, quarantined=run.quarantined,
        reasons=run.reason_counts, primary_reasons=run.primary_counts, images=image_summary, gx=gx_summary,
        metrics=metrics, outputs={name: str(path) for name, path in final.items()}, timings=timings,
    )
    write_reports(report, gx, report_dir, annotation_path, image_root)
    report.outputs.update({name: str(report_dir / name) for name in REPORT_FILES})
    return report


@contextmanager
def _image_pool(workers: int) -> Iterator[ProcessPoolExecutor | None]:
    if workers <= 1:
        yield None
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
        yield pool


def _streamed_rows(index: np.ndarray, bits: np.ndarray, rules: tuple[Rule, ...]) -> dict[str, set[int]]:
    return {rule.reason: set(index[(bits & REASON_BIT[rule.reason]) != 0].tolist()) for rule in rules}


def _check_written(tmp: dict[str, Path], run: _Run) -> None:
    written = {name: pq.ParquetFile(tmp[name]).metadata.num_rows for name in ("valid.parquet", "quarantine.parquet")}
    if written["valid.parquet"] != run.valid or written["quarantine.parquet"] != run.quarantined:
        raise ValidationEngineError(f"rows written {written} differ from the counts (valid {run.valid}, "
                                    f"quarantined {run.quarantined})")
