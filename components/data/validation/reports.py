"""What a run reports: the returned `ValidationReport`, and the report files written atomically in
`report_dir`: metrics.json (counts; rows_in == valid + quarantined), gx_report.json (summary + GX's own result
dicts, unexpected lists cut to a few examples) and gx_report.html."""

from __future__ import annotations

import html
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .rules import REASONS

REPORT_FILES = ("metrics.json", "gx_report.json", "gx_report.html")


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

    def summary(self) -> dict:
        """The short form printed after a run: counts, the reasons that occurred, image counts, GX failures."""
        m = self.metrics
        return {**{key: m[key] for key in ("dataset", "rows_in", "valid", "quarantined", "quarantined_fraction")},
                "reasons": {code: n for code, n in m["reasons"].items() if n},
                "images": {key: m["images"][key] for key in ("referenced", "valid", "bad", "full_decode_checked")},
                "gx_failed_expectations": {name: suite["failed"] for name, suite in m["gx"].items()}}


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


_RUN_IDENTITY_KEYS = frozenset({"id", "validation_id", "run_id", "run_time", "validation_time", "ge_load_time"})


def _without_run_identity(value):
    """GX's result JSON minus the per-run ids and clock times."""
    if isinstance(value, dict):
        return {k: _without_run_identity(v) for k, v in value.items() if k not in _RUN_IDENTITY_KEYS}
    if isinstance(value, list):
        return [_without_run_identity(v) for v in value]
    return value


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


def write_reports(report: ValidationReport, gx: dict, report_dir: Path, annotation_path: Path,
                  image_root: Path) -> None:
    _write_atomic(report_dir / "metrics.json", json.dumps(report.metrics, indent=2, default=_json_default) + "\n")
    gx_json = {
        "dataset": report.dataset,
        "annotation_file": str(annotation_path),
        "image_root": str(image_root),
        "reasons": REASONS,
        "summary": {name: {k: suite[k] for k in ("success", "statistics", "expectations")}
                    for name, suite in gx.items()},
        "great_expectations": {name: _without_run_identity(suite["json"]) for name, suite in gx.items()},
    }
    # Timings, GX's run ids and clock times change on every run; leaving them out keeps the report a pure
    # function of the data, so `dvc repro` on another machine reproduces it byte for byte (timings are
    # in the stage's log and the ValidationReport).
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
