"""Eval runner on a tiny random model: batched == unbatched greedy, resume, beams, answers-file format."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from components.data.conversation import IMAGE_TOKEN_INDEX, VICUNA_V1_SYSTEM, ConversationError, encode_prompt
from components.data.synthetic import DatasetWriter, SyntheticSpec
from components.data.synthetic_eval import mme, pope
from components.evaluation.benchmarks import ADAPTERS, Question
from components.evaluation.runner import ordered_answers, predictions, run_benchmark

SIZES = [(64, 48), (40, 90), (120, 30), (50, 50), (96, 64), (33, 77), (70, 20), (45, 60), (80, 80), (28, 100)]


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


def test_prompt_is_vicuna_v1_with_llavas_ids(tiny):
    """The runner's default prompt is LLaVA's conv_vicuna_v1 prompt, tokenized as LLaVA's tokenizer_image_token."""
    _, tok = tiny
    with_image = encode_prompt("Q?", tok, "vicuna_v1", has_image=True)
    assert with_image.rendering == f"{VICUNA_V1_SYSTEM} USER: <image>\nQ? ASSISTANT:"
    first, rest = with_image.rendering.split("<image>")
    assert with_image.input_ids == tok(first).input_ids + [IMAGE_TOKEN_INDEX] + tok(rest).input_ids
    text_only = encode_prompt("Q?", tok, "vicuna_v1", has_image=False)
    assert text_only.rendering == f"{VICUNA_V1_SYSTEM} USER: Q? ASSISTANT:"
    assert text_only.input_ids == tok(text_only.rendering).input_ids
    with pytest.raises(ConversationError, match="plain needs"):  # plain drops the question: an image is required
        encode_prompt("Q?", tok, "plain", has_image=False)


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


def test_questions_about_one_image_share_its_prefix(tiny, tmp_path):
    """Several greedy questions per image (as POPE, MME and MMBench's circular passes ask): the image prefix runs
    once per image, and every answer equals the one generated for that question alone."""
    model, tok = tiny
    root = tmp_path / "imgs"
    root.mkdir()
    paths = []
    for i, (w, h) in enumerate(SIZES[:3]):
        paths.append(root / f"{i}.png")
        Image.new("RGB", (w, h), (60 * i, 120, 200 - 50 * i)).save(paths[-1])
    pil = Image.new("RGB", (96, 64), (10, 200, 40))
    asks = ["Is there a circle?", "What colour is it?", "Is the picture wide?" + " really" * 5]
    qs = [Question(f"{i}-{j}", path, ask, max_new_tokens=6)
          for j, ask in enumerate(asks) for i, path in enumerate(paths)]
    qs += [Question(f"pil-{j}", pil.copy(), ask, max_new_tokens=6) for j, ask in enumerate(asks[:2])]  # equal, not same
    qs.append(Question("single", paths[0], "A question asked once.", max_new_tokens=6, num_beams=2))
    encoded, generated = [], []
    original_visual, original_generate = model.visual_tokens, model.generate

    def counting_visual(pixel_values, *args, **kwargs):
        encoded.append(len(pixel_values))
        return original_visual(pixel_values, *args, **kwargs)

    def recording_generate(*args, **kwargs):
        generated.append("cached" if kwargs.get("past_key_values") is not None else "fresh")
        return original_generate(*args, **kwargs)

    model.visual_tokens, model.generate = counting_visual, recording_generate
    try:
        shared = run_benchmark(model, tok, qs, tmp_path / "shared.jsonl", batch_size=8)
    finally:
        del model.visual_tokens, model.generate
    alone = [run_benchmark(model, tok, [q], tmp_path / f"alone{k}.jsonl", batch_size=1)[0] for k, q in enumerate(qs)]
    assert [r["text"] for r in shared] == [r["text"] for r in alone]
    assert any(r["text"] for r in shared)
    # the image is encoded once per group (3 files, the PIL pair) and once for the beam-search question ...
    assert len(encoded) == 5
    # ... and each grouped question decodes from the cached prefix
    assert sorted(generated) == ["cached"] * 11 + ["fresh"]
