"""`logits_at_labels=True` (training) gives the full-logits loss and gradients, projecting only supervised rows."""

import pytest
import torch
from PIL import Image

from components.data.conversation import IGNORE_INDEX

SIZES = [(1000, 600), (60, 900), (336, 336)]
TEXTS = ["<image>\nWhat is written on the sign? It says open.", "Look <image>\nand count them: three, four, five.",
         "<image>\nNothing of this row is supervised."]


def gradients(model) -> dict[str, torch.Tensor]:
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def loss_and_gradients(model, batch, labels, at_labels: bool):
    model.zero_grad(set_to_none=True)
    out = model(**batch, labels=labels, logits_at_labels=at_labels)
    out.loss.backward()
    return out, gradients(model)


@pytest.fixture(params=[False, True], ids=["untied", "tied"])  # SmolLM2 ties its embeddings and output layer
def model_and_batch(build, request):
    model, proc = build(compressor="resampler", strategy="uhd", preset="uhd-arxiv", tie=request.param)
    model.train()
    images = [[Image.new("RGB", size, (40 * i, 200, 90))] for i, size in enumerate(SIZES)]
    batch = proc(TEXTS, images, padding_side="right")  # training's collate pads on the right
    labels = torch.full_like(batch["input_ids"], IGNORE_INDEX)
    lengths = batch["attention_mask"].sum(dim=1).tolist()
    labels[0, lengths[0] - 4:lengths[0]] = batch["input_ids"][0, lengths[0] - 4:lengths[0]]  # the answer at the end
    first, second = slice(lengths[1] - 12, lengths[1] - 9), slice(lengths[1] - 3, lengths[1])  # two apart
    labels[1, first], labels[1, second] = batch["input_ids"][1, first], batch["input_ids"][1, second]
    return model, batch, labels  # row 2: nothing supervised


def test_loss_and_gradients_equal_the_full_logits_ones(model_and_batch):
    model, batch, labels = model_and_batch
    full, full_grads = loss_and_gradients(model, batch, labels, at_labels=False)
    at_labels, at_grads = loss_and_gradients(model, batch, labels, at_labels=True)
    assert torch.allclose(at_labels.loss, full.loss, rtol=1e-5, atol=1e-6)
    assert full_grads.keys() == at_grads.keys()
    assert any(name.startswith("compressor") for name in at_grads)  # the gradient reaches the compressor
    for name, grad in full_grads.items():
        assert torch.allclose(at_grads[name], grad, rtol=1e-4, atol=1e-6), name


def test_logits_are_the_full_rows_at_supervised_positions(model_and_batch):
    model, batch, labels = model_and_batch
    with torch.no_grad():
        full = model(**batch, labels=labels).logits
        at_labels = model(**batch, labels=labels, logits_at_labels=True).logits
    predicts_a_label = labels[:, 1:] != IGNORE_INDEX  # logits at i predict the token at i + 1
    assert at_labels.shape == (int((labels != IGNORE_INDEX).sum()), full.shape[-1])
    assert torch.allclose(at_labels, full[:, :-1][predicts_a_label], atol=1e-5)


def test_a_batch_without_supervision_has_zero_loss_and_zero_gradients(model_and_batch):
    model, batch, labels = model_and_batch
    nothing = torch.full_like(labels, IGNORE_INDEX)
    out, grads = loss_and_gradients(model, batch, nothing, at_labels=True)
    assert out.loss.item() == 0.0 and out.logits.shape[0] == 0
    assert grads and all(not grad.any() for grad in grads.values())
