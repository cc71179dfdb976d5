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
    assert code == 2 and "nope.png: no such file" in err
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


def test_bad_inputs_are_one_line_and_exit_2_before_any_model_loads(capsys, images, tmp_path):
    """The audit's cases (#13): each is one clear line, exit 2, no traceback; the model is never opened."""
    from PIL import Image

    (tmp_path / "zero.jpg").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("hello")
    Image.effect_noise((320, 240), 64).convert("RGB").save(tmp_path / "whole.jpg")
    whole = (tmp_path / "whole.jpg").read_bytes()
    (tmp_path / "trunc.jpg").write_bytes(whole[: len(whole) // 2])  # the header is whole, the pixels are not
    cases = [(tmp_path / "zero.jpg", QUESTION, "empty file"), (tmp_path / "text.jpg", QUESTION, "not an image"),
             (tmp_path / "trunc.jpg", QUESTION, "does not decode"), (images[0], "caf\udce9?", "not valid UTF-8")]
    for image, question, message in cases:
        code, out, err = _run(capsys, image, question, "--model", tmp_path / "no-model-here")
        assert code == 2 and message in err and "Traceback" not in err and err.count("\n") == 1, (image, err)
        assert not any(line.startswith("model:") for line in out)  # checked before opening the model
    questions = tmp_path / "qs.jsonl"
    questions.write_text(json.dumps({"question": "Q"}) + "\n")
    (tmp_path / "outdir").mkdir()
    code, _, err = _run(capsys, "--questions", questions, "--out", tmp_path / "outdir")
    assert code == 2 and "is a directory" in err


def test_bad_lines_become_error_rows_and_the_good_ones_are_answered(capsys, logged, images, expected, tmp_path):
    (tmp_path / "text.jpg").write_text("not an image")
    questions = tmp_path / "qs.jsonl"
    good = json.dumps({"id": 1, "image": str(images[0]), "question": QUESTION})
    bad_bytes = json.dumps({"question": "Q?"}).encode()[:-2] + b"\xff\xfe\"}"
    lines = [good.encode(), b"{not json", b'"a bare string"', json.dumps({"image": str(images[0])}).encode(),
             bad_bytes, json.dumps({"image": "text.jpg", "question": "Q"}).encode(),
             json.dumps({"id": 7, "image": None, "question": "Say hi"}).encode()]
    questions.write_bytes(b"\n".join(lines) + b"\n")
    code, out, err = _run(capsys, "--questions", questions, "--image-root", tmp_path, "--model",
                          "models:/llava-uhd@champion", "--tracking-uri", logged["uri"], "--max-new-tokens", 5)
    assert code == 1 and out[-1].startswith("2 answers written to")
    rows = [json.loads(line) for line in (tmp_path / "qs.answers.jsonl").read_text().splitlines()]
    assert len(rows) == 7 and rows[0]["answer"] == expected[0] and "answer" in rows[6]
    errors = {r["line"]: r["error"] for r in rows if "error" in r}
    assert sorted(errors) == [2, 3, 4, 5, 6]
    assert errors[2].startswith("not JSON") and "not an object" in errors[3] and "no 'question'" in errors[4]
    assert errors[5].startswith("not UTF-8") and "not an image" in errors[6]
    assert err.count("uhd infer:") == 5
