"""`uhd infer` on the tiny model: a directory, the registry alias (explicit and by default), the models/finetune
fallback, batch mode, and a clear exit code 2 when there is no model."""

import json
import shutil

import pytest

from cli.main import main as uhd
from components.inference import UhdModel

QUESTION = "What is in the picture?"


@pytest.fixture(scope="module")
def expected(tiny, images):
    uhd_model = UhdModel(*tiny)
    return [uhd_model.answer(path, QUESTION, max_new_tokens=5) for path in images[:2]]


def _run(capsys, *argv) -> tuple[int, list[str], str]:
    code = uhd(["infer", *map(str, argv)])
    out = capsys.readouterr()
    return code, out.out.splitlines(), out.err


def test_directory_source(capsys, logged, images, expected, tokenizer_dir, tmp_path):
    code, lines, _ = _run(capsys, images[0], QUESTION, "--model", logged["dir"], "--tokenizer-dir", tokenizer_dir,
                          "--max-new-tokens", 5, "--params", tmp_path / "none.yaml", "--tracking-uri", logged["uri"],
                          "--tokenizer", "llama")
    assert code == 0
    assert lines[0] == f"model: {logged['dir']} (--model)"
    assert lines[1].startswith("layout: 640x240: grid ") and "visual tokens" in lines[1]
    assert lines[-1] == f"answer: {expected[0]}"


def test_alias_explicit_and_by_default(capsys, logged, images, expected, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no params.yaml, no models/finetune: the registry is the only source
    common = ["--max-new-tokens", 5, "--tracking-uri", logged["uri"], "--show-layout"]
    code, lines, _ = _run(capsys, images[1], QUESTION, "--model", "models:/llava-uhd@champion", *common)
    assert code == 0 and lines[-1] == f"answer: {expected[1]}"
    assert any("visual tokens" in line and not line.startswith("layout:") for line in lines)  # describe()
    code, lines, _ = _run(capsys, images[1], QUESTION, *common)
    assert code == 0 and lines[-1] == f"answer: {expected[1]}"
    assert lines[0].startswith("model: models:/llava-uhd@champion (registry alias champion")


def test_fallback_to_finetune_dir(capsys, logged, images, expected, repo_root, tmp_path, monkeypatch):
    """No champion in the store: models/finetune (the tiny model: its tokenizer named on the command line)."""
    shutil.copytree(logged["dir"], tmp_path / "models/finetune")
    monkeypatch.chdir(tmp_path)
    code, lines, _ = _run(capsys, images[0], QUESTION, "--max-new-tokens", 5, "--tracking-uri", f"sqlite:///{tmp_path}/empty.db",
                          "--tokenizer", "llama", "--tokenizer-dir", repo_root / "assets/tokenizers/llama")
    assert code == 0 and lines[-1] == f"answer: {expected[0]}"
    assert lines[0].startswith("model: models/finetune (no models:/llava-uhd@champion")


def test_no_model_exits_2_with_what_to_run(capsys, images, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = _run(capsys, images[0], QUESTION, "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db")
    assert code == 2
    assert "no model to use" in err and "dvc repro" in err and "--model" in err
    assert not (tmp_path / "mlflow.db").exists()  # looking for the champion created no empty store
    code, _, err = _run(capsys, images[0], QUESTION, "--model", tmp_path / "missing")
    assert code == 2 and "not a directory" in err


def test_missing_image_and_bad_arguments(capsys, tmp_path):
    code, _, err = _run(capsys, tmp_path / "nope.png", QUESTION)
    assert code == 2 and "no such image" in err
    with pytest.raises(SystemExit) as exit_info:
        uhd(["infer"])
    assert exit_info.value.code == 2


def test_questions_file(capsys, logged, images, expected, tmp_path):
    questions = tmp_path / "qs.jsonl"
    lines = [{"id": 1, "image": str(images[0]), "question": QUESTION},
             {"id": 2, "image": images[1].name, "question": QUESTION},
             {"id": 3, "image": None, "question": "Say hi"}]
    questions.write_text("".join(json.dumps(row) + "\n" for row in lines))
    code, out, _ = _run(capsys, "--questions", questions, "--image-root", images[1].parent, "--model",
                        "models:/llava-uhd@champion", "--tracking-uri", logged["uri"], "--max-new-tokens", 5,
                        "--batch-size", 2)
    assert code == 0 and out[-1].endswith("qs.answers.jsonl")
    rows = [json.loads(line) for line in (tmp_path / "qs.answers.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == [1, 2, 3]
    assert [r["answer"] for r in rows[:2]] == expected
    assert rows[0]["grid"] and rows[0]["num_tokens"] > 0 and rows[2]["grid"] is None
    assert all(r["model"] == "models:/llava-uhd@champion" for r in rows)
