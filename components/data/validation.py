"""Validation of a LLaVA annotation file and the images it references -> valid / quarantine / image tables.

One streaming pass, bounded memory, nothing lost:

  annotation file --(llava_format: chunks)--> per-row check columns (vectorised: pyarrow / numpy)
        |                                       +--> distinct new image paths --> process pool: headers
        |                                             (read_header, EXIF-aware), size, pixel limit, mode,
        |                                             full decode (pixels.load_image) of a seeded sample
        v
  rows + reason bits --> valid.parquet (+ image width/height) | quarantine.parquet (reasons, raw JSON)
  check tables (every row / every image) --> Great Expectations suites --> verdict + GX report

Every rule is one `Rule` (a reason code, a check column, an expectation kind). The stream applies the rule's
vectorised predicate to route rows; then Great Expectations 1.x evaluates the same rules as two expectation
suites (annotations, images) over the complete check tables (ephemeral context, pandas data source,
result_format COMPLETE with `row` / `image_index` as unexpected_index_column_names). Nothing is published
unless, reason by reason, the rows GX reports as unexpected are exactly the rows routed to quarantine with
that reason (`duplicate_id`: GX lists every row of a duplicated id; the first occurrence stays valid, the
later ones are quarantined); any disagreement raises `ValidationEngineError`.

Processes (workers != 1): the file is parsed in a child process that streams Arrow IPC chunks to this one
(parsing is most of the per-row work), images are checked in a process pool, and GX is imported in a child
process while the stream runs (the import alone takes 3-5 s) and evaluates the suites there; Parquet is
written from a thread. workers=1 does everything in this process (same tables, byte for byte).

Outputs (atomic: written under temporary names, renamed once verified) in `out_dir` (the quarantine tables
in `quarantine_dir` when one is given):
  valid.parquet       row, id, image (normalised path, null for text-only), conversations
                      (list<struct<from, value>>), n_turns, width, height (displayed size, EXIF applied)
  quarantine.parquet  row, id, image, n_turns, reason (primary), reasons (all), detail, raw_json, raw (bytes)
  images.parquet      one row per distinct valid image used by a valid row: path, width, height, format,
                      mode, orientation, full_decode (true: decoded in the sample; null: not sampled)
  bad_images.parquet  one row per distinct failing image: path, reason, reasons, detail, rows
and in `report_dir` (default `out_dir`): metrics.json (counts; rows_in == valid + quarantined),
gx_report.json (summary + GX's own result dicts, unexpected lists cut to a few examples), gx_report.html.
"""

from __future__ import annotations

import html
import json
import multiprocessing
import os
import posixpath
import re
import time
import warnings
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache, partial
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from PIL import Image, ImageFile
from tqdm import tqdm

from components.slicing.headers import read_header
from components.slicing.pixels import load_image, to_rgb

from .llava_format import (
    CHUNK_SCHEMA,
    CONVERSATIONS_TYPE,
    IMAGE_TOKEN,
    PROBLEMS,
    SampleChunk,
    iter_sample_chunks,
    read_spans,
)

# ---------------------------------------------------------------------------------------------------
# Reason codes and rules

# Order = priority of the primary `reason` when a row has several.
REASONS: dict[str, str] = {
    "malformed": "sample is not {id, conversations: even list (>= 2) of {from, value} strings[, image: str]}",
    "non_utf8": "text that was not valid UTF-8 (undecodable bytes or lone surrogate escapes)",
    "duplicate_id": "id already used by an earlier sample",
    "unsafe_path": "image path is absolute or escapes the image root",
    "missing_image_token": "image sample without <image> in its first (human) turn",
    "multiple_image_tokens": "more than one <image> in the first turn",
    "unexpected_image_token": "<image> in a text-only sample or after the first turn",
    "bad_roles": "turns do not alternate human/gpt starting with human",
    "empty_turn": "a turn's value is empty or whitespace only",
    "image_missing": "image file does not exist",
    "image_unreadable": "image header cannot be decoded (empty, not an image, corrupt)",
    "image_bad_size": "image width or height outside [1, 65535]",
    "image_too_large": "image pixel count above the decompression-bomb limit (max_pixels)",
    "image_bad_mode": "image mode that pixels.to_rgb cannot convert",
    "image_truncated": "full decode failed (truncated or corrupt pixel data), sampled images only",
}
REASON_BIT = {code: 1 << i for i, code in enumerate(REASONS)}
IMAGE_REASONS = tuple(code for code in REASONS if code.startswith("image_"))
MAX_SIDE = 65535  # JPEG's limit, and the largest side the slicing code is tested for

ANNOTATIONS_INDEX = "row"
MAX_WAITING = 2  # chunks held while their images are checked
IMAGES_INDEX = "image_index"


@dataclass(frozen=True)
class Rule:
    """One check: rows whose `column` violates it get `reason`. The same rule is a vectorised predicate
    (routing rows while streaming) and a Great Expectations expectation (verifying the whole table)."""

    name: str
    reason: str
    column: str
    kind: str  # in_set | between | unique
    value_set: tuple = ()
    min_value: float | None = None
    max_value: float | None = None
    description: str = ""

    def expectation(self):
        import great_expectations.expectations as gxe

        common = dict(column=self.column, meta={"reason": self.reason, "rule": self.name},
                      description=self.description or REASONS[self.reason])
        if self.kind == "unique":
            return gxe.ExpectColumnValuesToBeUnique(**common)
        if self.kind == "in_set":
            return gxe.ExpectColumnValuesToBeInSet(value_set=list(self.value_set), **common)
        return gxe.ExpectColumnValuesToBeBetween(min_value=self.min_value, max_value=self.max_value, **common)

    def violations(self, values) -> np.ndarray:
        """Boolean mask of the values that break the rule; nulls never do (GX skips them too)."""
        series = values if isinstance(values, pd.Series) else pd.Series(values)
        present = series.notna()
        if self.kind == "unique":
            return (present & series.duplicated(keep=False)).to_numpy(bool)
        if self.kind == "in_set":
            return (present & ~series.isin(list(self.value_set))).to_numpy(bool)
        bad = pd.Series(False, index=series.index)
        if self.min_value is not None:
            bad |= series < self.min_value
        if self.max_value is not None:
            bad |= series > self.max_value
        return (present & bad.fillna(False)).to_numpy(bool)


ANNOTATION_RULES: tuple[Rule, ...] = (
    Rule("unique_id", "duplicate_id", "id", "unique"),
    Rule("well_formed", "malformed", "structure", "in_set", ("ok",)),
    Rule("utf8", "non_utf8", "non_utf8", "in_set", (False,)),
    Rule("safe_path", "unsafe_path", "path_ok", "in_set", (True,)),
    Rule("image_token_present", "missing_image_token", "first_turn_image_tokens", "between", min_value=1),
    Rule("image_token_single", "multiple_image_tokens", "first_turn_image_tokens", "between", max_value=1),
    Rule("no_stray_image_token", "unexpected_image_token", "stray_image_tokens", "between", min_value=0,
         max_value=0),
    Rule("roles_alternate", "bad_roles", "roles_ok", "in_set", (True,)),
    Rule("no_empty_turn", "empty_turn", "min_value_len", "between", min_value=1),
)


def image_rules(max_pixels: int) -> tuple[Rule, ...]:
    """The image suite: one row per distinct image referenced by a sample with a safe path."""
    return (
        Rule("image_exists", "image_missing", "exists", "in_set", (True,)),
        Rule("image_readable", "image_unreadable", "readable", "in_set", (True,)),
        Rule("image_width", "image_bad_size", "width", "between", min_value=1, max_value=MAX_SIDE),
        Rule("image_height", "image_bad_size", "height", "between", min_value=1, max_value=MAX_SIDE),
        Rule("image_pixels", "image_too_large", "pixels", "between", max_value=max_pixels),
        Rule("image_mode", "image_bad_mode", "mode", "in_set", tuple(sorted(supported_modes()))),
        Rule("image_decodes", "image_truncated", "full_decode", "in_set", (True,)),
    )


@cache
def supported_modes() -> frozenset[str]:
    """The PIL modes `pixels.to_rgb` (the training decoder) converts, found by trying each on a tiny image."""
    modes = set()
    for mode in Image.MODES:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                probes = [Image.new(mode, (2, 2))]
                if mode == "P":
                    probes.append(Image.new(mode, (2, 2)))
                    probes[-1].info["transparency"] = 0
                if all(to_rgb(p).mode == "RGB" for p in probes):
                    modes.add(mode)
        except Exception:  # a mode PIL cannot create or to_rgb cannot convert is not supported
            continue
    return frozenset(modes)


# ---------------------------------------------------------------------------------------------------
# Image paths

_SUSPECT_PATH = r"(^$|^/|^[A-Za-z]:|\\|//|(^|/)\.\.?(/|$)|\x00|/$)"  # RE2: paths that need a closer look
_DRIVE = re.compile(r"^[A-Za-z]:")


def normalize_image_path(path: str) -> str | None:
    """The path relative to the image root, normalised; None if it is absolute or escapes the root.

    Backslashes count as separators (a Windows-made file must not smuggle `..\\`), `a/./b` and `a/../b`
    collapse (`b` is inside the root), `../b`, `/b`, `C:b` and empty paths are unsafe.
    """
    if not path or "\x00" in path:
        return None
    path = path.replace("\\", "/")
    if path.startswith("/") or _DRIVE.match(path):
        return None
    path = posixpath.normpath(path)
    if path in (".", "..") or path.startswith("../"):
        return None
    return path


# ---------------------------------------------------------------------------------------------------
# Image checks (run in worker processes)

IMAGE_RESULT_FIELDS = ("exists", "readable", "width", "height", "format", "mode", "orientation", "full_decode",
                       "error")


@contextmanager
def _pil_guards():
    """Header reads must see any claimed size (the pixel limit is ours, `max_pixels`), and a truncated file
    must fail to decode whatever another library set globally."""
    saved = Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES
    Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES = None, False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES = saved


def check_images(paths: list[str], decode: list[bool], *, image_root: str, max_pixels: int,
                 modes: frozenset[str]) -> dict[str, list]:
    """Header checks for each path (relative to image_root), and a full decode where `decode` says so.

    Returns columns (IMAGE_RESULT_FIELDS), one value per path. Never raises for a bad file: `exists`,
    `readable`, the size, mode and `full_decode` (None: not decoded) carry the verdict, `error` the cause.
    """
    out: dict[str, list] = {name: [] for name in IMAGE_RESULT_FIELDS}
    with _pil_guards():
        for path, want_decode in zip(paths, decode, strict=True):
            full = os.path.join(image_root, path)
            exists, readable, header, decoded, error = True, None, None, None, None
            try:
                header = read_header(full)
                readable = True
            except FileNotFoundError as err:
                exists, error = False, f"FileNotFoundError: {err.strerror}"
            except Exception as err:  # empty, not an image, corrupt header, a directory ...
                readable, error = False, f"{type(err).__name__}: {err}"
            if header is not None and want_decode and _decodable(header, max_pixels, modes):
                try:
                    size = load_image(full).size
                    decoded = size == (header.width, header.height)
                    if not decoded:
                        error = f"decoded size {size[0]}x{size[1]} differs from the header's"
                except Exception as err:
                    decoded, error = False, f"{type(err).__name__}: {err}"
            out["exists"].append(exists)
            out["readable"].append(readable)
            out["width"].append(header.width if header else None)
            out["height"].append(header.height if header else None)
            out["format"].append(header.format if header else None)
            out["mode"].append(header.mode if header else None)
            out["orientation"].append(header.orientation if header else None)
            out["full_decode"].append(decoded)
            out["error"].append(error)
    return out


def _decodable(header, max_pixels: int, modes: frozenset[str]) -> bool:
    return (1 <= header.width <= MAX_SIDE and 1 <= header.height <= MAX_SIDE
            and header.width * header.height <= max_pixels and header.mode in modes)


def full_decode_sample(paths: list[str], fraction: float, seed: int) -> np.ndarray:
    """Deterministic sample: an image is decoded iff a seeded hash of its path falls under `fraction`.
    Membership depends on (path, seed) only: the same whatever the order, chunking or worker count."""
    if fraction <= 0 or not paths:
        return np.zeros(len(paths), dtype=bool)
    if fraction >= 1:
        return np.ones(len(paths), dtype=bool)
    hashes = pd.util.hash_array(np.asarray(paths, dtype=object), hash_key=f"uhd-val-{seed & 0xFFFFFFFF:08x}")
    return hashes < np.uint64(int(fraction * 2.0**64))


# ---------------------------------------------------------------------------------------------------
# Output schemas

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
REPORT_FILES = ("metrics.json", "gx_report.json", "gx_report.html")


class ValidationEngineError(RuntimeError):
    """Great Expectations and the streamed checks disagree (or GX failed): nothing is published."""


@dataclass
class ValidationReport:
    dataset: str
    rows_in: int
    valid: int
    quarantined: int
    reasons: dict[str, int]  # rows having each reason (a row may have several)
    primary_reasons: dict[str, int]  # rows by their primary `reason`
    images: dict  # referenced / valid / bad / by_reason / full decode sample / in_table
    gx: dict  # per suite: evaluated, failed expectations, success
    metrics: dict  # what metrics.json holds
    outputs: dict[str, str] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------------
# Per-chunk row checks (vectorised)


def annotation_checks(chunk: SampleChunk) -> tuple[pd.DataFrame, list]:
    """The check columns of a chunk (one row per sample, nulls where a check does not apply) and the
    normalised image path of each sample (None: text-only, malformed or unsafe)."""
    n = chunk.n
    well_formed = chunk.well_formed
    offsets = chunk.turn_offsets
    turn_row = np.repeat(np.arange(n), np.diff(offsets))
    firsts = offsets[:-1][well_formed]  # well-formed rows have >= 2 turns

    tokens = image_token_counts(chunk.turn_value)
    first_tokens = np.zeros(n, dtype=np.int64)
    first_tokens[well_formed] = tokens[firsts]
    total_tokens = np.bincount(turn_row, weights=tokens, minlength=n).astype(np.int64)
    image_rows = well_formed & chunk.has_image
    first_turn_image_tokens = np.where(image_rows, first_tokens, np.nan)
    stray_image_tokens = np.where(well_formed, total_tokens - np.where(image_rows, first_tokens, 0), np.nan)

    roles_ok = pd.arrays.BooleanArray(chunk.roles_ok, ~well_formed)  # compared while reading (llava_format)

    lengths = pc.binary_length(chunk.turn_value).to_numpy(zero_copy_only=False).astype(np.int64)
    blank = pc.utf8_is_space(chunk.turn_value).to_numpy(zero_copy_only=False)
    lengths[blank] = 0
    min_value_len = np.full(n, np.nan)
    if len(firsts):
        min_value_len[well_formed] = np.minimum.reduceat(lengths, firsts)

    paths, path_ok = _normalise_paths(chunk.image, image_rows)
    table = pd.DataFrame({
        ANNOTATIONS_INDEX: chunk.rows,
        "id": chunk.id.to_pandas(),
        "structure": pd.array([p or "ok" for p in chunk.problem], dtype="str"),
        "non_utf8": chunk.non_utf8,
        "path_ok": path_ok,
        "first_turn_image_tokens": first_turn_image_tokens,
        "stray_image_tokens": stray_image_tokens,
        "roles_ok": roles_ok,
        "min_value_len": min_value_len,
    })
    return table, paths


_IMAGE_TOKEN_BYTES = re.compile(re.escape(IMAGE_TOKEN.encode()))


def image_token_counts(values: pa.StringArray) -> np.ndarray:
    """Non-overlapping occurrences of <image> in each string (what pc.count_substring computes, ~4x faster:
    one regex pass over the whole UTF-8 data buffer, hits attributed to strings by their offsets)."""
    n = len(values)
    counts = np.zeros(n, dtype=np.int64)
    _, offsets_buffer, data = values.buffers()
    if n == 0 or data is None:
        return counts
    offsets = np.frombuffer(offsets_buffer, dtype=np.int32, count=n + 1, offset=values.offset * 4)
    hits = np.fromiter((m.start() for m in _IMAGE_TOKEN_BYTES.finditer(memoryview(data), int(offsets[0]),
                                                                        int(offsets[-1]))), dtype=np.int64)
    if len(hits):
        owner = np.searchsorted(offsets, hits, side="right") - 1
        inside = hits + len(IMAGE_TOKEN) <= offsets[owner + 1]  # not straddling two strings
        counts += np.bincount(owner[inside], minlength=n)
    return counts


def _normalise_paths(images: pa.StringArray, image_rows: np.ndarray) -> tuple[list, pd.arrays.BooleanArray]:
    n = len(images)
    raw = images.to_pylist()
    paths: list = [None] * n
    ok = np.zeros(n, dtype=bool)
    suspect = pc.match_substring_regex(images, _SUSPECT_PATH).to_numpy(zero_copy_only=False)
    for i in np.flatnonzero(image_rows):
        path = normalize_image_path(raw[i]) if suspect[i] else raw[i]
        paths[i], ok[i] = path, path is not None
    return paths, pd.arrays.BooleanArray(ok, ~image_rows)


# ---------------------------------------------------------------------------------------------------
# The run


def sample_chunks(annotation_path: Path, chunk_rows: int, in_process: bool) -> Iterator[SampleChunk]:
    """`iter_sample_chunks`, here or in a child process that parses while this one checks, routes and
    writes (parsing is two thirds of the per-row work). The child streams Arrow IPC through a pipe, which
    holds about one chunk, so memory stays bounded; an error in the child (AnnotationFormatError ...)
    is raised here."""
    if in_process:
        yield from iter_sample_chunks(annotation_path, chunk_rows=chunk_rows)
        return
    context = multiprocessing.get_context()
    data_read, data_write = context.Pipe(duplex=False)  # Connections: their descriptors survive spawn too
    status_read, status_write = context.Pipe(duplex=False)
    _widen_pipe(data_write.fileno())
    child = context.Process(target=_parse_into, args=(str(annotation_path), chunk_rows, data_write, status_write),
                            daemon=True, name="validate-parse")
    child.start()
    data_write.close()
    status_write.close()
    row_start = 0
    try:
        with os.fdopen(os.dup(data_read.fileno()), "rb", buffering=1 << 20) as source:
            try:
                for batch in pa.ipc.open_stream(source):
                    yield SampleChunk.from_batch(batch, row_start)
                    row_start += batch.num_rows
                failure = None
            except (pa.ArrowInvalid, OSError) as err:  # the stream broke off: the status says why
                failure = err
        status = status_read.recv() if status_read.poll(60) else ("error", failure or RuntimeError("no status"))
        if status[0] == "error":
            raise status[1]
    except EOFError:
        raise RuntimeError(f"the parsing process died (exit code {child.exitcode})") from None
    finally:
        data_read.close()
        status_read.close()
        if child.is_alive():
            child.terminate()
        child.join()


def _widen_pipe(fd: int) -> None:
    """Fewer, larger pipe transfers (Linux: F_SETPIPE_SZ up to /proc/sys/fs/pipe-max-size)."""
    try:
        import fcntl

        fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), 1 << 20)
    except (ImportError, OSError):
        pass


def _parse_into(path: str, chunk_rows: int, data, status) -> None:
    try:
        with (os.fdopen(os.dup(data.fileno()), "wb", buffering=0) as sink,
              pa.ipc.new_stream(sink, CHUNK_SCHEMA) as writer):
            data.close()
            for chunk in iter_sample_chunks(path, chunk_rows=chunk_rows):
                writer.write_batch(chunk.to_batch())
        status.send(("ok", None))
    except BaseException as err:  # every failure goes to the parent, which raises it
        try:
            status.send(("error", err))
        except Exception:
            status.send(("error", RuntimeError(f"{type(err).__name__}: {err}")))
    finally:
        status.close()


class _ImageTable:
    """Distinct images in order of first reference; results arrive batch by batch from the pool."""

    def __init__(self, rules: tuple[Rule, ...], max_pixels: int):
        self.rules, self.max_pixels = rules, max_pixels
        self.details: dict[int, str] = {}  # image index -> why it failed (failing images only)
        self.index: dict[str, int] = {}
        self.paths: list[str] = []
        self.sampled: list[np.ndarray] = []
        self.batches: list[pd.DataFrame] = []
        self.resolved = 0  # images with results
        self.bits = np.zeros(1024, dtype=np.int64)
        self.width = np.zeros(1024, dtype=np.int32)
        self.height = np.zeros(1024, dtype=np.int32)
        self.used = np.zeros(1024, dtype=bool)  # referenced by a valid row
        self.rows = np.zeros(1024, dtype=np.int64)  # rows referencing it

    def register(self, paths: list) -> tuple[np.ndarray, list[str]]:
        """Image index of each path (-1 for None) and the paths seen for the first time."""
        index, new = self.index, []
        out = np.full(len(paths), -1, dtype=np.int64)
        for i, path in enumerate(paths):
            if path is None:
                continue
            j = index.get(path)
            if j is None:
                j = index[path] = len(self.paths)
                self.paths.append(path)
                new.append(path)
            out[i] = j
        self._grow(len(self.paths))
        return out, new

    def _grow(self, size: int) -> None:
        if size <= len(self.bits):
            return
        capacity = max(size, 2 * len(self.bits))
        for name in ("bits", "width", "height", "used", "rows"):
            old = getattr(self, name)
            new = np.zeros(capacity, dtype=old.dtype)
            new[: len(old)] = old
            setattr(self, name, new)

    def add_results(self, columns: dict[str, list], sampled: np.ndarray) -> None:
        start, n = self.resolved, len(columns["exists"])
        frame = pd.DataFrame({
            IMAGES_INDEX: np.arange(start, start + n, dtype=np.int64),
            "path": pd.array(self.paths[start:start + n], dtype="str"),
            "exists": np.array(columns["exists"], dtype=bool),
            "readable": pd.array(columns["readable"], dtype="boolean"),
            "width": pd.array(columns["width"], dtype="float64"),
            "height": pd.array(columns["height"], dtype="float64"),
            "pixels": _pixels(columns["width"], columns["height"]),
            "format": pd.array(columns["format"], dtype="str"),
            "mode": pd.array(columns["mode"], dtype="str"),
            "orientation": pd.array(columns["orientation"], dtype="float64"),
            "full_decode": pd.array(columns["full_decode"], dtype="boolean"),
            "error": pd.array(columns["error"], dtype="str"),
        })
        bits = np.zeros(n, dtype=np.int64)
        for rule in self.rules:
            bits |= np.where(rule.violations(frame[rule.column]), REASON_BIT[rule.reason], 0)
        self.bits[start:start + n] = bits
        for i in np.flatnonzero(bits).tolist():
            self.details[start + i] = self._detail(self.paths[start + i], {k: v[i] for k, v in columns.items()},
                                                   int(bits[i]))
        self.width[start:start + n] = frame["width"].fillna(0).to_numpy(np.int64).clip(0, 2**31 - 1)
        self.height[start:start + n] = frame["height"].fillna(0).to_numpy(np.int64).clip(0, 2**31 - 1)
        self.batches.append(frame)
        self.sampled.append(sampled)
        self.resolved += n

    def _detail(self, path: str, image: dict, bits: int) -> str:
        """Why one image failed, for people: its codes with the error, size or mode behind each."""
        notes = []
        for code in decode_reasons(bits):
            if code in ("image_missing", "image_unreadable", "image_truncated"):
                notes.append(f"{code}: {image['error']}")
            elif code == "image_bad_size":
                notes.append(f"image_bad_size: {image['width']}x{image['height']} (each side must be 1..{MAX_SIDE})")
            elif code == "image_too_large":
                notes.append(f"image_too_large: {image['width']}x{image['height']} = "
                             f"{image['width'] * image['height']} pixels > max_pixels {self.max_pixels}")
            elif code == "image_bad_mode":
                notes.append(f"image_bad_mode: mode {image['mode']} (pixels.to_rgb converts "
                             f"{', '.join(sorted(supported_modes()))})")
        return f"{path}: " + "; ".join(notes)

    def frame(self) -> pd.DataFrame:
        if self.batches:
            return pd.concat(self.batches, ignore_index=True)
        return self._empty_frame()

    def _empty_frame(self) -> pd.DataFrame:
        self.add_results({name: [] for name in IMAGE_RESULT_FIELDS}, np.zeros(0, dtype=bool))
        return self.batches.pop()


def _pixels(widths: list, heights: list) -> pd.Series:
    w = pd.array(widths, dtype="float64")
    h = pd.array(heights, dtype="float64")
    return pd.Series(w * h, dtype="float64")  # float: exact below 2**53, and 65535**2 is far below


class _Writers:
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
        self.images = _ImageTable(self.image_rules, max_pixels)
        self.modes = supported_modes()
        self.seen_ids: set[str] = set()
        self.checks: list[pd.DataFrame] = []
        self.row_bits: list[np.ndarray] = []
        self.rows_in = self.valid = self.quarantined = self.extra_keys = self.image_samples = 0
        self.reason_counts = dict.fromkeys(REASONS, 0)
        self.primary_counts = dict.fromkeys(REASONS, 0)
        self.spans_fh = None

    # -- streaming --------------------------------------------------------------------------------

    def stream(self, writers: _Writers, pool) -> None:
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
                      writers: _Writers) -> None:
        n = chunk.n
        bits = np.zeros(n, dtype=np.int64)
        for rule in ANNOTATION_RULES:
            if rule.kind == "unique":
                continue
            bits |= np.where(rule.violations(table[rule.column]), REASON_BIT[rule.reason], 0)
        bits |= np.where(self._duplicates(chunk.id), REASON_BIT["duplicate_id"], 0)
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
        self.row_bits.append(bits)

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


def decode_reasons(bits: int) -> list[str]:
    """Reason codes of a bit set, in priority order."""
    return [code for code, bit in REASON_BIT.items() if bits & bit]


# ---------------------------------------------------------------------------------------------------
# Great Expectations

EXAMPLES = 20  # unexpected rows kept per expectation in gx_report.json (all of them are in quarantine.parquet)
_LIST_KEYS = ("partial_unexpected_list", "partial_unexpected_counts", "partial_unexpected_index_list",
              "unexpected_list", "unexpected_index_list")


def import_gx() -> float:
    """Import Great Expectations (3-5 s); returns the seconds it took (0 when already imported)."""
    started = time.perf_counter()
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import great_expectations  # noqa: F401
    return time.perf_counter() - started


def run_gx_suites(tables: dict[str, tuple[pd.DataFrame, tuple[Rule, ...], str]], dataset: str) -> dict:
    """Evaluate each table's rules as a GX 1.x expectation suite (ephemeral context, pandas data source,
    result_format COMPLETE with the table's index column); returns {table: ExpectationSuiteValidationResult}."""
    import_gx()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import great_expectations as gx
        from great_expectations.data_context.types.base import ProgressBarsConfig

        context = gx.get_context(mode="ephemeral")
        context.variables.progress_bars = ProgressBarsConfig(globally=False)
        source = context.data_sources.add_pandas(name=f"{dataset}-validate")
        results = {}
        for name, (frame, rules, index_column) in tables.items():
            batch_definition = source.add_dataframe_asset(name=name).add_batch_definition_whole_dataframe("all_rows")
            suite = context.suites.add(gx.ExpectationSuite(name=f"{dataset}.{name}"))
            for rule in rules:
                suite.add_expectation(rule.expectation())
            definition = context.validation_definitions.add(
                gx.ValidationDefinition(name=f"{dataset}.{name}", data=batch_definition, suite=suite))
            results[name] = definition.run(
                batch_parameters={"dataframe": frame},
                result_format={"result_format": "COMPLETE", "unexpected_index_column_names": [index_column],
                               "return_unexpected_index_query": False},
            )
    return results


def evaluate_with_gx(tables: dict[str, tuple[pd.DataFrame, tuple[Rule, ...], str]], dataset: str) -> dict:
    """Run the suites and reduce each result to plain data (picklable, so this can run in a child process):
    per suite `success`, `statistics`, `expectations` (one summary per expectation, with its rule, reason
    and first unexpected rows), `unexpected` {rule: sorted unexpected index values}, `after_first` {unique
    rule: the unexpected rows that are not the first of their value} and `json` (GX's own result dict,
    unexpected lists cut to EXAMPLES)."""
    payload = {}
    for name, result in run_gx_suites(tables, dataset).items():
        index_column = tables[name][2]
        rules = {rule.name: rule for rule in tables[name][1]}
        unexpected, after_first, expectations = {}, {}, []
        for item in result.results:
            config, res = item.expectation_config, item.result or {}
            rule = rules[config.meta["rule"]]
            if item.exception_info and item.exception_info.get("raised_exception"):
                raise ValidationEngineError(f"GX expectation {config.type} on {rule.column} raised: "
                                            f"{item.exception_info.get('exception_message')}")
            listed = res.get("unexpected_index_list") or []
            unexpected[rule.name] = sorted(int(d[index_column]) for d in listed)
            if rule.kind == "unique":
                after_first[rule.name] = sorted(_after_first(listed, rule.column, index_column))
            expectations.append({
                "rule": rule.name, "reason": rule.reason, "type": config.type, "column": rule.column,
                "kwargs": {k: v for k, v in config.kwargs.items() if k not in ("batch_id", "column")},
                "success": bool(item.success), "element_count": res.get("element_count"),
                "missing_count": res.get("missing_count"), "unexpected_count": res.get("unexpected_count"),
                "examples": [{k: _plain(v) for k, v in d.items()} for d in listed[:5]],
            })
        payload[name] = {
            "success": bool(result.success),
            "statistics": {k: _plain(v) for k, v in result.statistics.items()},
            "expectations": expectations,
            "unexpected": unexpected,
            "after_first": after_first,
            "json": _trimmed(result.to_json_dict()),
        }
    return payload


def _plain(value):
    return value.item() if isinstance(value, np.generic) else value


def _trimmed(data: dict) -> dict:
    for item in data.get("results", []):
        res = item.get("result") or {}
        for key in _LIST_KEYS:
            if isinstance(res.get(key), list) and len(res[key]) > EXAMPLES:
                res[key] = res[key][:EXAMPLES]
                res[f"{key}_truncated_to"] = EXAMPLES
    return data


def _after_first(listed: list[dict], column: str, index_column: str) -> set[int]:
    """GX lists every row of a duplicated value; the policy keeps the first occurrence valid."""
    first: set = set()
    rows = set()
    for item in sorted(listed, key=lambda d: int(d[index_column])):
        value, row = item[column], int(item[index_column])
        if value in first:
            rows.add(row)
        else:
            first.add(value)
    return rows


class _GX:
    """Where the suites run: in this process (workers=1), or in a child process that imports GX (3-5 s)
    while the stream runs on this one and is handed the check tables at the end."""

    def __init__(self, in_process: bool):
        self.pool = None if in_process else ProcessPoolExecutor(max_workers=1)
        self.import_s = self.pool.submit(import_gx) if self.pool else None

    def evaluate(self, tables: dict, dataset: str) -> dict:
        if self.pool is None:
            return evaluate_with_gx(tables, dataset)
        return self.pool.submit(evaluate_with_gx, tables, dataset).result()

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)


def _reconcile(name: str, rules: tuple[Rule, ...], gx: dict, streamed: dict[str, set[int]],
               first_of_duplicates: bool = False) -> None:
    """Reason by reason, GX's unexpected rows must be exactly the rows the stream routed."""
    for reason in dict.fromkeys(rule.reason for rule in rules):
        from_gx: set[int] = set()
        for rule in rules:
            if rule.reason != reason:
                continue
            if rule.name not in gx["unexpected"]:
                raise ValidationEngineError(f"{name}: GX returned no result for rule {rule.name}")
            if rule.kind == "unique" and first_of_duplicates:
                from_gx.update(gx["after_first"][rule.name])
            else:
                from_gx.update(gx["unexpected"][rule.name])
        if from_gx != streamed[reason]:
            only_gx, only_stream = sorted(from_gx - streamed[reason]), sorted(streamed[reason] - from_gx)
            raise ValidationEngineError(
                f"{name}: Great Expectations and the streamed checks disagree on {reason!r}: "
                f"{len(only_gx)} row(s) only GX flags (first: {only_gx[:5]}), "
                f"{len(only_stream)} only the stream flags (first: {only_stream[:5]}); nothing was published")


# ---------------------------------------------------------------------------------------------------
# Entry point


def validate_annotations(
    annotation_path: str | os.PathLike,
    image_root: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    dataset_name: str,
    full_decode_fraction: float = 0.0,
    max_pixels: int = Image.MAX_IMAGE_PIXELS,
    seed: int = 0,
    workers: int = 0,
    report_dir: str | os.PathLike | None = None,
    quarantine_dir: str | os.PathLike | None = None,
    image_batch: int = 512,
    chunk_rows: int = 32768,
    progress: bool = True,
) -> ValidationReport:
    """Validate one LLaVA annotation file and its images; write the tables and the reports (module doc).

    full_decode_fraction  share of distinct images fully decoded (seeded by `seed`, by path) to catch
                          truncated files; 0 = headers only, 1 = every image.
    max_pixels            decompression-bomb limit (default: PIL's MAX_IMAGE_PIXELS).
    workers               processes for the image checks; 0 = one per core; 1 = everything in this process
                          (images and GX; otherwise GX runs in one child process, imported early).
    report_dir            where metrics.json and the GX report go (default: out_dir).
    quarantine_dir        where quarantine.parquet and bad_images.parquet go (default: out_dir).

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
    writers = _Writers(final)
    gx_engine = _GX(in_process=run.workers <= 1)
    timings = {}
    try:
        with _image_pool(run.workers) as pool:
            run.stream(writers, pool)
        writers.close()
        timings["stream_s"] = time.perf_counter() - started

        image_frame = run.images.frame()
        image_summary = run.image_outputs(image_frame, writers.tmp, image_root)
        checks = pd.concat(run.checks, ignore_index=True)
        row_bits = np.concatenate(run.row_bits)

        gx_started = time.perf_counter()
        gx = gx_engine.evaluate({
            "annotations": (checks, ANNOTATION_RULES, ANNOTATIONS_INDEX),
            "images": (image_frame.drop(columns=["error"]), run.image_rules, IMAGES_INDEX),
        }, dataset_name)
        timings["gx_s"] = time.perf_counter() - gx_started
        _reconcile("annotations", ANNOTATION_RULES, gx["annotations"],
                   _streamed_rows(checks[ANNOTATIONS_INDEX].to_numpy(), row_bits, ANNOTATION_RULES),
                   first_of_duplicates=True)
        _reconcile("images", run.image_rules, gx["images"],
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
    _write_reports(report, gx, report_dir, annotation_path, image_root)
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


# ---------------------------------------------------------------------------------------------------
# Reports


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


def _write_reports(report: ValidationReport, gx: dict, report_dir: Path, annotation_path: Path,
                   image_root: Path) -> None:
    _write_atomic(report_dir / "metrics.json", json.dumps(report.metrics, indent=2, default=_json_default) + "\n")
    gx_json = {
        "dataset": report.dataset,
        "annotation_file": str(annotation_path),
        "image_root": str(image_root),
        "reasons": REASONS,
        "summary": {name: {k: suite[k] for k in ("success", "statistics", "expectations")}
                    for name, suite in gx.items()},
        "great_expectations": {name: suite["json"] for name, suite in gx.items()},
        "timings": {k: round(v, 3) for k, v in report.timings.items()},
    }
    _write_atomic(report_dir / "gx_report.json", json.dumps(gx_json, indent=1, default=_json_default) + "\n")
    _write_atomic(report_dir / "gx_report.html", _html(report, gx))


def _html(report: ValidationReport, gx: dict) -> str:
    esc = html.escape
    rows_html = []
    for name, suite in gx.items():
        for e in suite["expectations"]:
            examples = ", ".join("{" + ", ".join(f"{k}: {v}" for k, v in d.items()) + "}" for d in e["examples"])
            rows_html.append(
                f"<tr class={'pass' if e['success'] else 'fail'}><td>{esc(name)}</td>"
                f"<td>{'PASS' if e['success'] else 'FAIL'}</td><td>{esc(e['type'])}</td><td>{esc(e['column'])}</td>"
                f"<td>{esc(json.dumps(e['kwargs'], default=str))}</td><td>{esc(e['reason'])}</td>"
                f"<td>{e['element_count']}</td><td>{e['missing_count']}</td><td>{e['unexpected_count']}</td>"
                f"<td>{esc(examples)}</td></tr>")
    m = report.metrics
    reasons = "".join(f"<tr><td>{esc(code)}</td><td>{count}</td><td>{esc(REASONS[code])}</td></tr>"
                      for code, count in m["reasons"].items() if count)
    images = m["images"]
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>Validation: {esc(report.dataset)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; font-size: 14px; }}
td, th {{ border: 1px solid #ccc; padding: 4px 8px; text-align: left; vertical-align: top; }}
tr.pass td:nth-child(2) {{ color: #0a7d28; font-weight: bold; }}
tr.fail td:nth-child(2) {{ color: #b00020; font-weight: bold; }}
.big {{ font-size: 20px; }}
</style></head><body>
<h1>Data validation: {esc(report.dataset)}</h1>
<p class="big">rows in <b>{m['rows_in']}</b> = valid <b>{m['valid']}</b> + quarantined <b>{m['quarantined']}</b>
&nbsp;|&nbsp; images referenced {images['referenced']}: valid {images['valid']}, bad {images['bad']},
fully decoded {images['full_decode_checked']} (fraction {images['full_decode_fraction']})</p>
<h2>Quarantine reasons (rows; a row may have several)</h2>
<table><tr><th>reason</th><th>rows</th><th>meaning</th></tr>{reasons or '<tr><td colspan=3>none</td></tr>'}</table>
<h2>Great Expectations results</h2>
<table><tr><th>suite</th><th>result</th><th>expectation</th><th>column</th><th>arguments</th><th>reason</th>
<th>rows</th><th>null (skipped)</th><th>unexpected</th><th>first unexpected</th></tr>
{''.join(rows_html)}
</table>
<p>Every unexpected row is in quarantine.parquet (column <code>reasons</code>); failing images in
bad_images.parquet. Full results: gx_report.json.</p>
</body></html>
"""
