"""Evaluation outputs: ``metrics.json`` for DVC, ``provenance.json``, a Markdown table beside the paper's, plots.

metrics.json (the contract the register stage reads)::

    {"headline": {benchmark: score}, "benchmarks": {benchmark: {scalar metrics}},
     "extreme_aspect": {benchmark: {"score", "drop"}}, "compute": {benchmark: {visual tokens, TFLOPs}},
     "questions_per_s": {benchmark: q/s}, "skipped": {benchmark: reason}, "submissions": {benchmark: path}}

Headline scores are percentages (0-100) except MME (perception total, 0-2000); higher is better everywhere.
Server-scored benchmarks (VQAv2, VizWiz) have no headline: their upload file is listed under ``submissions``.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

COLUMNS = (("vqav2", "VQAv2"), ("gqa", "GQA"), ("vizwiz", "VizWiz"), ("scienceqa", "SQA-IMG"),
           ("textvqa", "TextVQA"), ("pope", "POPE"), ("mme", "MME-P"), ("mmbench", "MMB"), ("mmbench_cn", "MMB-CN"))

# shared/reference/eval.md §4 (LLaVA MODEL_ZOO = paper Table 4; LLaVA-UHD arXiv 2403.11703 Table 1).
PAPER_SCORES = {
    "LLaVA-1.5-13B (paper)": {"vqav2": 80.0, "gqa": 63.3, "vizwiz": 53.6, "scienceqa": 71.6, "textvqa": 61.3,
                              "pope": 85.9, "mme": 1531.3, "mmbench": 67.7, "mmbench_cn": 63.6},
    "LLaVA-UHD-13B, arXiv v1 (paper)": {"vqav2": 81.7, "gqa": 65.2, "vizwiz": 56.1, "scienceqa": 72.0,
                                        "textvqa": 67.7, "pope": 89.1, "mme": 1535.0, "mmbench": 68.0,
                                        "mmbench_cn": 64.8},
}
# arXiv v1 Table 3 (longer side doubled by padding; via shared/reference/uhd.md): (score, drop) per benchmark.
PAPER_EXTREME = {
    "LLaVA-1.5-13B": {"vqav2": (74.6, 5.4), "gqa": (57.9, 5.4), "textvqa": (58.4, 3.9), "pope": (81.1, 4.8),
                      "scienceqa": (66.3, 5.3), "vizwiz": (50.1, 3.5)},
    "LLaVA-UHD-13B": {"vqav2": (81.4, 0.3), "gqa": (61.8, 3.4), "textvqa": (64.5, 3.2), "pope": (85.1, 4.0),
                      "scienceqa": (71.5, 0.5), "vizwiz": (54.0, 2.1)},
}


def _scalars(scores: dict) -> dict:
    """The numeric top-level entries of an adapter's scores (DVC shows nested numbers; strings stay out)."""
    return {k: round(v, 4) for k, v in scores.items() if isinstance(v, int | float) and not isinstance(v, bool)}


def build_metrics(suite: dict) -> dict:
    results = suite["benchmarks"]
    metrics = {
        "headline": {n: round(r["scores"]["headline"], 3) for n, r in results.items()
                     if r["scores"].get("headline") is not None},
        "benchmarks": {n: _scalars(r["scores"]) for n, r in results.items()},
        "extreme_aspect": {n: {"score": r["extreme_aspect"]["headline"], "drop": r["extreme_aspect"]["drop"]}
                           for n, r in results.items() if "extreme_aspect" in r},
        "compute": {n: {"visual_tokens_mean": (r["compute"]["visual_tokens"] or {}).get("mean"),
                        "visual_tokens_max": (r["compute"]["visual_tokens"] or {}).get("max"),
                        "tflops_mean": (r["compute"]["tflops"] or {}).get("mean"),
                        "tflops_max": (r["compute"]["tflops"] or {}).get("max")} for n, r in results.items()},
        "questions_per_s": {n: r["questions_per_s"] for n, r in results.items()},
        "skipped": dict(suite["skipped"]),
        "submissions": {n: r["scores"]["submission"] for n, r in results.items() if "submission" in r["scores"]},
    }
    return metrics


def _cell(value) -> str:
    if value is None:
        return "–"
    return f"{value:.1f}"


def markdown_table(metrics: dict, label: str = "this run") -> str:
    """Our headline scores beside the paper's (eval.md §4), then the extreme-aspect and compute tables."""
    head = "| model | " + " | ".join(title for _, title in COLUMNS) + " |"
    rule = "|---|" + "---|" * len(COLUMNS)
    ours = [metrics["headline"].get(key) for key, _ in COLUMNS]
    skipped = metrics.get("skipped", {})
    row = [("skipped" if key in skipped else ("server" if key in metrics.get("submissions", {}) else _cell(v)))
           for (key, _), v in zip(COLUMNS, ours, strict=True)]
    lines = [head, rule, f"| {label} | " + " | ".join(row) + " |"]
    for name, scores in PAPER_SCORES.items():
        lines.append(f"| {name} | " + " | ".join(_cell(scores.get(key)) for key, _ in COLUMNS) + " |")
    lines += ["", "Headline metrics: VQA-style accuracy (%), POPE mean F1 over 3 splits (%), MME perception total, "
              "MMBench CircularEval accuracy (%). `skipped`: files absent (reasons below); `server`: a submission "
              "file for the evaluation server was written."]
    if metrics.get("extreme_aspect"):
        lines += ["", "| benchmark | score | extreme-aspect score | drop | paper drop LLaVA-1.5 / UHD (Table 3) |",
                  "|---|---|---|---|---|"]
        for name, ext in metrics["extreme_aspect"].items():
            paper = " / ".join(_cell(PAPER_EXTREME[m].get(name, (None, None))[1]) for m in PAPER_EXTREME)
            lines.append(f"| {name} | {_cell(metrics['headline'].get(name))} | {_cell(ext['score'])} | "
                         f"{_cell(ext['drop'])} | {paper} |")
    lines += ["", "| benchmark | visual tokens mean | max | TFLOPs mean (13B-scale) | max |", "|---|---|---|---|---|"]
    for name, c in metrics["compute"].items():
        lines.append(f"| {name} | {c['visual_tokens_mean']} | {c['visual_tokens_max']} | {c['tflops_mean']} | "
                     f"{c['tflops_max']} |")
    if skipped:
        lines += ["", "Skipped:"] + [f"- {name}: {reason}" for name, reason in skipped.items()]
    return "\n".join(lines) + "\n"


def write_scores_csv(metrics: dict, path: Path) -> None:
    """The DVC bar plot's data: one row per scored benchmark (plain and extreme-aspect)."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["benchmark", "score"])
        for name, value in metrics["headline"].items():
            writer.writerow([name, value])
        for name, ext in metrics["extreme_aspect"].items():
            if ext["score"] is not None:
                writer.writerow([f"{name} (extreme aspect)", ext["score"]])


def _details(result: dict) -> dict[str, float]:
    """Per-benchmark breakdown worth a bar chart: POPE per split, MME per task, MMBench per category."""
    scores = result["scores"]
    if "per_category" in scores:
        return {k: 100.0 * v["f1"] for k, v in scores["per_category"].items()}
    if "per_task" in scores:
        return {k: v["score"] for k, v in scores["per_task"].items()}
    if "category_acc" in scores:
        return {k: 100.0 * v for k, v in scores["category_acc"].items()}
    bars = {"score": scores.get("headline") or 0.0}
    if "extreme_aspect" in result and result["extreme_aspect"]["headline"] is not None:
        bars["extreme aspect"] = result["extreme_aspect"]["headline"]
    return bars


def plot_benchmarks(suite: dict, path: Path) -> None:
    """One panel per scored benchmark with its breakdown."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scored = {n: r for n, r in suite["benchmarks"].items() if r["scores"].get("headline") is not None}
    if not scored:
        return
    cols = min(3, len(scored))
    rows = (len(scored) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.2 * rows), squeeze=False)
    for ax, (name, result) in zip(axes.flat, scored.items(), strict=False):
        details = _details(result)
        ax.barh(list(details), list(details.values()), color="#4c72b0")
        ax.set_title(f"{name}: {result['scores']['headline']:.1f}")
        ax.tick_params(axis="y", labelsize=7)
    for ax in list(axes.flat)[len(scored):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_reports(suite: dict, provenance: dict, reports_dir: str | Path, label: str = "this run") -> dict:
    reports_dir = Path(reports_dir)
    reports_dir.mkdir(parents=True, exist_ok=True)
    metrics = build_metrics(suite)
    (reports_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True), encoding="utf-8")
    details = {"provenance": provenance, "benchmarks": suite["benchmarks"], "skipped": suite["skipped"]}
    (reports_dir / "provenance.json").write_text(json.dumps(details, indent=2, default=str), encoding="utf-8")
    (reports_dir / "results.md").write_text(markdown_table(metrics, label), encoding="utf-8")
    write_scores_csv(metrics, reports_dir / "scores.csv")
    plot_benchmarks(suite, reports_dir / "benchmarks.png")
    return metrics
