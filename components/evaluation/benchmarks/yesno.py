"""Yes/no benchmarks whose reference scorers are ORDER-dependent: POPE (eval.md §2.6) and MME (§2.7).

Both scorers read answers in question-file order: POPE zips each category's answers with the label file by
position, MME pairs consecutive lines of a subtask. The adapters therefore always walk the question list in file
order and look predictions up by id, so a resharded or reordered answers file scores the same.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from components.data.conversation import SHORT_ANSWER
from components.evaluation import scoring

from .common import (
    Question,
    best_fixed_answer,
    decoding,
    ordered_predictions,
    read_jsonl,
    require,
    unparseable_share,
)

POPE_QUESTIONS = "llava_pope_test.jsonl"
POPE_ANNOTATIONS = "coco"
POPE_IMAGES = "val2014"
MME_QUESTIONS = "llava_mme.jsonl"
MME_RELEASE = "MME_Benchmark_release_version"
MME_YES_NO = " Please answer yes or no."


class POPE:
    name = "pope"
    folder = "pope"
    max_new_tokens = 128

    def questions(self, root, num_beams: int | None = None) -> list[Question]:
        root = require(self.name, root, POPE_QUESTIONS, POPE_ANNOTATIONS, POPE_IMAGES)
        beams, meta = decoding(num_beams, self.max_new_tokens)
        return [Question(line["question_id"], root / POPE_IMAGES / line["image"], line["text"], self.max_new_tokens,
                         beams, {**meta, "category": line["category"]}) for line in read_jsonl(root / POPE_QUESTIONS)]

    def score(self, questions: Sequence[Question], predictions: Mapping[Any, str], root) -> dict:
        """``eval_pope.py``: per ``coco/coco_pope_<cat>.json`` (sorted by name; the reference uses listdir order),
        that category's answers in question-file order against the labels in file order. Headline = mean F1 ×100."""
        root = require(self.name, root, POPE_ANNOTATIONS)
        preds = ordered_predictions(self.name, questions, predictions)
        files = sorted(f for f in os.listdir(root / POPE_ANNOTATIONS) if f.startswith("coco_pope_"))
        if not files:
            raise FileNotFoundError(f"pope: no coco_pope_<category>.json under {root / POPE_ANNOTATIONS}")
        per_category = {}
        for file in files:
            if not file.endswith(".json"):
                raise ValueError(f"pope: unexpected annotation file {file}")
            category = file[len("coco_pope_"):-len(".json")]
            labels = [row["label"] for row in read_jsonl(root / POPE_ANNOTATIONS / file)]
            cur = [p for q, p in zip(questions, preds, strict=True) if q.metadata.get("category") == category]
            metrics = scoring.pope_metrics(cur, labels)
            metrics.pop("normalized_preds")
            per_category[category] = {**metrics, "num_samples": len(cur)}
        mean_f1 = 100.0 * sum(m["f1"] for m in per_category.values()) / len(per_category)
        mean_acc = 100.0 * sum(m["accuracy"] for m in per_category.values()) / len(per_category)
        return {"benchmark": self.name, "mean_f1": mean_f1, "mean_accuracy": mean_acc, "headline": mean_f1,
                "per_category": per_category,
                "unparseable_share": unparseable_share(map(scoring.pope_is_unparseable, preds))}

    def baseline(self, questions: Sequence[Question], root) -> dict:
        """The better of always "Yes" and always "No", scored like an answer: a yes/no benchmark has no prior
        better than the label balance, and always-yes is what a model earns whose answers the reference maps to
        yes by default (F1 2p/(1+p) per split, p = that split's share of yes labels; always-no has F1 0)."""
        return best_fixed_answer(self.score, questions, root, ("Yes", "No"))


def mme_ground_truth(release: Path) -> dict[tuple[str, str, str], str]:
    """``convert_answer_to_mme.get_gt``: ``{(category, txt file name, question): answer}``; a category with an
    ``images`` folder keeps its .txt files in ``questions_answers_YN``, others beside the images."""
    gt = {}
    for category in sorted(os.listdir(release)):
        category_dir = release / category
        if not category_dir.is_dir():
            continue
        qa_dir = category_dir / "questions_answers_YN" if (category_dir / "images").exists() else category_dir
        for file in sorted(os.listdir(qa_dir)):
            if not file.endswith(".txt"):
                continue
            for line in (qa_dir / file).read_text(encoding="utf-8").splitlines():
                if line.strip():
                    question, answer = line.strip().split("\t")
                    gt[(category, file, question)] = answer
    return gt


def mme_rows(questions: Sequence[Question], preds: Sequence[str], gt: Mapping) -> dict[str, list[dict]]:
    """``convert_answer_to_mme.py``: rows of ``<category>.txt`` in answer order, the GT looked up by the prompt with
    the short-answer suffix swapped back for " Please answer yes or no." (or its double-space variant)."""
    rows: dict[str, list[dict]] = {}
    for q, text in zip(questions, preds, strict=True):
        qid = str(q.question_id)
        category = qid.split("/")[0]
        file = qid.split("/")[-1].split(".")[0] + ".txt"
        prompt = q.prompt_text
        if SHORT_ANSWER in prompt:
            prompt = prompt.replace(SHORT_ANSWER, "").strip()
        if "Please answer yes or no." not in prompt:
            prompt = prompt + MME_YES_NO
            if (category, file, prompt) not in gt:
                prompt = prompt.replace(MME_YES_NO, " " + MME_YES_NO)
        if (category, file, prompt) not in gt:
            raise KeyError(f"mme: no ground truth for {(category, file, prompt)!r}")
        rows.setdefault(category, []).append({"image": file, "question": prompt, "gt": gt[(category, file, prompt)],
                                              "pred": text})
    return rows


class MME:
    name = "mme"
    folder = "mme"
    folders = ("mme", "MME")  # the project's, LLaVA's eval.zip
    marker = MME_QUESTIONS
    max_new_tokens = 128

    def questions(self, root, num_beams: int | None = None) -> list[Question]:
        root = require(self.name, root, MME_QUESTIONS, MME_RELEASE)
        beams, meta = decoding(num_beams, self.max_new_tokens)
        out, seen = [], {}
        for line in read_jsonl(root / MME_QUESTIONS):
            k = seen[line["question_id"]] = seen.get(line["question_id"], -1) + 1
            out.append(Question(line["question_id"], root / MME_RELEASE / line["image"], line["text"],
                                self.max_new_tokens, beams, {**meta, "category": line.get("category")},
                                key=f"{line['question_id']}#{k}"))
        return out

    def score(self, questions: Sequence[Question], predictions: Mapping[Any, str], root) -> dict:
        """MME eval tool on the converted rows: perception total is the headline (LLaVA's "MME" column).
        ``predictions`` are keyed by ``Question.uid`` ("<image path>#<k>", k-th question of that image)."""
        root = require(self.name, root, MME_RELEASE)
        preds = ordered_predictions(self.name, questions, predictions)
        result = scoring.mme_scores(mme_rows(questions, preds, mme_ground_truth(root / MME_RELEASE)))
        per_task = {k: {m: v[m] for m in ("score", "acc", "acc_plus")} for k, v in result["per_task"].items()}
        return {"benchmark": self.name, "perception_total": result["perception_total"],
                "cognition_total": result["cognition_total"], "headline": result["perception_total"],
                "per_task": per_task,
                "unparseable_share": unparseable_share(scoring.mme_parse_pred_ans(p) == "other" for p in preds)}

    def baseline(self, questions: Sequence[Question], root) -> dict:
        """The better of always "Yes" and always "No" through the MME tool: each image has one yes and one no
        question, so either earns acc 50% and acc+ 0, i.e. 50 per perception subtask."""
        return best_fixed_answer(self.score, questions, root, ("Yes", "No"))
