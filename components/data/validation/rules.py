"""Reason codes and the rules that produce them: the vocabulary shared by the stream, the image checks and
the Great Expectations suites.

Every rule is one `Rule` (a reason code, a check column, an expectation kind). The stream applies the rule's
vectorised predicate to route rows; Great Expectations evaluates the same rule as an expectation (suites.py).
A row's reasons travel as a bit set (`REASON_BIT`, in `REASONS` order = priority of the primary reason).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from functools import cache

import numpy as np
import pandas as pd
from PIL import Image

from components.slicing.pixels import to_rgb

# Order = priority of the primary `reason` when a row has several.
REASONS: dict[str, str] = {
    "malformed": "sample is not {id, conversations: even list (>= 2) of {from, value} strings[, image: str]}",
    "non_utf8": "text that was not valid UTF-8 (undecodable bytes or lone surrogate escapes)",
    "duplicate_id": "id already used by an earlier sample",
    "unsafe_path": "image path is absolute or escapes the image root (as text, or through a symbolic link)",
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
# reasons an image check gives (unsafe_path too: a link inside the root may lead out of it)
IMAGE_REASONS = tuple(code for code in REASONS if code.startswith("image_") or code == "unsafe_path")
MAX_SIDE = 65535  # JPEG's limit, and the largest side the slicing code is tested for

ANNOTATIONS_INDEX = "row"
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
        Rule("image_inside_root", "unsafe_path", "inside_root", "in_set", (True,)),
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


def decode_reasons(bits: int) -> list[str]:
    """Reason codes of a bit set, in priority order."""
    return [code for code, bit in REASON_BIT.items() if bits & bit]
