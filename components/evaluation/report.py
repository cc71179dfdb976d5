"""Evaluation outputs: ``metrics.json`` for DVC, ``provenance.json``, a Markdown table beside the paper's, plots.

metrics.json (the contract the register stage reads)::

    {"headline": {benchmark: score},
     "benchmarks": {benchmark: {scalar metrics, "unparseable_share", "baseline", "baseline_margin", "beats_baseline"}},
     "extreme_aspect": {benchmark: {"score", "drop"}}, "compute": {benchmark: {visual tokens, TFLOPs}},
     "skipped": {benchmark: reason}, "submissions": {benchmark: path}}

metrics.json, provenance.json, results.md, scores.csv and benchmarks.png are tracked (git / DVC): a rerun of the
same weights writes the same bytes. How fast this machine answered is not: ``speed.json`` ({benchmark: questions/s},
gitignored, also logged to MLflow).

Headline scores are percentages (0-100) except MME (perception total, 0-2000); higher is better everywhere.
Server-scored benchmarks (VQAv2, VizWiz) have no headline: their upload file is listed under ``submissions``.
``unparseable_share`` (0-1) is the fraction of answers the benchmark's scorer could not map to an answer;
``baseline`` is the trivial baseline's headline (each adapter's ``baseline`` says which rule and why; the rule is in
results.md and provenance.json), ``beats_baseline`` whether the headline is strictly above it.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from components.evaluation.paper_scores import DEFAULT_ROWS, PAPER_EXTREME, PAPER_ROWS

COLUMNS = (("vqav2", "VQAv2"), ("gqa", "GQA"), ("vizwiz", "VizWiz"), ("scienceqa", "SQA-IMG"),
           ("textvqa", "TextVQA"), ("pope", "POPE"), ("mme", "MME-P"), ("mmbench", "MMB"), ("mmbench_cn", "MMB-CN"))

def _scalars(scores: dict) -> dict:
    """The numeric top-level entries of an adapter's scores (DVC shows nested numbers; strings stay out)."""
    return {k: round(v, 4) for k, v in scores.items() if isinstance(v, int | float) and not isinstance(v, bool)}


def _against_baseline(result: dict) -> dict:
    """The headline beside the trivial baseline: ``baseline``, ``baseline_margin`` and ``beats_baseline`` (strictly
    above: a model that only matches always-yes has learnt nothing); empty when either number is absent."""
    headline, baseline = result["scores"].get("headline"), result.get("baseline")
    if headline is None or baseline is None:
        return {}
    return {"baseline": round(baseline["score"], 4), "baseline_margin": round(headline - baseline["score"], 4),
            "beats_baseline": headline > baseline["score"]}


def build_metrics(suite: dict) -> dict:
    results = suite["benchmarks"]
    metrics = {
        "headline": {n: round(r["scores"]["headline"], 3) for n, r in results.items()
                     if r["scores"].get("headline") is not None},
        "benchmarks": {n: {**_scalars(r["scores"]), **_against_baseline(r)} for n, r in results.items()},
        "extreme_aspect": {n: {"score": r["extreme_aspect"]["headline"], "drop": r["extreme_aspect"]["drop"]}
                           for n, r in results.items() if "extreme_aspect" in r},
        "compute": {n: {"visual_tokens_mean": (r["compute"]["visual_tokens"] or {}).get("mean"),
                        "visual_tokens_max": (r["compute"]["visual_tokens"] or {}).get("max"),
                        "tflops_mean": (r["compute"]["tflops"] or {}).get("mean"),
                        "tflops_max": (r["compute"]["tflops"] or {}).get("max")} for n, r in results.items()},
        "skipped": dict(suite["skipped"]),
        "submissions": {n: r["scores"]["submission"] for n, r in results.items() if "submission" in r["scores"]},
    }
    return metrics


def _cell(value) -> str:
    if value is None:
        return "–"
    return f"{value:.1f}"


def _margin(value: float) -> str:
    return f"{value:+.1f}"


def baseline_table(metrics: dict, rules: dict[str, str] | None = None) -> list[str]:
    """Each scored benchmark's headline beside its trivial baseline, the margin and the unparseable share, then
    which benchmarks are above their baseline. ``rules``: {benchmark: what the trivial model answers}."""
    rules = rules or {}
    compared = {n: b for n, b in metrics["benchmarks"].items() if "baseline" in b}
    if not compared:
        return []
    lines = ["| benchmark | score | trivial baseline | margin | unparseable answers | baseline rule |",
             "|---|---|---|---|---|---|"]
    for name, b in compared.items():
        lines.append(f"| {name} | {_cell(metrics['headline'][name])} | {_cell(b['baseline'])} | "
                     f"{_margin(b['baseline_margin'])} | {b.get('unparseable_share', 0.0):.0%} | "
                     f"{rules.get(name, '')} |")
    above = [n for n, b in compared.items() if b["beats_baseline"]]
    below = [n for n in compared if n not in above]
    lines += ["", f"Above their trivial baseline: {len(above)} of {len(compared)} "
              f"({', '.join(above) or 'none'}); not above: {', '.join(below) or 'none'}. Unparseable: answers the "
              "benchmark's scorer could not map to an answer (POPE: neither yes nor no, which LLaVA's rule scores as "
              "yes; MME: neither; ScienceQA/MMBench: no option letter; TextVQA/GQA: empty)."]
    return lines


def markdown_table(metrics: dict, label: str = "this run", rules: dict[str, str] | None = None,
                   paper_row: str = "", flops_model: str = "13B-scale", protocol: str | None = None) -> str:
    """Our headline scores beside the paper's (eval.md §4), then each against its trivial baseline, then the
    extreme-aspect and compute tables. ``rules``: the baselines' rules, {benchmark: text}. ``paper_row``: a
    components.evaluation.paper_scores id: that row is shown too, with the difference (measured - published).
    ``protocol``: the eval.protocol of this run (components/evaluation/protocols.py), said under the table."""
    head = "| model | " + " | ".join(title for _, title in COLUMNS) + " |"
    rule = "|---|" + "---|" * len(COLUMNS)
    ours = [metrics["headline"].get(key) for key, _ in COLUMNS]
    skipped = metrics.get("skipped", {})
    row = [("skipped" if key in skipped else ("server" if key in metrics.get("submissions", {}) else _cell(v)))
           for (key, _), v in zip(COLUMNS, ours, strict=True)]
    lines = [head, rule, f"| {label} | " + " | ".join(row) + " |"]
    for row_id in (*DEFAULT_ROWS, *([paper_row] if paper_row and paper_row not in DEFAULT_ROWS else [])):
        row = PAPER_ROWS[row_id]
        lines.append(f"| {row.label} | " + " | ".join(_cell(row.scores.get(key)) for key, _ in COLUMNS) + " |")
    if paper_row:
        lines.append(_difference_row(metrics["headline"], PAPER_ROWS[paper_row]))
    lines += ["", "Headline metrics: VQA-style accuracy (%), POPE mean F1 over 3 splits (%), MME perception total, "
              "MMBench CircularEval accuracy (%). `skipped`: files absent (reasons below); `server`: a submission "
              "file for the evaluation server was written."]
    if protocol:
        lines += ["", f"This run's protocol: `{protocol}`. The LLaVA-1.5 row was produced with `llava-1.5` (greedy, "
                  "batch 1); LLaVA-UHD's eval code of arXiv v1 is unpublished (its ECCV numbers come from `uhd-eccv`: "
                  "beam search, 1024 pre-resize). README \"Evaluation protocols\"."]
    against = baseline_table(metrics, rules)
    if against:
        lines += [""] + against
    if metrics.get("extreme_aspect"):
        lines += ["", "| benchmark | score | extreme-aspect score | drop | paper drop LLaVA-1.5 / UHD (Table 3) |",
                  "|---|---|---|---|---|"]
        for name, ext in metrics["extreme_aspect"].items():
            paper = " / ".join(_cell(PAPER_EXTREME[m].get(name, (None, None))[1]) for m in PAPER_EXTREME)
            lines.append(f"| {name} | {_cell(metrics['headline'].get(name))} | {_cell(ext['score'])} | "
                         f"{_cell(ext['drop'])} | {paper} |")
    lines += ["", f"| benchmark | visual tokens mean | max | TFLOPs mean ({flops_model}) | max |",
              "|---|---|---|---|---|"]
    for name, c in metrics["compute"].items():
        lines.append(f"| {name} | {c['visual_tokens_mean']} | {c['visual_tokens_max']} | {c['tflops_mean']} | "
                     f"{c['tflops_max']} |")
    if skipped:
        lines += ["", "Skipped:"] + [f"- {name}: {reason}" for name, reason in skipped.items()]
    return "\n".join(lines) + "\n"


def _difference_row(headline: dict, row) -> str:
    """measured - published, per benchmark both have (MME in perception points, the rest in percentage points)."""
    cells = [_margin(headline[key] - row.scores[key]) if key in headline and key in row.scores else "–"
             for key, _ in COLUMNS]
    return f"| difference (this run - {row.label}) | " + " | ".join(cells) + " |"


def write_scores_csv(metrics: dict, path: Path) -> None:
    """The DVC bar plot's data: one row per scored benchmark (plain, its trivial baseline, extreme-aspect)."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["benchmark", "score"])
        for name, value in metrics["headline"].items():
            writer.writerow([name, value])
            if "baseline" in metrics["benchmarks"].get(name, {}):
                writer.writerow([f"{name} (trivial baseline)", metrics["benchmarks"][name]["baseline"]])
        for name, ext in metrics["extreme_aspect"].items():
            if ext["score"] is not None:
                writer.writerow([f"{name} (extreme aspect)", ext["score"]])


# (axis label, full scale of the axis); None: scale to the bars (MME's total grows with the subtasks present).
HEADLINE_AXES = {"pope": ("mean F1 over the splits (%)", 100.0), "mme": ("perception total", None),
                 "mmbench": ("CircularEval accuracy (%)", 100.0), "mmbench_cn": ("CircularEval accuracy (%)", 100.0),
                 "scienceqa": ("IMG accuracy (%)", 100.0), "textvqa": ("soft accuracy (%)", 100.0),
                 "gqa": ("accuracy (%)", 100.0)}


def _breakdown(scores: dict) -> dict[str, float]:
    """Per-part scores on the headline's own scale (POPE F1 per split, MMBench accuracy per category). MME's
    subtask scores (0-200 each) are on another scale than its total, so they stay in provenance.json."""
    if "per_category" in scores:
        return {f"F1 {k}": 100.0 * v["f1"] for k, v in scores["per_category"].items()}
    if "category_acc" in scores and len(scores["category_acc"]) > 1:
        return {f"category {k}": 100.0 * v for k, v in scores["category_acc"].items()}
    return {}


def _bars(result: dict) -> list[tuple[str, float, str]]:
    """(label, value, colour) of one benchmark's panel, top to bottom."""
    scores = result["scores"]
    bars = [("this run", scores["headline"], "#4c72b0")]
    if result.get("baseline") is not None:
        bars.append(("trivial baseline", result["baseline"]["score"], "#999999"))
    if "extreme_aspect" in result and result["extreme_aspect"]["headline"] is not None:
        bars.append(("extreme aspect", result["extreme_aspect"]["headline"], "#8fa9d6"))
    bars += [(label, value, "#c6d3ea") for label, value in _breakdown(scores).items()]
    return bars


def _panel(ax, name: str, result: dict) -> None:
    bars = _bars(result)
    labels, values, colours = zip(*bars, strict=True)
    positions = range(len(bars))[::-1]  # the headline on top
    ax.barh(list(positions), values, color=colours)
    ax.set_yticks(list(positions), labels, fontsize=9)
    unit, full_scale = HEADLINE_AXES.get(name, ("score", None))
    top = full_scale or max(max(values), 1.0)
    ax.set_xlim(0, top * 1.18)
    for y, value in zip(positions, values, strict=True):
        ax.text(value + top * 0.01, y, f"{value:.1f}", va="center", fontsize=9)
    verdict = _against_baseline(result)
    if verdict:
        verdict_text = "above its trivial baseline" if verdict["beats_baseline"] else "NOT above its trivial baseline"
        ax.set_title(f"{dict(COLUMNS).get(name, name)}: {verdict_text}\nunparseable answers: "
                     f"{result['scores'].get('unparseable_share', 0.0):.0%}", fontsize=11)
    else:
        ax.set_title(dict(COLUMNS).get(name, name), fontsize=11)
    ax.set_xlabel(unit, fontsize=9)


def plot_benchmarks(suite: dict, path: Path) -> None:
    """One panel per scored benchmark: this run's headline beside the trivial baseline (and the extreme-aspect
    variant), then the parts of the headline on its scale; the title gives the unparseable share."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scored = {n: r for n, r in suite["benchmarks"].items() if r["scores"].get("headline") is not None}
    if not scored:
        return
    cols = min(3, len(scored))
    rows = (len(scored) + cols - 1) // cols
    height = max(2.2, 0.45 * max(len(_bars(r)) for r in scored.values()) + 1.4)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, height * rows), squeeze=False)
    for ax, (name, result) in zip(axes.flat, scored.items(), strict=False):
        _panel(ax, name, result)
    for ax in list(axes.flat)[len(scored):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


SPEED = "questions_per_s"


def _speeds(name: str, result: dict):
    """(label, questions/s) of a benchmark and of its variants (the extreme-aspect run: `<name>_extreme_aspect`)."""
    if SPEED in result:
        yield name, result[SPEED]
    for key, value in result.items():
        if isinstance(value, dict):
            yield from _speeds(f"{name}_{key}", value)


def _without_speeds(value):
    """`value` without the questions/s anywhere in it: this machine's speed, not the result's (speed.json)."""
    if isinstance(value, dict):
        return {k: _without_speeds(v) for k, v in value.items() if k != SPEED}
    return value


def write_reports(suite: dict, provenance: dict, reports_dir: str | Path, label: str = "this run",
                  paper_row: str = "", flops_model: str = "13B-scale") -> dict:
    reports_dir = Path(reports_dir)
    reports_dir.mkdir(parents=True, exist_ok=True)
    metrics = build_metrics(suite)
    (reports_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True), encoding="utf-8")
    speed = {name: rate for n, r in suite["benchmarks"].items() for name, rate in _speeds(n, r)}
    (reports_dir / "speed.json").write_text(json.dumps({"questions_per_s": speed}, indent=2), encoding="utf-8")
    details = {"provenance": provenance, "benchmarks": _without_speeds(suite["benchmarks"]),
               "skipped": suite["skipped"]}
    (reports_dir / "provenance.json").write_text(json.dumps(details, indent=2, default=str), encoding="utf-8")
    rules = {n: r["baseline"]["rule"] for n, r in suite["benchmarks"].items() if r.get("baseline")}
    table = markdown_table(metrics, label, rules, paper_row, flops_model, provenance.get("protocol"))
    (reports_dir / "results.md").write_text(table, encoding="utf-8")
    write_scores_csv(metrics, reports_dir / "scores.csv")
    plot_benchmarks(suite, reports_dir / "benchmarks.png")
    return metrics
