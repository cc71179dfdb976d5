"""Batch questions: a JSONL file of `{image, question}` lines in, the same lines plus answers out.

An `image` is relative to `image_root` (absolute paths survive the join) or null for a text-only question.
Each answer record is the input line plus `answer`, `model` (the source it was loaded from), `grid` and
`num_tokens` (the slice plan the model used), so an answers file says what produced it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .model import UhdModel


@dataclass(frozen=True)
class Question:
    line: dict  # the input line as read, written back with the answer
    image: Path | None  # resolved against image_root; None for text-only


def read_questions(path: str | Path, image_root: str | Path) -> list[Question]:
    """The non-blank lines of a questions file; a line without `question` raises with its line number."""
    path, image_root = Path(path), Path(image_root)
    questions = []
    for number, text in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not text.strip():
            continue
        line = json.loads(text)
        if "question" not in line:
            raise ValueError(f"{path}:{number}: no 'question' field")
        image = line.get("image")
        questions.append(Question(line, image_root / image if image else None))
    return questions


def missing_images(questions: list[Question]) -> list[Path]:
    return [q.image for q in questions if q.image is not None and not q.image.is_file()]


def answer_questions(uhd: UhdModel, questions: list[Question], batch_size: int, max_new_tokens: int) -> list[dict]:
    """Answer every question in batches; one record per question, in order."""
    items = [(str(q.image) if q.image else None, q.line["question"]) for q in questions]
    answers = uhd.answer_batch(items, batch_size=batch_size, max_new_tokens=max_new_tokens)
    records = []
    for question, answer in zip(questions, answers, strict=True):
        layout = uhd.layout(str(question.image)) if question.image else None
        records.append({**question.line, "answer": answer, "model": uhd.source,
                        "grid": list(layout.grid) if layout else None,
                        "num_tokens": layout.num_tokens if layout else 0})
    return records


def write_answers(records: list[dict], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    return path
