"""Human-facing summaries of a layouts table: DVC metrics, DVC plot tables and a PNG to look at."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from .table import LayoutSummary


def write_report(summary: LayoutSummary, out_dir: str | Path, title: str) -> dict:
    """metrics.json (DVC metrics), tokens.csv / aspect.csv / slices.csv (DVC plots), distributions.png."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics = summary.metrics()
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    _write_csv(out_dir / "tokens.csv", ["num_tokens", "images"], sorted(summary.tokens.items()))
    _write_csv(out_dir / "slices.csv", ["n_slices", "images"], sorted(summary.slices.items()))
    _write_csv(out_dir / "aspect.csv", ["log2_aspect", "images"], sorted(summary.log2_aspect.items()))
    _plot(summary, out_dir / "distributions.png", title)
    return metrics


def _write_csv(path: Path, header: list[str], rows) -> None:
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)


def _plot(summary: LayoutSummary, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8))
    aspects = sorted(summary.log2_aspect.items())
    left.bar([a for a, _ in aspects], [c for _, c in aspects], width=0.22, color="#4C72B0")
    left.set_xlabel("log2(width / height)  (0 = square, ±2 = 4:1 / 1:4)")
    left.set_ylabel("images")
    left.set_title("aspect ratios")
    tokens = sorted(summary.tokens.items())
    right.bar([str(t) for t, _ in tokens], [c for _, c in tokens], color="#DD8452")
    right.set_xlabel("visual tokens per image")
    right.set_title(f"token counts (p50 {summary.percentile(50)}, p95 {summary.percentile(95)})")
    right.tick_params(axis="x", rotation=60, labelsize=7)
    fig.suptitle(f"{title}: {summary.images} images, {summary.errors} errors")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
