"""One prompt path: the ids a question gets at inference are the ids training gave it up to the answer.

Training side: `encode_conversation` of question + answer, expanded with `expand_image_placeholders` (what
`TrainingSet` does). Inference side: `UhdProcessor.prompt_batch`, what the evaluation runner and `UhdModel` send to
`generate`. For every template (plain, vicuna_v1, the LLM's own chat template) with and without an image, on the
real tokenizers in assets/tokenizers (Llama legacy and non-legacy, GPT-2, SmolLM2-135M-Instruct's ChatML), the
inference ids must equal the training ids before the first supervised token.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import pytest
import torch
from PIL import Image

from components.data.conversation import (
    IGNORE_INDEX,
    IMAGE_TOKEN,
    ConversationError,
    encode_conversation,
    expand_image_labels,
    expand_image_placeholders,
)
from components.data.tokenizers import (
    add_image_token,
    load_gpt2_tokenizer,
    load_llama_tokenizer,
    load_smollm2_tokenizer,
)
from components.inference.model import UhdModel
from components.model.modeling import LlavaUhdForConditionalGeneration, separator_token_ids
from components.model.processor import UhdProcessor
from components.model.tiny import tiny_llava_uhd_config
from components.training.dataset import SlicingPlanner

ASSETS = Path(__file__).resolve().parents[2] / "assets" / "tokenizers"
LOADERS = {
    "llama": lambda: load_llama_tokenizer(ASSETS / "llama"),
    "llama-nonlegacy": lambda: load_llama_tokenizer(ASSETS / "llama", legacy=False),
    "gpt2": lambda: load_gpt2_tokenizer(ASSETS / "gpt2"),
    "smollm2": lambda: load_smollm2_tokenizer(ASSETS / "smollm2"),
}
# The templates each LLM is trained with: plain and vicuna_v1 for all, its own chat template where it has one.
CASES = [(kind, template) for kind in LOADERS for template in ("plain", "vicuna_v1")] + [("smollm2", "chat_template")]
QUESTIONS = ["What colour is the square?\nAnswer the question using a single word or phrase.", "Is it red?"]
ANSWER = "Red square."


@cache
def kit(kind: str):
    """(tokenizer with <image>, processor over a weightless tiny config) for one tokenizer kind."""
    tok = LOADERS[kind]()
    add_image_token(tok)
    config = tiny_llava_uhd_config(len(tok), tok.convert_tokens_to_ids(IMAGE_TOKEN), separator_token_ids(tok))
    return tok, UhdProcessor(tok, SlicingPlanner(config))


def training_ids(tok, template: str, question: str, picture, processor, marker_last: bool) -> tuple[list, list]:
    """Expanded (input_ids, labels) of the training sample question -> ANSWER, as TrainingSet builds them."""
    if picture is None:
        value = question
    else:  # 558K-style samples put the marker after the question; the encoder moves it to the front
        value = f"{question}\n{IMAGE_TOKEN}" if marker_last else f"{IMAGE_TOKEN}\n{question}"
    sample = [{"from": "human", "value": value}, {"from": "gpt", "value": ANSWER}]
    end_of_turn = None if template == "vicuna_v1" and tok.eos_token == "</s>" else tok.eos_token
    enc = encode_conversation(sample, tok, template, end_of_turn=end_of_turn, has_image=picture is not None)
    counts = [processor.process_image(picture).num_tokens] if picture is not None else []
    image_id = processor.image_token_id
    return (expand_image_placeholders(enc.input_ids, counts, image_id),
            expand_image_labels(enc.labels, enc.input_ids, counts))


def first_answer_index(labels: list[int]) -> int:
    return next(i for i, label in enumerate(labels) if label != IGNORE_INDEX)


def inference_rows(processor, template: str, questions: list[str], picture) -> list[list[int]]:
    """Each row of the left-padded generation batch, padding removed."""
    batch = processor.prompt_batch(questions, [picture] * len(questions), template)
    return [ids[mask.bool()].tolist() for ids, mask in zip(batch["input_ids"], batch["attention_mask"], strict=True)]


@pytest.mark.parametrize("has_image", [True, False], ids=["image", "text-only"])
@pytest.mark.parametrize(("kind", "template"), CASES)
def test_inference_prompt_is_training_prompt_up_to_the_answer(kind, template, has_image):
    tok, processor = kit(kind)
    picture = Image.new("RGB", (96, 40), (200, 30, 30)) if has_image else None
    if template == "plain" and not has_image:  # plain is image captioning: both paths refuse a text-only sample
        with pytest.raises(ConversationError, match="plain needs"):
            training_ids(tok, template, QUESTIONS[0], None, processor, marker_last=False)
        with pytest.raises(ConversationError, match="plain needs"):
            inference_rows(processor, template, QUESTIONS[:1], None)
        return
    rows = inference_rows(processor, template, QUESTIONS, picture)  # a batch of two lengths: left padding
    for question, row in zip(QUESTIONS, rows, strict=True):
        for marker_last in (False, True):
            ids, labels = training_ids(tok, template, question, picture, processor, marker_last)
            first_answer = first_answer_index(labels)
            assert row == ids[:first_answer]
            assert tok.decode(ids[first_answer:]).strip().startswith(ANSWER[:3])  # the boundary is the answer's
            visual = processor.process_image(picture).num_tokens if has_image else 0
            assert row.count(processor.image_token_id) == visual


@pytest.fixture(scope="module")
def smol_model():
    tok = LOADERS["smollm2"]()
    add_image_token(tok)
    torch.manual_seed(0)
    config = tiny_llava_uhd_config(len(tok), tok.convert_tokens_to_ids(IMAGE_TOKEN), separator_token_ids(tok))
    return LlavaUhdForConditionalGeneration(config).eval(), tok


@pytest.mark.parametrize("template", ["chat_template", "vicuna_v1"])
def test_uhd_model_generates_from_the_training_prefix(smol_model, template):
    """End to end: UhdModel's answer is the greedy continuation of exactly the training prefix."""
    model, tok = smol_model
    picture = Image.new("RGB", (120, 50), (20, 160, 40))
    processor = UhdProcessor(tok, model)
    ids, labels = training_ids(tok, template, QUESTIONS[1], picture, processor, marker_last=True)
    prefix = torch.tensor([ids[: first_answer_index(labels)]])
    processed = processor.process_image(picture)
    with torch.no_grad():
        out = model.generate(input_ids=prefix, attention_mask=torch.ones_like(prefix), pixel_values=processed.pixels,
                             image_sizes=torch.tensor([processed.size]), max_new_tokens=5, do_sample=False,
                             pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    expected = tok.decode(out[0, prefix.shape[1]:], skip_special_tokens=True).strip()
    uhd = UhdModel(model, tok, template=template)
    assert uhd.answer(picture, QUESTIONS[1], max_new_tokens=5) == expected
