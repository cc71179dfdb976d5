"""Server-scored benchmarks: VQAv2 test-dev and VizWiz test (shared/reference/eval.md §2.1, §2.3).

Their ground truth is not public, so ``score`` never returns a number: it writes the upload file with the
converters' semantics (``write_vqav2_submission`` / ``write_vizwiz_submission``) and reports where it is. Their
question files carry the suffixes already, as in LLaVA's ``eval.zip`` (``<eval>/vqav2``, ``<eval>/vizwiz``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .common import Question, decoding, ordered_predictions, read_jsonl, require
from .vqa import vizwiz_submission, vqav2_submission


class _ServerScored:
    name = folder = questions_file = images = full_split = ""
    max_new_tokens = 128
    headline_available = False  # the stage reports these as "submission written", never as a score

    def questions(self, root, num_beams: int | None = None) -> list[Question]:
        root = require(self.name, root, self.questions_file, self.images)
        beams, meta = decoding(num_beams, self.max_new_tokens)
        return [Question(line["question_id"], root / self.images / line["image"], line["text"], self.max_new_tokens,
                         beams, dict(meta)) for line in read_jsonl(root / self.questions_file)]

    def submission(self, answers: Mapping[Any, str], root) -> list[dict]:
        raise NotImplementedError

    def score(self, questions: Sequence[Question], predictions: Mapping[Any, str], root,
              out_dir: str | Path | None = None) -> dict:
        """Write ``<out_dir>/<name>_submission.json`` for the evaluation server; no local score exists."""
        ordered_predictions(self.name, questions, predictions)  # every question answered, or IncompletePredictions
        answers = {q.question_id: predictions[q.uid] for q in questions}
        rows = self.submission(answers, root)
        path = Path(out_dir or ".") / f"{self.name}_submission.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(rows), encoding="utf-8")
        return {"benchmark": self.name, "submission": str(path), "num_answers": len(answers),
                "num_submitted": len(rows), "headline": None,
                "note": "scored by the EvalAI server (test ground truth is not public)"}


class VQAv2(_ServerScored):
    name = folder = "vqav2"
    questions_file = "llava_vqav2_mscoco_test-dev2015.jsonl"
    images = "test2015"
    full_split = "llava_vqav2_mscoco_test2015.jsonl"  # the converter writes a line per test2015 question

    def submission(self, answers, root) -> list[dict]:
        return vqav2_submission(answers, read_jsonl(require(self.name, root, self.full_split) / self.full_split))


class VizWiz(_ServerScored):
    name = folder = "vizwiz"
    questions_file = "llava_test.jsonl"
    images = "test"

    def submission(self, answers, root) -> list[dict]:
        return vizwiz_submission(answers, read_jsonl(Path(root) / self.questions_file))
