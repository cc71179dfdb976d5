"""Benchmark scorers with LLaVA-1.5 reference semantics (shared/design.md §6, shared/reference/eval.md §2).

Pure functions, no I/O. Each contract function reproduces the reference script LLaVA-1.5 / LLaVA-UHD report with,
quirks included; the golden cases in ``golden/eval_scoring.public.json`` pin them. Where the reference crashes, the
function returns a defined value (documented on the function). ``*_lmms_eval`` functions are the lmms-eval variants,
kept separate so nobody "fixes" one reference toward the other.

Contract::

    normalize_vqa_answer(text) -> str
    vqa_soft_accuracy(prediction, gt_answers) -> float
    pope_metrics(predictions, labels) -> dict
    mme_scores(rows_per_subtask) -> dict
    scienceqa_parse(text, num_choices) -> int
    mmbench_circular(rows) -> dict
    gqa_correct(text, gold) -> bool
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping, Sequence
from typing import Any

from components.evaluation.mmbench import (
    can_infer,
    extract_mcq_answer,
    mmbench_answer_letter,
    mmbench_circular,
    mmbench_circular_chance,
)
from components.evaluation.vqa_normalize import normalize_vqa_answer, process_digit_article, process_punctuation

__all__ = [
    "MME_COGNITION",
    "MME_PERCEPTION",
    "can_infer",
    "extract_mcq_answer",
    "gqa_accuracy",
    "gqa_convert",
    "gqa_correct",
    "mmbench_answer_letter",
    "mmbench_circular",
    "mmbench_circular_chance",
    "mme_parse_pred_ans",
    "mme_parse_pred_ans_lmms_eval",
    "mme_scores",
    "mme_scores_lmms_eval",
    "normalize_vqa_answer",
    "pope_is_unparseable",
    "pope_map_answer",
    "pope_metrics",
    "pope_metrics_lmms_eval",
    "scienceqa_exact_match_lmms_eval",
    "scienceqa_extract_letter",
    "scienceqa_parse",
    "textvqa_accuracy",
    "textvqa_prompt_processor",
    "vqa_soft_accuracy",
    "vqa_soft_accuracy_lmms_eval",
]

# --------------------------------------------------------------------------- VQA (TextVQA / VQAv2 / VizWiz)


def _leave_one_out(pred: str, gts: Sequence[str]) -> float:
    """Mean over each GT left out of ``min(1, #other GT equal to pred / 3)``, summed in GT order like the reference."""
    n_match = sum(1 for g in gts if g == pred)
    if n_match == 0:
        return 0.0
    total = 0.0
    for g in gts:
        total += min(1, float(n_match - (g == pred)) / 3)
    return total / len(gts)


def vqa_soft_accuracy(prediction: str, gt_answers: Sequence[str]) -> float:
    """TextVQA/VQAv2 soft accuracy of one answer (LLaVA ``TextVQAAccuracyEvaluator``, one entry).

    ``prediction``: the raw model text; ``gt_answers``: the 10 raw human answers. Both sides go through
    :func:`normalize_vqa_answer`. Raises ValueError unless there are exactly 10 GT answers (the reference asserts).
    """
    if len(gt_answers) != 10:
        raise ValueError(f"vqa_soft_accuracy needs 10 GT answers, got {len(gt_answers)}")
    return _leave_one_out(normalize_vqa_answer(prediction), [normalize_vqa_answer(a) for a in gt_answers])


def textvqa_accuracy(pred_list: Sequence[Mapping[str, Any]]) -> float:
    """``eval_pred_list``: plain mean of :func:`vqa_soft_accuracy` over ``[{pred_answer, gt_answers}]``.
    Raises ValueError on an empty list (the reference divides by zero)."""
    if not pred_list:
        raise ValueError("textvqa_accuracy: empty prediction list")
    scores = [vqa_soft_accuracy(e["pred_answer"], e["gt_answers"]) for e in pred_list]
    return sum(scores) / len(scores)


def textvqa_prompt_processor(prompt: str) -> str:
    """LLaVA ``eval_textvqa.prompt_processor``: the lower-cased question used to join with TextVQA annotations.
    Raises ValueError where the reference hits ``assert False``."""
    lines = prompt.split("\n")
    if prompt.startswith("OCR tokens: "):
        match = re.search(r"Question: (.*?) Short answer:", prompt, re.DOTALL)
        if match is None:
            raise ValueError(f"unrecognised TextVQA prompt: {prompt!r}")
        question = match.group(1)
    elif "Reference OCR token: " in prompt and len(lines) == 3:
        question = lines[1] if prompt.startswith("Reference OCR token:") else lines[0]
    elif len(lines) == 2:
        question = lines[0]
    else:
        raise ValueError(f"unrecognised TextVQA prompt: {prompt!r}")
    return question.lower()


def vqa_soft_accuracy_lmms_eval(prediction: str, gt_answers: Sequence[str]) -> dict:
    """lmms-eval variants on one stripped output: ``vqav2_*`` (``vqav2_process_results``) and ``textvqa_*``.

    VQAv2 (as pinned by the goldens): the answer gets only process_punctuation + process_digit_article (no lower-case
    word_tokenize, no ``'s`` split); GT answers get \\n/\\t -> space and strip, and are normalised the same way
    only when they are not all identical. TextVQA/VizWiz use the full :func:`normalize_vqa_answer` on both sides
    (same number as :func:`vqa_soft_accuracy`). Accepts any number of GT answers (lmms-eval does not assert 10).
    """
    pred = prediction.strip()
    gts = [a.replace("\n", " ").replace("\t", " ").strip() for a in gt_answers]
    res = process_digit_article(process_punctuation(pred))
    if len(set(gts)) > 1:
        gts = [process_digit_article(process_punctuation(a)) for a in gts]
        res = process_digit_article(process_punctuation(res))
    t_res = normalize_vqa_answer(pred)
    t_gts = [normalize_vqa_answer(a) for a in gt_answers]
    return {
        "vqav2_exact_match": _leave_one_out(res, gts) if gts else 0,
        "vqav2_submission_answer": res,
        "textvqa_exact_match": _leave_one_out(t_res, t_gts) if t_gts else 0,
        "textvqa_submission_answer": t_res,
    }


# --------------------------------------------------------------------------- POPE


def _pope_words(text: str) -> list[str]:
    """``eval_pope``'s tokens: the text before the first ".", "," dropped, split on a single space."""
    if "." in text:
        text = text.split(".")[0]
    return text.replace(",", "").split(" ")


def _pope_says_no(words: Sequence[str]) -> bool:
    return "No" in words or "not" in words or "no" in words


def pope_map_answer(text: str) -> str:
    """``eval_pope`` answer mapping: keep the text before the first ".", drop ",", split on a single space; "no" iff a
    token is exactly "No", "no" or "not", else "yes" (so "NO", "Nope", "" and "No\\nThere is none" are "yes")."""
    return "no" if _pope_says_no(_pope_words(text)) else "yes"


def pope_is_unparseable(text: str) -> bool:
    """True when :func:`pope_map_answer` says "yes" only by default: no token is "no" by the reference rule and none
    is "yes" (any case, surrounding punctuation ignored). Gibberish, "", "Nope" and "NO" are unparseable: the
    reference scores them as yes, which is how a model that never answers earns POPE's always-yes F1."""
    words = _pope_words(text)
    return not _pope_says_no(words) and not any(w.strip(string.punctuation).lower() == "yes" for w in words)


def _binary_metrics(tp: int, fp: int, tn: int, fn: int) -> dict:
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def pope_metrics(predictions: Sequence[str], labels: Sequence[str]) -> dict:
    """POPE metrics of one split (LLaVA ``eval_pope``), positive = "yes".

    ``predictions``: raw answer texts in question-file order; ``labels``: "yes"/"no" from the POPE annotation file
    in file order (any label other than "no" counts as yes, as in the reference). They are paired by position, so
    the caller must restore question order first.

    Returns ``TP FP TN FN accuracy precision recall f1 yes_ratio`` (yes_ratio = share of *predictions* mapped to
    yes) and ``normalized_preds``. Defined where the reference raises ZeroDivisionError: precision = 0.0 with no
    predicted yes, recall = 0.0 with no yes label, f1 = 0.0 when precision + recall = 0. Raises ValueError on empty
    input or a length mismatch (the reference would silently truncate with ``zip``).
    """
    if len(predictions) != len(labels):
        raise ValueError(f"pope_metrics: {len(predictions)} predictions vs {len(labels)} labels")
    if not predictions:
        raise ValueError("pope_metrics: empty input")
    preds = [pope_map_answer(p) for p in predictions]
    tp = fp = tn = fn = 0
    for p, lab in zip(preds, labels, strict=True):
        pos_label = lab != "no"
        if p == "yes":
            tp, fp = (tp + 1, fp) if pos_label else (tp, fp + 1)
        else:
            fn, tn = (fn + 1, tn) if pos_label else (fn, tn + 1)
    out = {"TP": tp, "FP": fp, "TN": tn, "FN": fn, "accuracy": (tp + tn) / (tp + tn + fp + fn)}
    out.update(_binary_metrics(tp, fp, tn, fn))
    out["yes_ratio"] = preds.count("yes") / len(preds)
    out["normalized_preds"] = preds
    return out


def pope_metrics_lmms_eval(predictions: Sequence[str], labels: Sequence[str]) -> dict:
    """lmms-eval ``pope`` metrics: a prediction counts only if ``lower().strip()`` is exactly "yes"/"no" (anything
    else is wrong and is neither TP/FP nor FN); yes_ratio is the *ground-truth* yes share; 0 instead of dividing by
    zero. Returns ``accuracy precision recall f1 yes_ratio``."""
    if len(predictions) != len(labels) or not predictions:
        raise ValueError("pope_metrics_lmms_eval: need equally long, non-empty inputs")
    preds = [p.lower().strip() for p in predictions]
    gts = [g.lower().strip() for g in labels]
    tp = sum(p == "yes" and g == "yes" for p, g in zip(preds, gts, strict=True))
    fp = sum(p == "yes" and g == "no" for p, g in zip(preds, gts, strict=True))
    fn = sum(p == "no" and g == "yes" for p, g in zip(preds, gts, strict=True))
    out = {"accuracy": sum(p == g for p, g in zip(preds, gts, strict=True)) / len(preds)}
    out.update(_binary_metrics(tp, fp, 0, fn))
    n_yes, n_no = gts.count("yes"), gts.count("no")
    out["yes_ratio"] = n_yes / (n_yes + n_no) if n_yes + n_no else 0.0
    return out


# --------------------------------------------------------------------------- MME

MME_PERCEPTION = ("existence", "count", "position", "color", "posters", "celebrity", "scene", "landmark",
                  "artwork", "OCR")  # fmt: skip
MME_COGNITION = ("commonsense_reasoning", "numerical_calculation", "text_translation", "code_reasoning")


def mme_parse_pred_ans(raw: str) -> str:
    """MME eval tool parsing of one raw answer: the tool sees ``answer.lower()`` with the line's trailing newline;
    exact "yes"/"no", else "yes" in the first 4 chars, else "no" in them, else "other" ("Y" -> other, "know" -> no)."""
    pred = (raw + "\n").lower()
    if pred in ("yes", "no"):
        return pred
    prefix = pred[:4]
    return "yes" if "yes" in prefix else "no" if "no" in prefix else "other"


def mme_parse_pred_ans_lmms_eval(raw: str) -> str:
    """lmms-eval ``mme/utils.parse_pred_ans``: lower, strip, drop "."; a lone "y"/"n" maps to yes/no."""
    pred = raw.lower().strip().replace(".", "")
    if pred in ("yes", "no"):
        return pred
    if len(pred) == 1:
        return {"y": "yes", "n": "no"}.get(pred, "other")
    prefix = pred[:4]
    return "yes" if "yes" in prefix else "no" if "no" in prefix else "other"


def _check_mme_subtasks(rows_per_subtask: Mapping[str, Sequence[Mapping[str, str]]]) -> None:
    unknown = set(rows_per_subtask) - set(MME_PERCEPTION) - set(MME_COGNITION)
    if unknown:
        raise ValueError(f"unknown MME subtasks: {sorted(unknown)}")


def mme_scores(rows_per_subtask: Mapping[str, Sequence[Mapping[str, str]]]) -> dict:
    """MME scores as the official eval tool (``calculation.py``) computes them.

    ``rows_per_subtask``: ``{subtask: [{"image", "question", "gt", "pred"}, ...]}``, the lines of the tool's
    ``<subtask>.txt`` in answer-file order (``gt`` "Yes"/"No", ``pred`` the raw model answer). Every two consecutive
    rows are one image (pairs by position, like the tool). Subtask names are the 14 MME ones; missing subtasks are
    skipped in the totals.

    Returns ``perception_total``, ``cognition_total`` (sums in the tool's subtask order) and
    ``per_task{name: {score, acc, acc_plus, parsed_preds}}`` with score = 100*acc + 100*acc_plus.
    Defined where the tool crashes: a subtask whose answers all parse as "other" scores acc = acc_plus = 0 (they are
    all wrong; the tool's confusion_matrix raises on the empty remainder). Raises ValueError on an unknown subtask,
    an odd row count, an empty subtask or a gt other than yes/no (the tool asserts).
    """
    _check_mme_subtasks(rows_per_subtask)
    per_task: dict[str, dict] = {}
    totals = {"perception_total": 0, "cognition_total": 0}
    for total_key, names in (("perception_total", MME_PERCEPTION), ("cognition_total", MME_COGNITION)):
        for name in names:
            if name not in rows_per_subtask:
                continue
            rows = rows_per_subtask[name]
            if not rows or len(rows) % 2:
                raise ValueError(f"MME subtask {name!r}: need a positive even row count, got {len(rows)}")
            parsed, correct, plus = [], 0, 0
            for i in range(0, len(rows), 2):
                img_correct = 0
                for row in rows[i : i + 2]:
                    gt = row["gt"].lower()
                    if gt not in ("yes", "no"):
                        raise ValueError(f"MME subtask {name!r}: gt must be yes/no, got {row['gt']!r}")
                    pred = mme_parse_pred_ans(row["pred"])
                    parsed.append(pred)
                    img_correct += gt == pred
                correct += img_correct
                plus += img_correct == 2
            acc = correct / len(rows)
            acc_plus = plus / (len(rows) // 2)
            score = 0 + acc * 100 + acc_plus * 100  # the tool's accumulation order
            per_task[name] = {"score": score, "acc": acc, "acc_plus": acc_plus, "parsed_preds": parsed}
            totals[total_key] += score
    return {**totals, "per_task": per_task}


def mme_scores_lmms_eval(rows_per_subtask: Mapping[str, Sequence[Mapping[str, str]]]) -> dict:
    """lmms-eval ``mme_process_results`` + ``mme_aggregate_results``: lmms-eval parsing, pairs grouped by image
    (``question_id``) within a subtask instead of by position. Returns ``perception_total``, ``cognition_total``."""
    _check_mme_subtasks(rows_per_subtask)
    totals = {"perception_total": 0.0, "cognition_total": 0.0}
    for name, rows in rows_per_subtask.items():
        by_image: dict[str, list[float]] = {}
        for row in rows:
            gt = row["gt"].lower().strip().replace(".", "")
            hit = 1.0 if mme_parse_pred_ans_lmms_eval(row["pred"]) == gt else 0.0
            by_image.setdefault(row["image"], []).append(hit)
        total = 0.0
        for scores in by_image.values():
            if len(scores) != 2:
                raise ValueError(f"MME subtask {name!r}: an image has {len(scores)} questions, need 2")
            total += (sum(scores) == 2) * 100.0 + sum(scores) / len(scores) * 100.0
        key = "perception_total" if name in MME_PERCEPTION else "cognition_total"
        totals[key] += total / len(by_image) if by_image else 0.0
    return totals


# --------------------------------------------------------------------------- ScienceQA

SQA_OPTIONS = ("A", "B", "C", "D", "E")
_SQA_ANSWER_IS = re.compile(r"The answer is ([A-Z]).")


def scienceqa_extract_letter(text: str) -> str:
    """``eval_science_qa`` parse block: exact option letter; else ``X. `` at the start; else exactly one match of
    ``The answer is ([A-Z]).`` (the "." is any char, so "The answer is Apple." gives A); else "FAILED"."""
    if text in SQA_OPTIONS:
        return text
    if len(text) >= 3 and text[0] in SQA_OPTIONS and text[1:3] == ". ":
        return text[0]
    found = _SQA_ANSWER_IS.findall(text)
    return found[0] if len(found) == 1 else "FAILED"


def scienceqa_parse(text: str, num_choices: int) -> int:
    """Predicted option index of a ScienceQA answer, -1 when none (``get_pred_idx`` over the first ``num_choices``
    of A-E). ``text`` is the stripped model output; "A." and "(A)" give -1."""
    letter = scienceqa_extract_letter(text)
    return SQA_OPTIONS.index(letter) if letter in SQA_OPTIONS[:num_choices] else -1


def scienceqa_exact_match_lmms_eval(text: str, answer_idx: int) -> float:
    """lmms-eval ``sqa_process_results`` on the stripped output (reconstructed from the goldens): exact gold letter,
    or a gold letter followed by "." ("A." and "C. apostrophe" score 1)."""
    pred, target = text.strip(), chr(ord("A") + answer_idx)
    if pred == target:
        return 1.0
    return 1.0 if len(pred) >= 2 and pred[0] == target and pred[1] == "." else 0.0


# --------------------------------------------------------------------------- GQA


def gqa_convert(text: str) -> str:
    """``convert_gqa_for_eval``: ``text.rstrip('.').lower()``, nothing else (spaces and articles kept)."""
    return text.rstrip(".").lower()


def gqa_correct(text: str, gold: str) -> bool:
    """GQA ``eval.py`` correctness: converted prediction == gold answer, exact string."""
    return gqa_convert(text) == gold


def gqa_accuracy(rows: Sequence[Mapping[str, Any]]) -> float:
    """GQA accuracy in percent over ``[{text, gold, is_balanced (default True)}]``: only balanced questions count
    (``eval.py --tier testdev_balanced``); eval.py prints it rounded to 2 decimals. ValueError if none is balanced."""
    scored = [gqa_correct(r["text"], r["gold"]) for r in rows if r.get("is_balanced", True)]
    if not scored:
        raise ValueError("gqa_accuracy: no balanced question")
    return 100.0 * sum(scored) / len(scored)
