"""The published scores the evaluation reports compare with (shared/reference/eval.md §4), one row per released model.

Ids are what `eval.paper_row` takes; the evaluate reports print the label and, for the chosen row, the difference.
Only rows whose numbers the references hold: LLaVA-OneVision's paper reports other benchmarks, so it has none here.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PaperRow:
    label: str
    scores: dict[str, float]  # benchmark -> headline (MME: perception total)
    source: str


PAPER_ROWS: dict[str, PaperRow] = {
    "llava-1.5-7b": PaperRow(
        "LLaVA-1.5-7B (paper)",
        {"vqav2": 78.5, "gqa": 62.0, "vizwiz": 50.0, "scienceqa": 66.8, "textvqa": 58.2, "pope": 85.9, "mme": 1510.7,
         "mmbench": 64.3, "mmbench_cn": 58.3},
        "LLaVA docs/MODEL_ZOO.md = LLaVA-1.5 paper Table 4"),
    "llava-1.5-13b": PaperRow(
        "LLaVA-1.5-13B (paper)",
        {"vqav2": 80.0, "gqa": 63.3, "vizwiz": 53.6, "scienceqa": 71.6, "textvqa": 61.3, "pope": 85.9, "mme": 1531.3,
         "mmbench": 67.7, "mmbench_cn": 63.6},
        "LLaVA docs/MODEL_ZOO.md = LLaVA-1.5 paper Table 4"),
    "llava-uhd-13b": PaperRow(
        "LLaVA-UHD-13B, arXiv v1 (paper)",
        {"vqav2": 81.7, "gqa": 65.2, "vizwiz": 56.1, "scienceqa": 72.0, "textvqa": 67.7, "pope": 89.1, "mme": 1535.0,
         "mmbench": 68.0, "mmbench_cn": 64.8},
        "arXiv 2403.11703 Table 1"),
    "llava-uhd-144-13b": PaperRow(
        "LLaVA-UHD-144-13B, ECCV (paper)",
        {"vqav2": 80.7, "gqa": 64.9, "vizwiz": 55.0, "scienceqa": 71.2, "textvqa": 67.0, "pope": 88.9, "mme": 1532.3,
         "mmbench": 68.2},
        "ECCV 2024 Table 1 (ScienceQA from its Table 2); the released checkpoint guozonghao96/llava-uhd-144-13b"),
}

# The rows every results.md shows (the paper's own comparison: LLaVA-1.5 against LLaVA-UHD).
DEFAULT_ROWS = ("llava-1.5-13b", "llava-uhd-13b")

# arXiv v1 Table 3 (longer side doubled by padding; via shared/reference/uhd.md): (score, drop) per benchmark.
PAPER_EXTREME = {
    "LLaVA-1.5-13B": {"vqav2": (74.6, 5.4), "gqa": (57.9, 5.4), "textvqa": (58.4, 3.9), "pope": (81.1, 4.8),
                      "scienceqa": (66.3, 5.3), "vizwiz": (50.1, 3.5)},
    "LLaVA-UHD-13B": {"vqav2": (81.4, 0.3), "gqa": (61.8, 3.4), "textvqa": (64.5, 3.2), "pope": (85.1, 4.0),
                      "scienceqa": (71.5, 0.5), "vizwiz": (54.0, 2.1)},
}
