"""The LMM end to end on tiny configs: every compressor and strategy, extreme sizes, save/load, generate."""

import pytest
import torch
from PIL import Image
from transformers import AutoModelForImageTextToText

from components.model.modeling import LlavaUhdForConditionalGeneration, separator_token_ids

VARIANTS = [
    {"compressor": "resampler", "strategy": "uhd", "preset": "uhd-arxiv"},
    {"compressor": "spatial_resampler", "strategy": "uhd", "preset": "uhd-eccv"},
    {"compressor": "mlp", "strategy": "uhd", "preset": "uhd-arxiv"},
    {"compressor": "resampler", "strategy": "uhd", "preset": "uhd-arxiv", "spatial_schema": False},
    {"compressor": "mlp", "strategy": "anyres", "preset": "onevision"},
    {"compressor": "mlp", "strategy": "pad336", "preset": "pad336"},
    {"compressor": "resampler", "strategy": "fixed2x2", "preset": "fixed2x2"},
]


def image(w, h, colour=(200, 40, 40)):
    return Image.new("RGB", (w, h), colour)


def supervised(batch, image_id):
    labels = batch["input_ids"].masked_fill(batch["input_ids"] == image_id, -100)
    return labels.masked_fill(batch["attention_mask"] == 0, -100)


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: "-".join(str(x) for x in v.values()))
def test_forward_backward_every_compressor_and_strategy(build, variant):
    model, proc = build(**variant)
    model.train()
    sizes = [(700, 500), (300, 90)] if variant["compressor"] == "mlp" else [(1000, 600), (60, 900)]
    batch = proc(["<image>\nWhat is it?", "Look <image>\nand answer."], [[image(*sizes[0])], [image(*sizes[1])]],
                 padding_side="right")
    out = model(**batch, labels=supervised(batch, model.config.image_token_id))
    assert torch.isfinite(out.loss)
    out.loss.backward()
    trainable = [p for n, p in model.named_parameters() if p.requires_grad and not n.startswith("vision_tower")]
    assert all(p.grad is not None for p in trainable if p is not model.get_input_embeddings().weight)
    assert all(p.grad is None for p in model.vision_tower.parameters())  # frozen by default
    for (w, h), row in zip(sizes, batch["input_ids"], strict=True):
        assert int((row == model.config.image_token_id).sum()) == model.plan(w, h).num_tokens


@pytest.mark.parametrize("size", [(1, 1), (1, 4000), (4000, 1)])
def test_extreme_sizes(build, size):
    model, proc = build(compressor="resampler", strategy="uhd", preset="uhd-eccv")
    batch = proc(["<image>\nHi"], [[image(*size)]])
    logits = model(**batch).logits
    assert torch.isfinite(logits).all()


def test_mixed_slice_counts_in_one_batch_equal_single_runs(build):
    model, proc = build(compressor="resampler", strategy="uhd", preset="uhd-arxiv")
    images = [image(336, 336), image(1344, 336, (10, 200, 10)), image(2000, 1500, (10, 10, 200))]
    slices = {model.plan(*im.size).n_slices for im in images}
    assert len(slices) == 3  # 0, 4 and 6 slices side by side
    texts = ["<image>\nOne", "Two <image>\nwords here", "<image>\nThree"]
    batch = proc(texts, [[im] for im in images], padding_side="left")
    together = model(**batch).logits[:, -1]
    for i, (text, im) in enumerate(zip(texts, images, strict=True)):
        alone = model(**proc([text], [[im]])).logits[0, -1]
        assert torch.allclose(together[i], alone, atol=1e-4)


def test_count_mismatch_raises_with_both_numbers(build):
    model, proc = build(compressor="resampler", strategy="uhd", preset="uhd-arxiv")
    batch = proc(["<image>\nHi"], [[image(1000, 600)]])
    image_id = model.config.image_token_id
    short = batch["input_ids"][:, 1:]  # one placeholder fewer than the layout needs
    with pytest.raises(ValueError, match=r"slots \[453\] do not match the visual tokens the model produces \[454\]"):
        model(input_ids=short, attention_mask=batch["attention_mask"][:, 1:], pixel_values=batch["pixel_values"],
              image_sizes=batch["image_sizes"])
    assert int((short == image_id).sum()) == 453
    with pytest.raises(ValueError, match="does not match the layout"):
        model(**{**batch, "image_sizes": torch.tensor([[600, 1000]])})


def test_spatial_schema_uses_the_tokenizers_separators(build, tokenizer):
    model, _ = build(compressor="resampler", strategy="uhd", preset="uhd-arxiv")
    assert (model.config.slice_separator_id, model.config.row_separator_id) == separator_token_ids(tokenizer)
    assert tokenizer.decode([model.config.slice_separator_id]) == ","
    assert tokenizer.decode([model.config.row_separator_id]) == "\n"
    lay = model.plan(1008, 672)
    pixels = [torch.zeros(3, h, w) for w, h in lay.images]
    tokens = model.visual_tokens(pixels, [(1008, 672)])[0]
    embed = model.get_input_embeddings().weight
    per = 64
    assert torch.equal(tokens[per], embed[model.config.slice_separator_id])  # after slice 1 of row 1
    assert torch.equal(tokens[3 * per + 2], embed[model.config.row_separator_id])  # after slice 3 of row 1


def test_save_load_round_trip_and_auto_class(build, tmp_path):
    model, proc = build(compressor="spatial_resampler", strategy="uhd", preset="uhd-eccv")
    batch = proc(["<image>\nHi"], [[image(900, 700)]])
    before = model(**batch).logits
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists() and not list(tmp_path.glob("*.bin"))
    reloaded = AutoModelForImageTextToText.from_pretrained(tmp_path).eval()
    assert isinstance(reloaded, LlavaUhdForConditionalGeneration)
    assert torch.equal(reloaded(**batch).logits, before)


def test_generate_with_and_without_images(build, tokenizer):
    model, proc = build(compressor="resampler", strategy="uhd", preset="uhd-arxiv")
    batch = proc(["<image>\nWhat?", "<image>\nA longer question here?"], [[image(800, 600)], [image(300, 1200)]])
    greedy = model.generate(**batch, max_new_tokens=5, do_sample=False, pad_token_id=tokenizer.eos_token_id)
    assert greedy.shape == (2, batch["input_ids"].shape[1] + 5)
    single = model.generate(**proc(["<image>\nWhat?"], [[image(800, 600)]]), max_new_tokens=5, do_sample=False,
                            pad_token_id=tokenizer.eos_token_id)
    assert torch.equal(single[0, -5:], greedy[0, -5:])  # left padding does not change the answer
    text_only = proc(["Just text, no image."])
    out = model.generate(**text_only, max_new_tokens=3, do_sample=False, pad_token_id=tokenizer.eos_token_id)
    assert out.shape[1] == text_only["input_ids"].shape[1] + 3


def test_onevision_multi_image_and_video_token_counts(build):
    """OneVision: 730 tokens per image of a multi-image sample; 196 per video frame + 1 newline per video."""
    model, proc = build(compressor="mlp", strategy="anyres", preset="onevision")
    frames = [image(640, 360, (i * 30, 90, 160)) for i in range(3)]
    batch = proc(["<image> and <image>\nCompare.", "<video>\nWhat happens?"],
                 [[image(1920, 1080), image(500, 3000)], []], videos=[[], [frames]])
    assert batch["visual_kinds"] == ["multi", "multi", "video:3"]
    slots = (batch["input_ids"] == model.config.image_token_id).sum(dim=1).tolist()
    assert slots == [2 * 730, 3 * 196 + 1]
    assert torch.isfinite(model(**batch).logits).all()
    video = model.visual_tokens(batch["pixel_values"][2:], batch["image_sizes"][2:], ["video:3"])[0]
    assert torch.equal(video[-1], model.image_newline)
