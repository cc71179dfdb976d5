"""The questions-file format of `uhd infer --questions` (components/inference/questions.py), without a model."""

import json

import pytest

from components.inference.questions import missing_images, read_questions, write_answers


def test_read_questions_resolves_images_and_skips_blank_lines(tmp_path):
    (tmp_path / "a.png").write_bytes(b"")
    path = tmp_path / "qs.jsonl"
    path.write_text(json.dumps({"image": "a.png", "question": "Q1"}) + "\n\n"
                    + json.dumps({"image": "/abs/b.png", "question": "Q2"}) + "\n"
                    + json.dumps({"image": None, "question": "Q3", "id": 7}) + "\n")
    questions = read_questions(path, tmp_path)
    assert [q.image for q in questions] == [tmp_path / "a.png", tmp_path.joinpath("/abs/b.png"), None]
    assert questions[2].line == {"image": None, "question": "Q3", "id": 7}
    assert missing_images(questions) == [tmp_path.joinpath("/abs/b.png")]


def test_a_line_without_question_names_its_line_number(tmp_path):
    path = tmp_path / "qs.jsonl"
    path.write_text(json.dumps({"question": "ok"}) + "\n" + json.dumps({"image": "x.png"}) + "\n")
    with pytest.raises(ValueError, match=r"qs.jsonl:2: no 'question' field"):
        read_questions(path, tmp_path)


def test_write_answers_one_json_line_per_record(tmp_path):
    out = write_answers([{"question": "Q", "answer": "é"}], tmp_path / "sub" / "answers.jsonl")
    assert out.read_text(encoding="utf-8") == '{"question": "Q", "answer": "é"}\n'
