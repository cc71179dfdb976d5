"""Promotion gates for the model registry: pure functions over the figures a model version carries.

A version's *figures* are its headline benchmark scores (reports/eval/metrics.json `headline`, higher is
better, percentages except MME's 0-2000 perception total) and its validation quarantine fractions
(reports/validate/metrics.json: overall `quarantined / rows_in` and `sets.<name>.quarantined_fraction`).
They are stored on the registered version as tags (`headline.<bench>`, `validation.<key>`), so a later
promotion compares against the champion's recorded figures and needs nothing else.

Gates, in order (all are evaluated so the record lists every reason):
  headline_present  every benchmark of `registry.headline` has a finite score (a skipped one fails, with why)
  headline_tolerance no headline score below the champion's by more than `registry.tolerance` points
  validation        no quarantined fraction above the champion's by more than `registry.max_quarantine_increase`;
                    with no champion there is nothing to regress against, so it only requires well-formed figures
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

HEADLINE_PREFIX = "headline."
VALIDATION_PREFIX = "validation."
SKIPPED_TAG = "eval.skipped"


@dataclass(frozen=True)
class Figures:
    headline: dict[str, float] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    validation: dict[str, float] = field(default_factory=dict)  # "overall" and "sets.<name>" -> fraction


def _finite(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def figures_from_reports(eval_metrics: Mapping, validate_metrics: Mapping | None) -> Figures:
    """The figures of a freshly evaluated model; non-numeric headline values count as missing."""
    headline = {k: v for k, v in ((k, _finite(v)) for k, v in (eval_metrics.get("headline") or {}).items())
                if v is not None}
    skipped = {str(k): str(v) for k, v in (eval_metrics.get("skipped") or {}).items()}
    validation: dict[str, float] = {}
    if validate_metrics:
        rows_in, quarantined = validate_metrics.get("rows_in"), validate_metrics.get("quarantined")
        if _finite(rows_in) and _finite(quarantined) is not None:
            validation["overall"] = quarantined / rows_in
        for name, block in (validate_metrics.get("sets") or {}).items():
            fraction = _finite((block or {}).get("quarantined_fraction"))
            if fraction is not None:
                validation[f"sets.{name}"] = fraction
    return Figures(headline, skipped, validation)


def figures_to_tags(fig: Figures) -> dict[str, str]:
    tags = {f"{HEADLINE_PREFIX}{k}": repr(v) for k, v in fig.headline.items()}
    tags.update({f"{VALIDATION_PREFIX}{k}": repr(v) for k, v in fig.validation.items()})
    if fig.skipped:
        tags[SKIPPED_TAG] = json.dumps(fig.skipped, sort_keys=True)
    return tags


def figures_from_tags(tags: Mapping[str, str]) -> Figures:
    def floats(prefix: str) -> dict[str, float]:
        out = {}
        for key, value in tags.items():
            if key.startswith(prefix):
                try:
                    out[key[len(prefix):]] = float(value)
                except ValueError:
                    continue  # a hand-edited tag is not a score
        return out

    skipped = json.loads(tags[SKIPPED_TAG]) if SKIPPED_TAG in tags else {}
    return Figures(floats(HEADLINE_PREFIX), skipped, floats(VALIDATION_PREFIX))


def _gate(reasons: list[str], notes: list[str] | None = None) -> dict:
    return {"passed": not reasons, "reasons": reasons, "notes": notes or []}


def gate_headline_present(candidate: Figures, headline: Iterable[str]) -> dict:
    reasons = []
    for bench in headline:
        if bench not in candidate.headline:
            why = candidate.skipped.get(bench)
            reasons.append(f"{bench}: no headline score" + (f" (skipped: {why})" if why else " (missing)"))
    return _gate(reasons)


def gate_headline_tolerance(candidate: Figures, champion: Figures | None, headline: Iterable[str],
                            tolerance: float) -> dict:
    if champion is None:
        return _gate([], ["no champion yet"])
    reasons, notes = [], []
    for bench in headline:
        new, old = candidate.headline.get(bench), champion.headline.get(bench)
        if new is None:
            continue  # headline_present already reports it
        if old is None:
            notes.append(f"{bench}: champion has no score to compare")
        elif not new >= old - tolerance:  # not `new < old - tolerance`: a NaN anywhere must fail, not pass
            reasons.append(f"{bench}: {new:g} is {old - new:g} points below the champion's {old:g} "
                           f"(tolerance {tolerance:g})")
    return _gate(reasons, notes)


def gate_validation(candidate: Figures, champion: Figures | None, max_increase: float) -> dict:
    if not candidate.validation:
        return _gate(["validation: no quarantine figures for this model (reports/validate/metrics.json)"])
    bad = [k for k, v in candidate.validation.items() if not 0.0 <= v <= 1.0]
    if bad:
        return _gate([f"validation: quarantined fraction out of [0, 1] for {bad}"])
    if champion is None or not champion.validation:
        return _gate([], ["no champion validation figures to compare"])
    reasons, notes = [], []
    for key, new in sorted(candidate.validation.items()):
        old = champion.validation.get(key)
        if old is None:
            notes.append(f"validation.{key}: champion has no figure to compare")
        elif not new <= old + max_increase:  # fails closed on NaN
            reasons.append(f"validation.{key}: quarantined fraction {new:.4f} vs champion's {old:.4f} "
                           f"(more than +{max_increase:g})")
    return _gate(reasons, notes)


def check_gates(candidate: Figures, champion: Figures | None, headline: Iterable[str], tolerance: float,
                max_quarantine_increase: float) -> dict:
    """{"passed": bool, "reasons": [...], "gates": {name: {"passed", "reasons", "notes"}}}."""
    headline = tuple(headline)
    limits = {"registry.tolerance": tolerance, "registry.max_quarantine_increase": max_quarantine_increase}
    broken = [f"{key} must be a finite number >= 0, got {value!r}" for key, value in limits.items()
              if not (math.isfinite(value) and value >= 0)]
    if broken:  # every comparison against NaN is False: a gate written `if worse: fail` would pass everything
        return {"passed": False, "reasons": broken, "gates": {}}
    gates = {"headline_present": gate_headline_present(candidate, headline),
             "headline_tolerance": gate_headline_tolerance(candidate, champion, headline, tolerance),
             "validation": gate_validation(candidate, champion, max_quarantine_increase)}
    reasons = [r for g in gates.values() for r in g["reasons"]]
    return {"passed": not reasons, "reasons": reasons, "gates": gates}
