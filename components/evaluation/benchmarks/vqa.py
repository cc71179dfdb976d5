"""Open-answer benchmarks: TextVQA and GQA (local scores), VQAv2 and VizWiz (submission files only).

TextVQA (eval.md §2.5): the question file's text already holds the OCR line and the short-answer suffix; the score
joins results to annotations by ``(image_id, prompt_processor(prompt))`` as ``eval_textvqa.py`` does.
GQA (§2.2): ``text.rstrip('.').lower()`` against the gold answer, balanced questions only.
VQAv2 / VizWiz (§2.1, §2.3): the converters' JSON files, answers passed through ``normalize_vqa_answer``.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from components.evaluation import scoring

from .common import (
    Question,
    best_fixed_answer,
    decoding,
    locate,
    ordered_predictions,
    read_json,
    read_jsonl,
    require,
    unparseable_share,
)

TEXTVQA_QUESTIONS = "llava_textvqa_val_v051_ocr.jsonl"
TEXTVQA_ANNOTATIONS = "TextVQA_0.5.1_val.json"
TEXTVQA_IMAGES = "train_images"
GQA_QUESTIONS = "llava_gqa_testdev_balanced.jsonl"
# the project's layout, then LLaVA's (docs/Evaluation.md: the GQA release goes under gqa/data, as eval.py runs there)
GQA_ANNOTATIONS = ("testdev_balanced_questions.json", "data/testdev_balanced_questions.json")
GQA_IMAGES = ("images", "data/images")


class TextVQA:
    name = "textvqa"
    folder = "textvqa"
    max_new_tokens = 128

    def questions(self, root, num_beams: int | None = None) -> list[Question]:
        root = require(self.name, root, TEXTVQA_QUESTIONS, TEXTVQA_IMAGES)
        beams, meta = decoding(num_beams, self.max_new_tokens)
        return [Question(line["question_id"], root / TEXTVQA_IMAGES / line["image"], line["text"],
                         self.max_new_tokens, beams, dict(meta)) for line in read_jsonl(root / TEXTVQA_QUESTIONS)]

    def _gold_answers(self, questions: Sequence[Question], root) -> list[list[str]]:
        """The ten human answers of each question, joined as ``eval_textvqa.py`` joins them."""
        root = require(self.name, root, TEXTVQA_ANNOTATIONS)
        annotations = {(a["image_id"], a["question"].lower()): a for a in read_json(root / TEXTVQA_ANNOTATIONS)["data"]}
        gold = []
        for q in questions:
            key = (q.question_id, scoring.textvqa_prompt_processor(q.prompt_text))
            if key not in annotations:
                raise KeyError(f"textvqa: no annotation for {key!r}")
            gold.append(annotations[key]["answers"])
        return gold

    def score(self, questions: Sequence[Question], predictions: Mapping[Any, str], root) -> dict:
        """``eval_textvqa.py``: soft accuracy ×100 over the answered questions (the reference scores every line of
        the answers file; a question without a prediction is simply not in it, and is counted in ``missing``).
        Unparseable: an answer that normalises to the empty string."""
        preds = ordered_predictions(self.name, questions, predictions, allow_missing=True)
        pred_list = [{"pred_answer": text, "gt_answers": gold}
                     for text, gold in zip(preds, self._gold_answers(questions, root), strict=True) if text is not None]
        acc = scoring.textvqa_accuracy(pred_list)
        empty = (scoring.normalize_vqa_answer(p["pred_answer"]) == "" for p in pred_list)
        return {"benchmark": self.name, "accuracy": 100.0 * acc, "headline": 100.0 * acc, "num_scored": len(pred_list),
                "missing": len(questions) - len(pred_list), "unparseable_share": unparseable_share(empty)}

    def baseline(self, questions: Sequence[Question], root) -> dict:
        """Majority answer: the most frequent normalised human answer over all questions, given to every question
        and soft-scored. An open answer has no chance level; this is what the answer prior alone earns."""
        counts = Counter(scoring.normalize_vqa_answer(a) for gold in self._gold_answers(questions, root) for a in gold)
        return best_fixed_answer(self.score, questions, root, [counts.most_common(1)[0][0]], "majority answer")


class GQA:
    name = "gqa"
    folder = "gqa"
    marker = GQA_QUESTIONS
    max_new_tokens = 128

    def questions(self, root, num_beams: int | None = None) -> list[Question]:
        images = locate(root, *GQA_IMAGES)
        root = require(self.name, root, GQA_QUESTIONS, images)
        beams, meta = decoding(num_beams, self.max_new_tokens)
        return [Question(line["question_id"], root / images / line["image"], line["text"], self.max_new_tokens,
                         beams, {**meta, "category": line.get("category")})
                for line in read_jsonl(root / GQA_QUESTIONS)]

    def _annotations(self, root) -> Path:
        annotations = locate(root, *GQA_ANNOTATIONS)
        return require(self.name, root, annotations) / annotations

    def score(self, questions: Sequence[Question], predictions: Mapping[Any, str], root) -> dict:
        """GQA ``eval.py --tier testdev_balanced``: exact match after ``convert_gqa_for_eval``; every balanced
        question of the question file needs a prediction (eval.py raises on a missing one)."""
        annotations = read_json(self._annotations(root))
        preds = ordered_predictions(self.name, questions, predictions)
        rows = [{"text": text, "gold": annotations[str(q.question_id)]["answer"],
                 "is_balanced": annotations[str(q.question_id)].get("isBalanced", True)}
                for q, text in zip(questions, preds, strict=True)]
        acc = scoring.gqa_accuracy(rows)
        balanced = [r for r in rows if r["is_balanced"]]
        return {"benchmark": self.name, "accuracy": acc, "headline": acc, "num_scored": len(balanced),
                "unparseable_share": unparseable_share(scoring.gqa_convert(r["text"]).strip() == "" for r in balanced)}

    def baseline(self, questions: Sequence[Question], root) -> dict:
        """Majority answer: the most frequent gold answer of the balanced questions, given to every question
        (GQA's "prior" baseline). An open answer has no chance level; this is what the answer prior alone earns."""
        annotations = read_json(self._annotations(root))
        gold = [annotations[str(q.question_id)] for q in questions]
        counts = Counter(a["answer"] for a in gold if a.get("isBalanced", True))
        return best_fixed_answer(self.score, questions, root, [counts.most_common(1)[0][0]], "majority answer")


# --------------------------------------------------------------------------- submission files (server-scored)


def read_answers_lines(lines: Iterable[str]) -> tuple[dict, int]:
    """``{question_id: text}`` of an answers JSONL, and how many lines failed to parse (the converters skip them)."""
    results, errors = {}, 0
    for line in lines:
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            errors += 1
            continue
        results[row["question_id"]] = row["text"]
    return results, errors


def vqav2_submission(answers: Mapping[Any, str], test_questions: Sequence[Mapping[str, Any]]) -> list[dict]:
    """``convert_vqav2_for_submission.py``: one ``{"question_id", "answer": norm(text)}`` per question of the
    **full** test2015 list, ``""`` for those without an answer (questions outside test-dev)."""
    return [{"question_id": q["question_id"],
             "answer": scoring.normalize_vqa_answer(answers[q["question_id"]]) if q["question_id"] in answers else ""}
            for q in test_questions]


def vizwiz_submission(answers: Mapping[Any, str], test_questions: Sequence[Mapping[str, Any]]) -> list[dict]:
    """``convert_vizwiz_for_submission.py``: ``{"image", "answer": norm(text)}`` per test question, in question-file
    order; every question must have an answer (the converter asserts)."""
    missing = [q["question_id"] for q in test_questions if q["question_id"] not in answers]
    if missing:
        raise ValueError(f"vizwiz: {len(missing)} questions have no answer (first: {missing[:3]})")
    return [{"image": q["image"], "answer": scoring.normalize_vqa_answer(answers[q["question_id"]])}
            for q in test_questions]


def write_vqav2_submission(answers_jsonl, test2015_questions_jsonl, dst) -> dict:
    """Files in, upload JSON out; returns ``{total_results, total_split, error_line}`` as the converter prints."""
    with open(answers_jsonl, encoding="utf-8") as f:
        answers, errors = read_answers_lines(f)
    split = read_jsonl(test2015_questions_jsonl)
    Path(dst).parent.mkdir(parents=True, exist_ok=True)
    Path(dst).write_text(json.dumps(vqav2_submission(answers, split)), encoding="utf-8")
    return {"total_results": len(answers), "total_split": len(split), "error_line": errors}


def write_vizwiz_submission(answers_jsonl, test_questions_jsonl, dst) -> dict:
    with open(answers_jsonl, encoding="utf-8") as f:
        answers, errors = read_answers_lines(f)
    split = read_jsonl(test_questions_jsonl)
    Path(dst).parent.mkdir(parents=True, exist_ok=True)
    Path(dst).write_text(json.dumps(vizwiz_submission(answers, split)), encoding="utf-8")
    return {"total_results": len(answers), "total_split": len(split), "error_line": errors}
