"""The check columns of the annotation rows, one chunk at a time (vectorised: pyarrow / numpy), and the
normalisation of image paths that decides `unsafe_path`.

`annotation_checks` turns a parsed chunk into one row per sample with the columns the annotation rules
(rules.ANNOTATION_RULES) test, nulls where a check does not apply.
"""

from __future__ import annotations

import posixpath
import re

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ..conversation import IMAGE_TOKEN
from ..llava_format import SampleChunk
from .rules import ANNOTATIONS_INDEX

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
