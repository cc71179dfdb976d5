"""Multiple-choice benchmarks: ScienceQA-IMG (eval.md §2.4) and MMBench dev EN/CN (§2.8, §2.9).

ScienceQA: ``model_vqa_science.py --single-pred-prompt`` prompts (``<image>`` stripped from the human turn, letter
suffix appended; items without an image stay text-only) and ``eval_science_qa.py`` scoring (IMG-Accuracy over
items whose prompt had an image). MMBench: ``model_vqa_mmbench.py`` prompts built from the TSV row (hint, question,
options up to the first absent one, EN or CN suffix) and static CircularEval over all passes;
``write_mmbench_submission`` writes the OpenCompass upload (.xlsx) of any split, the test split's included.
"""

from __future__ import annotations

import base64
import csv
import io
import math
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from components.data.conversation import IMAGE_TOKEN, LETTER_ANSWER
from components.evaluation import scoring

from .common import (
    LETTER_SUFFIX_CN,
    Question,
    best_fixed_answer,
    better_baseline,
    decoding,
    ordered_predictions,
    read_json,
    require,
    unparseable_share,
)

SQA_QUESTIONS = "llava_test_CQM-A.json"
SQA_PROBLEMS = "problems.json"
SQA_SPLITS = "pid_splits.json"
SQA_IMAGES = "images/test"
MMBENCH_FILES = {"en": "mmbench_dev_20230712.tsv", "cn": "mmbench_dev_cn_20231003.tsv"}
MMBENCH_OPTIONS = "ABCD"
# scripts/convert_mmbench_for_submission.py (haotian-liu/LLaVA@c121f04): these TSV columns are dropped, and
# `prediction` (the raw answer text) is inserted as the 7th column, e.g. dev EN:
# index, question, A, B, C, D, prediction, answer, split (the test split has no answer column).
MMBENCH_UPLOAD_DROPPED = ("hint", "category", "source", "image", "comment", "l2-category")
MMBENCH_UPLOAD_PREDICTION_COLUMN = 6


class ScienceQA:
    name = "scienceqa"
    folder = "scienceqa"
    max_new_tokens = 1024

    def questions(self, root, num_beams: int | None = None) -> list[Question]:
        root = require(self.name, root, SQA_QUESTIONS, SQA_IMAGES)
        beams, meta = decoding(num_beams, self.max_new_tokens)
        out = []
        for item in read_json(root / SQA_QUESTIONS):
            text = item["conversations"][0]["value"].replace(IMAGE_TOKEN, "").strip() + "\n" + LETTER_ANSWER
            image = root / SQA_IMAGES / item["image"] if "image" in item else None
            # model_vqa_science's answers "prompt" keeps "<image>\n" (the IMG split of eval_science_qa reads it)
            prompt = ("<image>\n" if image is not None else "") + text
            out.append(Question(item["id"], image, text, self.max_new_tokens, beams,
                                {**meta, "is_multimodal": image is not None,
                                 "answer_fields": {"prompt": prompt}}))
        return out

    def score(self, questions: Sequence[Question], predictions: Mapping[Any, str], root) -> dict:
        """``eval_science_qa.py`` over the test pids of ``pid_splits.json``: a pid without a prediction is FAILED
        with prompt "Unknown", so it drops out of the IMG denominator (reference quirk; counted in ``missing``)."""
        root = require(self.name, root, SQA_PROBLEMS, SQA_SPLITS)
        problems, pids = read_json(root / SQA_PROBLEMS), read_json(root / SQA_SPLITS)["test"]
        by_id = {str(q.question_id): q for q in questions}
        preds = {str(k): v for k, v in predictions.items()}
        correct = total = img_correct = img_total = missing = 0
        unparsed = []  # over the answered questions: a missing one is FAILED by the reference, not by the model
        for pid in pids:
            prob = problems[pid]
            q = by_id.get(pid)
            answered = pid in preds and q is not None
            text = preds[pid] if answered else "FAILED"
            multimodal = answered and bool(q.metadata.get("is_multimodal"))
            missing += not answered
            parsed = scoring.scienceqa_parse(text, len(prob["choices"]))
            if answered:
                unparsed.append(parsed == -1)
            hit = parsed == prob["answer"]
            correct, total = correct + hit, total + 1
            if multimodal:
                img_correct, img_total = img_correct + hit, img_total + 1
        if not img_total:
            raise ValueError("scienceqa: no answered question with an image (IMG-Accuracy undefined)")
        img_acc = 100.0 * img_correct / img_total
        return {"benchmark": self.name, "img_accuracy": img_acc, "accuracy": 100.0 * correct / total,
                "headline": img_acc, "img_correct": img_correct, "img_total": img_total, "missing": missing,
                "unparseable_share": unparseable_share(unparsed)}

    def baseline(self, questions: Sequence[Question], root) -> dict:
        """The better of chance (a uniform random option: the mean of 1/num_choices over the IMG questions) and
        the best single letter given to every question through ``eval_science_qa``: a model that learnt only
        "the answer is usually B" must not count as reading the image."""
        problems = read_json(require(self.name, root, SQA_PROBLEMS) / SQA_PROBLEMS)
        with_image = [problems[str(q.question_id)] for q in questions if q.metadata.get("is_multimodal")]
        if not with_image:
            raise ValueError("scienceqa: no question with an image (IMG-Accuracy undefined)")
        chance = 100.0 * sum(1 / len(p["choices"]) for p in with_image) / len(with_image)
        letters = scoring.SQA_OPTIONS[:max(len(p["choices"]) for p in with_image)]
        return better_baseline({"score": chance, "rule": "chance: a uniform random option"},
                               best_fixed_answer(self.score, questions, root, letters, "the best single letter"))


def _is_none(value: Any) -> bool:
    """``model_vqa_mmbench.is_none`` on pandas' reading of a cell: NaN/None, "nan"/"none", and "" (pandas -> NaN)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return True
    return isinstance(value, str) and value.strip().lower() in ("", "nan", "none")


def read_mmbench_tsv(path) -> list[dict]:
    """TSV rows with ``index`` as int and absent option cells as None."""
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # base64 image cells exceed the 128 KiB default
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    for row in rows:
        row["index"] = int(row["index"])
        for ch in MMBENCH_OPTIONS:
            if ch in row and _is_none(row[ch]):
                row[ch] = None
    return rows


def mmbench_prompt(row: Mapping[str, Any], lang: str) -> tuple[str, list[str]]:
    """(prompt text with suffix, options) as ``model_vqa_mmbench.py --single-pred-prompt --lang <lang>``."""
    options = []
    for ch in MMBENCH_OPTIONS:
        if ch not in row or _is_none(row[ch]):
            break
        options.append(row[ch])
    question = row["question"]
    if not _is_none(row.get("hint")):
        question = row["hint"] + "\n" + question
    for ch, option in zip(MMBENCH_OPTIONS, options, strict=False):
        question = question + "\n" + ch + ". " + option
    return question + "\n" + (LETTER_SUFFIX_CN if lang == "cn" else LETTER_ANSWER), options


def decode_base64_image(data: str) -> Image.Image:
    """A lazily decoded PIL image (PIL keeps the compressed bytes until pixels are needed)."""
    return Image.open(io.BytesIO(base64.b64decode(data)))


class MMBench:
    folder = "mmbench"
    # LLaVA's docs/Evaluation.md put both TSVs under mmbench/; its scripts/v1_5/eval/mmbench_cn.sh reads mmbench_cn/
    max_new_tokens = 1024

    def __init__(self, lang: str = "en"):
        if lang not in MMBENCH_FILES:
            raise ValueError(f"mmbench lang must be one of {sorted(MMBENCH_FILES)}")
        self.lang = lang
        self.name = "mmbench" if lang == "en" else "mmbench_cn"
        self.file = self.marker = MMBENCH_FILES[lang]
        self.folders = ("mmbench",) if lang == "en" else ("mmbench", "mmbench_cn")

    def questions(self, root, num_beams: int | None = None) -> list[Question]:
        root = require(self.name, root, self.file)
        beams, meta = decoding(num_beams, self.max_new_tokens)
        out = []
        for row in read_mmbench_tsv(root / self.file):
            text, options = mmbench_prompt(row, self.lang)
            keep = {k: row.get(k) for k in ("answer", "category", "l2-category", *MMBENCH_OPTIONS)}
            answer_fields = {"round_id": 0, "options": options, "option_char": list(MMBENCH_OPTIONS[:len(options)])}
            out.append(Question(row["index"], decode_base64_image(row["image"]), text, self.max_new_tokens, beams,
                                {**meta, **keep, "answer_fields": answer_fields}))
        return out

    def score(self, questions: Sequence[Question], predictions: Mapping[Any, str], root=None) -> dict:
        """Static CircularEval (``mmbench_circular``) over every pass; the TSV's gold letters travel in metadata."""
        preds = ordered_predictions(self.name, questions, predictions)
        rows = [{"index": int(q.question_id), "prediction": text, "answer": q.metadata["answer"],
                 "category": q.metadata.get("category"), "l2-category": q.metadata.get("l2-category"),
                 **{ch: q.metadata.get(ch) for ch in MMBENCH_OPTIONS}}
                for q, text in zip(questions, preds, strict=True)]
        result = scoring.mmbench_circular(rows)
        overall = 100.0 * result["overall_acc"]
        return {"benchmark": self.name, "circular_accuracy": overall, "headline": overall,
                "single_pass_accuracy": 100.0 * result["single_pass_acc_main_copies"],
                "category_acc": result["category_acc"], "l2_category_acc": result["l2_category_acc"],
                "unparseable_share": unparseable_share(scoring.mmbench_answer_letter(r) is False for r in rows)}

    def baseline(self, questions: Sequence[Question], root=None) -> dict:
        """The better of chance under CircularEval (a uniform random letter on every pass: the mean over questions
        of the product of 1/num_options over its passes, (1/4)^4 = 0.4% for four options) and the best single
        letter through ``mmbench_circular`` (0 when the passes rotate the answer through every letter, which is
        why CircularEval exists)."""
        chance = 100.0 * scoring.mmbench_circular_chance(
            [{"index": int(q.question_id), "options": len(q.metadata["answer_fields"]["options"])} for q in questions])
        return better_baseline({"score": chance, "rule": "chance: a uniform random letter on every pass"},
                               best_fixed_answer(self.score, questions, root, MMBENCH_OPTIONS,
                                                 "the best single letter"))


def mmbench_submission(tsv_path, answers: Mapping[Any, str]):
    """The OpenCompass upload table (a pandas DataFrame) of an MMBench TSV (EN or CN; dev or test) and
    ``{question_id (the TSV index): answer text}``, as ``convert_mmbench_for_submission.py`` builds it; rows without
    an answer keep an empty prediction, as there. Read with pandas like the reference, so cells parse the same."""
    import pandas as pd

    table = pd.read_table(tsv_path)
    upload = table.drop(columns=[c for c in MMBENCH_UPLOAD_DROPPED if c in table.columns])
    upload.insert(min(MMBENCH_UPLOAD_PREDICTION_COLUMN, len(upload.columns)), "prediction", None)
    by_index = {int(k): v for k, v in answers.items()}
    upload["prediction"] = [by_index.get(int(i)) for i in table["index"]]
    return upload


def write_mmbench_submission(tsv_path, answers_jsonl, dst) -> dict:
    """TSV + the runner's answers JSONL -> ``dst`` (.xlsx, openpyxl) for the OpenCompass MMBench server; returns
    ``{rows, answered, error_line}``. Not a DVC output: an .xlsx holds its write time, so it is never byte-stable."""
    from .vqa import read_answers_lines

    with open(answers_jsonl, encoding="utf-8") as f:
        answers, errors = read_answers_lines(f)
    upload = mmbench_submission(tsv_path, answers)
    Path(dst).parent.mkdir(parents=True, exist_ok=True)
    upload.to_excel(dst, index=False, engine="openpyxl")
    return {"rows": len(upload), "answered": int(upload["prediction"].notna().sum()), "error_line": errors}
