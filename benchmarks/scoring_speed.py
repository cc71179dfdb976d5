"""Scoring speed: the time to score a 10,000-answer file with `components.evaluation.scoring`.

What, best of `--repeats` runs each, on deterministic (seeded) synthetic data:
  (a) `normalize_vqa_answer` alone over 10,000 raw model answers;
  (b) `vqa_soft_accuracy` over the same 10,000 answers, each against 10 GT answers (it normalises the
      prediction and all 10 GT answers itself, i.e. 110,000 normalisations);
  (c) `pope_metrics` on 10,000 (answer, label) rows;
  (d) `mme_scores` on 10,000 rows (5,000 image pairs) spread over the 14 MME subtasks.
Answers mix the shapes real outputs have: short words, number words, trailing punctuation, hyphens,
possessives, "1,000"-style numbers, POPE free text ("No, there is not.") and MME "Yes"/"N"/"Not sure".

Why: scoring must never be the slow part of the eval stage (the issue asks for the scoring time of a
10,000-answer file). The last line is one JSON object with every figure.

Run from the repository root:
    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.scoring_speed [--n 10000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections.abc import Callable

from components.evaluation import scoring

_WORDS = ["red", "blue", "Two", "ten", "yes", "No", "stop", "coca-cola", "man's hat", "T-Shirt", "1,000",
          "the dog", "An apple", "3.14.", "Yes.", "nike!", "left side", "unanswerable", "(a)", "U.S.A."]  # fmt: skip
_POPE = ["Yes", "No", "Yes, there is a cat.", "No, there is not.", "There is no dog.", "Nope", "yes"]
_MME = ["Yes", "No", "yes.", "No, it is not.", "Y", "N", "Not sure", "The answer is yes"]


def make_vqa(n: int, rng: random.Random) -> tuple[list[str], list[list[str]]]:
    preds = [rng.choice(_WORDS) for _ in range(n)]
    gts = [[rng.choice(_WORDS[:8]) if rng.random() < 0.5 else p for _ in range(10)] for p in preds]
    return preds, gts


def make_pope(n: int, rng: random.Random) -> tuple[list[str], list[str]]:
    return [rng.choice(_POPE) for _ in range(n)], [rng.choice(("yes", "no")) for _ in range(n)]


def make_mme(n: int, rng: random.Random) -> dict[str, list[dict[str, str]]]:
    names = list(scoring.MME_PERCEPTION) + list(scoring.MME_COGNITION)
    rows: dict[str, list[dict[str, str]]] = {name: [] for name in names}
    for i in range(n // 2):
        name = names[i % len(names)]
        for gt in ("Yes", "No"):
            rows[name].append({"image": f"{name}/{i}.jpg", "question": "q?", "gt": gt, "pred": rng.choice(_MME)})
    return rows


def best_of(fn: Callable[[], object], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    rng = random.Random(args.seed)
    preds, gts = make_vqa(args.n, rng)
    pope_preds, pope_labels = make_pope(args.n, rng)
    mme_rows = make_mme(args.n, rng)

    acc: list[float] = []

    def vqa() -> None:
        acc[:] = [scoring.vqa_soft_accuracy(p, g) for p, g in zip(preds, gts, strict=True)]

    figures = {
        "n": args.n,
        "normalize_vqa_answer_s": best_of(lambda: [scoring.normalize_vqa_answer(p) for p in preds], args.repeats),
        "vqa_soft_accuracy_s": best_of(vqa, args.repeats),
        "pope_metrics_s": best_of(lambda: scoring.pope_metrics(pope_preds, pope_labels), args.repeats),
        "mme_scores_s": best_of(lambda: scoring.mme_scores(mme_rows), args.repeats),
    }
    figures["vqa_file_total_s"] = figures["normalize_vqa_answer_s"] + figures["vqa_soft_accuracy_s"]
    figures["vqa_answers_per_s"] = args.n / figures["vqa_soft_accuracy_s"]
    figures["vqa_mean_accuracy"] = sum(acc) / len(acc)
    print(f"{'what':<34}{'seconds':>10}")
    for key in ("normalize_vqa_answer_s", "vqa_soft_accuracy_s", "vqa_file_total_s", "pope_metrics_s", "mme_scores_s"):
        print(f"{key:<34}{figures[key]:>10.4f}")
    print(f"vqa_soft_accuracy: {figures['vqa_answers_per_s']:,.0f} answers/s (10 GT each), best of {args.repeats}")
    print(json.dumps(figures, sort_keys=True))
    return figures


if __name__ == "__main__":
    main()
