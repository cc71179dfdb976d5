"""The questions-file format of `uhd infer --questions` (components/inference/questions.py), without a model."""

import json

from PIL import Image

from components.inference.questions import BadLine, Question, read_questions, write_answers


def test_read_questions_resolves_images_and_skips_blank_lines(tmp_path):
    Image.new("RGB", (4, 4)).save(tmp_path / "a.png")
    path = tmp_path / "qs.jsonl"
    path.write_text(json.dumps({"image": "a.png", "question": "Q1"}) + "\n\n"
                    + json.dumps({"image": str(tmp_path / "a.png"), "question": "Q2"}) + "\n"
                    + json.dumps({"image": None, "question": "Q3", "id": 7}) + "\n")
    questions = read_questions(path, tmp_path)
    assert all(isinstance(q, Question) for q in questions)
    assert [q.image for q in questions] == [tmp_path / "a.png", tmp_path / "a.png", None]
    assert questions[2].line == {"image": None, "question": "Q3", "id": 7}


def test_bad_lines_are_kept_with_their_number_and_reason(tmp_path):
    path = tmp_path / "qs.jsonl"
    path.write_bytes(json.dumps({"question": "ok"}).encode() + b"\n" + json.dumps({"image": "x.png"}).encode()
                     + b"\n" + json.dumps({"question": "Q", "image": "/abs/missing.png"}).encode() + b"\n")
    entries = read_questions(path, tmp_path)
    assert isinstance(entries[0], Question)
    assert entries[1] == BadLine(2, '{"image": "x.png"}', "no 'question' field (a non-empty string)")
    assert isinstance(entries[2], BadLine) and entries[2].error == "/abs/missing.png: no such file"
    assert entries[2].record() == {"line": 3, "input": entries[2].text, "error": "/abs/missing.png: no such file"}


def test_write_answers_one_json_line_per_record(tmp_path):
    out = write_answers([{"question": "Q", "answer": "é"}], tmp_path / "sub" / "answers.jsonl")
    assert out.read_text(encoding="utf-8") == '{"question": "Q", "answer": "é"}\n'
