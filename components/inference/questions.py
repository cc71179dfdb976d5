"""Batch questions: a JSONL file of `{image, question}` lines in, the same lines plus answers out.

An `image` is relative to `image_root` (absolute paths survive the join) or null for a text-only question.
Each answer record is the input line plus `answer`, `model` (the source it was loaded from), `grid` and
`num_tokens` (the slice plan the model used), so an answers file says what produced it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from components.slicing.image_files import UnusableImage, check_image_file

from .model import UhdModel


@dataclass(frozen=True)
class Question:
    line: dict  # the input line as read, written back with the answer
    image: Path | None  # resolved against image_root; None for text-only


@dataclass(frozen=True)
class BadLine:
    """A line that cannot be asked: it becomes an error row (its number, what was read, why); nothing is lost."""

    number: int
    text: str
    error: str

    def record(self) -> dict:
        return {"line": self.number, "input": self.text, "error": self.error}


def read_questions(path: str | Path, image_root: str | Path) -> list[Question | BadLine]:
    """One entry per non-blank line of a questions file, in order: a Question, or a BadLine for bad bytes, bad
    JSON, a line that is not an object, a missing or non-string `question`, or an image that cannot be used."""
    path, image_root = Path(path), Path(image_root)
    entries: list[Question | BadLine] = []
    for number, raw in enumerate(path.read_bytes().splitlines(), start=1):
        if not raw.strip():
            continue
        entries.append(_parse_line(number, raw, image_root))
    return entries


def _parse_line(number: int, raw: bytes, image_root: Path) -> Question | BadLine:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        return BadLine(number, raw.decode("utf-8", "replace"), f"not UTF-8 ({err.reason} at byte {err.start})")
    try:
        line = json.loads(text)
    except json.JSONDecodeError as err:
        return BadLine(number, text, f"not JSON ({err.msg} at column {err.colno})")
    if not isinstance(line, dict):
        return BadLine(number, text, f"a JSON {type(line).__name__}, not an object with a 'question' field")
    if not isinstance(line.get("question"), str) or not line["question"].strip():
        return BadLine(number, text, "no 'question' field (a non-empty string)")
    image = line.get("image")
    if image is not None and not isinstance(image, str):
        return BadLine(number, text, "'image' must be a path (string) or null")
    if image:
        try:
            check_image_file(image_root / image)
        except UnusableImage as err:
            return BadLine(number, text, str(err))
    return Question(line, image_root / image if image else None)


def answer_questions(uhd: UhdModel, entries: list[Question | BadLine], batch_size: int,
                     max_new_tokens: int) -> list[dict]:
    """Answer every good question in batches; one record per entry, in order (bad lines as error rows)."""
    questions = [e for e in entries if isinstance(e, Question)]
    items = [(str(q.image) if q.image else None, q.line["question"]) for q in questions]
    answers = iter(uhd.answer_batch(items, batch_size=batch_size, max_new_tokens=max_new_tokens) if items else [])
    records = []
    for entry in entries:
        if isinstance(entry, BadLine):
            records.append(entry.record())
            continue
        layout = uhd.layout(str(entry.image)) if entry.image else None
        records.append({**entry.line, "answer": next(answers), "model": uhd.source,
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
