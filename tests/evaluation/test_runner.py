"""Eval runner on a tiny random model: batched == unbatched greedy, resume, beams, answers-file format."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from components.data.conversation import VICUNA_V1_SYSTEM
from components.data.synthetic import DatasetWriter, SyntheticSpec
from components.data.synthetic_eval import mme, pope
from components.data.tokenizers import add_image_token, load_gpt2_tokenizer
from components.evaluation.benchmarks import ADAPTERS, Question
from components.evaluation.runner import build_prompt, ordered_answers, predictions, run_benchmark
from components.model.modeling import LlavaUhdForConditionalGeneration, separator_token_ids
from components.model.tiny import tiny_llava_uhd_config

SIZES = [(64, 48), (40, 90), (120, 30), (50, 50), (96, 64), (33, 77), (70, 20), (45, 60), (80, 80), (28, 100)]


@pytest.fixture(scope="module")
def tiny(repo_root):
    tok = load_gpt2_tokenizer(repo_root / "assets/tokenizers/gpt2")
    add_image_token(tok)
    torch.manual_seed(0)
    config = tiny_llava_uhd_config(len(tok), tok.convert_tokens_to_ids("<image>"), separator_token_ids(tok))
    return LlavaUhdForConditionalGeneration(config).eval(), tok


@pytest.fixture(scope="module")
def questions(tmp_path_factory) -> list[Question]:
    """Embedded-style questions: small JPEG/PNG files, a PIL image (MMBench), a text-only item (ScienceQA)."""
    root = tmp_path_factory.mktemp("imgs")
    out = []
    for i, (w, h) in enumerate(SIZES):
        image = Image.new("RGB", (w, h), (30 * i % 255, 200 - 15 * i, 90))
        path = root / f"{i}.{'png' if i % 3 else 'jpg'}"
        image.save(path)
        suffix = "\nAnswer the question using a single word or phrase."
        out.append(Question(i, image if i == 4 else path, "What colour is the picture?" + " very" * i + suffix,
                            max_new_tokens=6))
    out.append(Question("text-only", None, "Which word is a colour?\nA. table\nB. red", max_new_tokens=6))
    return out


def test_prompt_is_vicuna_v1():
    assert build_prompt("Q?") == f"{VICUNA_V1_SYSTEM} USER: <image>\nQ? ASSISTANT:"
    assert build_prompt("Q?", has_image=False) == f"{VICUNA_V1_SYSTEM} USER: Q? ASSISTANT:"
    with pytest.raises(ValueError):
        build_prompt("Q?", template="plain")


def test_batched_equals_unbatched_and_file_format(tiny, questions, tmp_path):
    model, tok = tiny
    one = run_benchmark(model, tok, questions, tmp_path / "bs1.jsonl", batch_size=1, model_id="tiny")
    eight = run_benchmark(model, tok, questions, tmp_path / "bs8.jsonl", batch_size=8, model_id="tiny")
    assert [r["text"] for r in one] == [r["text"] for r in eight]
    assert any(r["text"] for r in one)  # the random model does emit tokens
    assert (tmp_path / "bs1.jsonl").read_text() == (tmp_path / "bs8.jsonl").read_text()
    row = json.loads((tmp_path / "bs1.jsonl").read_text().splitlines()[0])
    assert set(row) == {"question_id", "prompt", "text", "model_id", "metadata"}
    assert row["prompt"] == questions[0].prompt_text and row["model_id"] == "tiny"
    assert row["metadata"] == {"uid": 0, "num_beams": 1, "max_new_tokens": 6}


def test_resume_gives_the_same_file(tiny, questions, tmp_path):
    model, tok = tiny
    full = tmp_path / "full.jsonl"
    run_benchmark(model, tok, questions, full, batch_size=4)
    part = tmp_path / "part.jsonl"
    run_benchmark(model, tok, questions[3:7], part, batch_size=4)  # an out-of-order partial run
    with open(part, "a") as f:
        f.write('{"question_id": 9, "prompt": "torn')  # a write cut by a crash
    calls = []
    original = model.generate

    def counting(*args, **kwargs):
        calls.append(kwargs["input_ids"].shape[0])
        return original(*args, **kwargs)

    model.generate = counting
    try:
        run_benchmark(model, tok, questions, part, batch_size=4)
    finally:
        del model.generate
    assert sum(calls) == len(questions) - 4  # only the missing ones were generated
    assert part.read_text() == full.read_text()
    assert [r["question_id"] for r in ordered_answers(part, questions)] == [q.question_id for q in questions]
    assert set(predictions(part)) == {q.uid for q in questions}


def test_beam_search_runs_batched(tiny, questions, tmp_path):
    """generate does not expand the pixel_values list per beam; the runner does it, batched or not."""
    model, tok = tiny
    qs = questions[:3] + questions[-1:]
    one = run_benchmark(model, tok, qs, tmp_path / "b1.jsonl", batch_size=1, num_beams=2)
    many = run_benchmark(model, tok, qs, tmp_path / "b4.jsonl", batch_size=4, num_beams=2)
    assert [r["text"] for r in one] == [r["text"] for r in many]
    assert all(r["metadata"]["num_beams"] == 2 for r in one)


def test_duplicate_uids_rejected(tiny, questions, tmp_path):
    model, tok = tiny
    with pytest.raises(ValueError, match="duplicate"):
        run_benchmark(model, tok, [questions[0], questions[0]], tmp_path / "x.jsonl")


def test_end_to_end_on_embedded_pope_and_mme(tiny, tmp_path):
    """Adapter -> runner -> score on the embedded files (small scenes), MME's repeated ids included."""
    model, tok = tiny
    writer = DatasetWriter(tmp_path / "data")
    pope(writer, SyntheticSpec(eval_scenes=2), np.random.default_rng(0))
    mme(writer, SyntheticSpec(eval_scenes=1), np.random.default_rng(0))
    for name in ("pope", "mme"):
        root = tmp_path / "data" / "eval" / name
        qs = [Question(q.question_id, _small(q.image), q.prompt_text, 4, 1, q.metadata, q.key)
              for q in ADAPTERS[name].questions(root)]
        run_benchmark(model, tok, qs, tmp_path / f"{name}.jsonl", batch_size=8)
        result = ADAPTERS[name].score(qs, predictions(tmp_path / f"{name}.jsonl"), root)
        assert "headline" in result


def _small(path: Path) -> Image.Image:
    image = Image.open(path).convert("RGB")
    image.thumbnail((96, 96))
    return image
