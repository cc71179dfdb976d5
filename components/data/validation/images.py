"""Image checks and the table of distinct images.

`check_images` reads headers (EXIF-aware), tests size, pixel limit and mode, and fully decodes the images of
a seeded sample (`full_decode_sample`); it runs in worker processes, so it stays a module-level function.
`ImageTable` keeps the distinct images in order of first reference and turns the results into reason bits.
"""

from __future__ import annotations

import os
import warnings
from contextlib import contextmanager

import numpy as np
import pandas as pd
from PIL import Image, ImageFile

from components.slicing.headers import read_header
from components.slicing.pixels import load_image

from . import rules  # rules.supported_modes(), looked up at call time like the other callers
from .rules import IMAGES_INDEX, MAX_SIDE, REASON_BIT, Rule, decode_reasons

IMAGE_RESULT_FIELDS = ("inside_root", "exists", "readable", "width", "height", "format", "mode", "orientation",
                       "full_decode", "error")


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
    inside_root = _RootCheck(image_root)
    with _pil_guards():
        for path, want_decode in zip(paths, decode, strict=True):
            full = os.path.join(image_root, path)
            exists, readable, header, decoded, error = True, None, None, None, None
            inside = inside_root(full)
            if not inside:  # never read what a link points at outside the root
                error = "a symbolic link on the path leads outside the image root"
            else:
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
            out["inside_root"].append(inside)
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


class _RootCheck:
    """Whether a path stays inside the image root once symbolic links are followed. The path text is already
    inside (the annotation check); a linked folder or file on the way may still lead out. Each folder is
    resolved once per batch, so an image costs one lstat rather than a realpath (~60 us) on the hot path."""

    def __init__(self, image_root: str):
        self.root = os.path.realpath(image_root)
        self.folders: dict[str, str] = {}

    def __call__(self, full: str) -> bool:
        folder, name = os.path.split(full)
        real_folder = self.folders.get(folder)
        if real_folder is None:
            real_folder = self.folders[folder] = os.path.realpath(folder)
        target = os.path.realpath(full) if os.path.islink(full) else os.path.join(real_folder, name)
        return target == self.root or target.startswith(self.root.rstrip(os.sep) + os.sep)


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


class ImageTable:
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
            "inside_root": np.array(columns["inside_root"], dtype=bool),
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
            if code in ("unsafe_path", "image_missing", "image_unreadable", "image_truncated"):
                notes.append(f"{code}: {image['error']}")
            elif code == "image_bad_size":
                notes.append(f"image_bad_size: {image['width']}x{image['height']} (each side must be 1..{MAX_SIDE})")
            elif code == "image_too_large":
                notes.append(f"image_too_large: {image['width']}x{image['height']} = "
                             f"{image['width'] * image['height']} pixels > max_pixels {self.max_pixels}")
            elif code == "image_bad_mode":
                notes.append(f"image_bad_mode: mode {image['mode']} (pixels.to_rgb converts "
                             f"{', '.join(sorted(rules.supported_modes()))})")
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
