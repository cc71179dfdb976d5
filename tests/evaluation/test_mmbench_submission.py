"""The MMBench upload for the OpenCompass server: LLaVA's convert_mmbench_for_submission.py columns, written as .xlsx
and read back."""

import csv
import json

import pandas as pd
import pytest

from components.evaluation.benchmarks import write_mmbench_submission

TEST_COLUMNS = ["index", "question", "hint", "A", "B", "C", "D", "category", "image", "source", "l2-category",
                "comment", "split"]


def _tsv(path, rows, columns):
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, delimiter="\t")
        writer.writeheader()
        writer.writerows(rows)


def _row(index, **extra):
    return {"index": index, "question": f"问题 {index}?", "hint": "" if index % 2 else "a hint", "A": "cat",
            "B": "dog", "C": "bird" if index % 3 else "", "D": "", "category": "c", "image": "aGVsbG8=",
            "source": "s", "l2-category": "l2", "comment": "", "split": "test", **extra}


@pytest.mark.parametrize("split", ["test", "dev"])
def test_submission_has_the_reference_columns_and_one_row_per_tsv_row(tmp_path, split):
    indices = [0, 1, 2, 1_000_000, 1_000_001]
    columns = TEST_COLUMNS if split == "test" else TEST_COLUMNS[:7] + ["answer"] + TEST_COLUMNS[7:]
    rows = [_row(i) if split == "test" else _row(i, answer="A", split="dev") for i in indices]
    _tsv(tmp_path / "mmbench.tsv", rows, columns)
    answers = [{"question_id": i, "prompt": "p", "text": f"B 答案 {i}", "metadata": {}} for i in indices[:-1]]
    (tmp_path / "answers.jsonl").write_text("".join(json.dumps(a, ensure_ascii=False) + "\n" for a in answers)
                                            + "{torn", encoding="utf-8")
    summary = write_mmbench_submission(tmp_path / "mmbench.tsv", tmp_path / "answers.jsonl", tmp_path / "up.xlsx")
    assert summary == {"rows": 5, "answered": 4, "error_line": 1}
    back = pd.read_excel(tmp_path / "up.xlsx", engine="openpyxl")
    expected = ["index", "question", "A", "B", "C", "D", "prediction"] + (["answer"] if split == "dev" else [])
    assert list(back.columns) == expected + ["split"]
    assert back["index"].tolist() == indices
    assert back["prediction"].tolist()[:4] == [f"B 答案 {i}" for i in indices[:4]]
    assert pd.isna(back["prediction"].iloc[4])  # no answer: an empty cell, as the reference leaves it
    assert back["question"].iloc[0] == "问题 0?" and back["A"].tolist() == ["cat"] * 5
