"""`--format llava-onevision-hf`: a tiny random transformers LlavaOnevisionForConditionalGeneration, saved and
converted, gives the same logits (fp32, max |Δ| <= 1e-4) and the same greedy tokens as transformers for single
images (the anyres_max_9 downsampling included), multi-image and video; the project's pixels match transformers'
slow image processor within the resize-kernel tolerance below. The lmms-lab layout is in test_convert_onevision_repo.py.

Both models get the same pixel tensors (transformers' processor output; the project stacks each image's crops
before its base image, transformers after) and the same ids, so a difference can only come from the model.
Real geometry (SigLIP 384 px, patch 14: 729 tokens per crop, up to 7.3k visual tokens), tiny widths.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    AddedToken,
    LlavaOnevisionConfig,
    LlavaOnevisionForConditionalGeneration,
    PreTrainedTokenizerFast,
    Qwen2Config,
    SiglipVisionConfig,
)
from transformers.image_utils import PILImageResampling, SizeDict
from transformers.models.llava_onevision.image_processing_pil_llava_onevision import LlavaOnevisionImageProcessorPil

from components.model.convert import ConversionError, converted
from components.model.processor import UhdProcessor
from components.slicing.anyres import plan_anyres

LOGIT_TOL = 1e-4
# Pixels: the project resizes with torch's antialiased uint8 bicubic (components/slicing/pixels.py), transformers'
# slow processor with PIL's bicubic. Both run two separable passes and round the intermediate to uint8; torch always
# runs the horizontal pass first, Pillow (13.0 here) runs the vertical one first for some shapes (672x1088 and
# 500x2000 -> 384x384 measured; not 800x900, 2000x500 or upscales), and then the intermediate rounding differs.
# Measured (GREY_LEVEL = 1/255/0.5 = 0.00784 under SigLIP's 0.5/0.5): 672x1088's squashed base image differs by up
# to 4 levels (0.0314) in 20% of values, mean 0.0016; the same torch kernel run vertical-first reproduces PIL to
# <= 1 level (0.1% of values). Same pass order (crops, multi-image squares, video frames): <= 1 level, rarely 2
# (< 2e-6 of values); unresized values (letterbox, 1920x1080's crops) are exact. Pinned: 4 levels, 0.25 level mean.
GREY_LEVEL = 1 / 255 / 0.5
PIXEL_TOL = 4 * GREY_LEVEL + 1e-6
PIXEL_MEAN_TOL = 0.25 * GREY_LEVEL
SINGLE_SIZES = [(300, 200), (672, 1088), (2000, 500), (1920, 1080), (1080, 1920)]  # grids 1x1, 2x3, 6x2, 5x3, 3x5
DOWNSAMPLED = {(1920, 1080), (1080, 1920)}  # both through the anyres_max_9 bilinear downsampling
NEW_TOKENS = 6
CORPUS = ("a picture of a cat on a red mat next to a blue door; what is shown in this image? describe it. "
          "the quick brown fox jumps over the lazy dog. you are a helpful assistant. system user assistant\n") * 4


# ------------------------------------------------------------------------------------------------ tiny checkpoint


def base_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level BPE with Qwen2's special tokens (no <image>): the lmms-lab directory's tokenizer."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator([CORPUS], trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")


def hf_tokenizer() -> PreTrainedTokenizerFast:
    """The llava-hf directory's tokenizer: the base + <image> and <video>, as transformers' conversion script adds."""
    tok = base_tokenizer()
    tok.add_tokens([AddedToken(t, special=True, normalized=False) for t in ("<image>", "<video>")], special_tokens=True)
    return tok


def tiny_hf_model(tokenizer, tie: bool = True) -> LlavaOnevisionForConditionalGeneration:
    """SigLIP 384/14 at width 144 (2 heads of so400m's head dim 72, so the lmms-lab test can derive its config),
    a 2-layer Qwen2 at width 32 with the vocabulary padded to a multiple of 64 (as Qwen pads, and HF's script)."""
    vocab = -(-len(tokenizer) // 64) * 64
    vision = SiglipVisionConfig(hidden_size=144, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                                image_size=384, patch_size=14, vision_use_head=False)
    text = Qwen2Config(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=16384,
                       tie_word_embeddings=tie, initializer_range=0.2)  # wide init: logits that depend on the image
    config = LlavaOnevisionConfig(vision_config=vision.to_dict(), text_config=text.to_dict(), tie_word_embeddings=tie,
                                  image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
                                  video_token_id=tokenizer.convert_tokens_to_ids("<video>"))
    torch.manual_seed(0)
    return LlavaOnevisionForConditionalGeneration(config).eval()


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("llava-onevision-hf")
    tok = hf_tokenizer()
    tiny_hf_model(tok).save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def pair(hf_dir):
    """(transformers model, project model, project processor) of the same checkpoint."""
    hf = LlavaOnevisionForConditionalGeneration.from_pretrained(hf_dir).eval()
    conv = converted(hf_dir, "llava-onevision-hf")
    ours = conv.model()
    return hf, ours, UhdProcessor(conv.tokenizer, ours)


def image_processor() -> LlavaOnevisionImageProcessorPil:
    # SigLIP's normalisation, as the checkpoints' preprocessor_config.json (the class defaults are CLIP's).
    return LlavaOnevisionImageProcessorPil(image_mean=[0.5] * 3, image_std=[0.5] * 3)


def photo(width: int, height: int, seed: int = 0) -> Image.Image:
    """Photo-like content: smooth gradients, sharp-edged shapes and fine noise (resize kernels differ on detail)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([128 + 100 * np.sin(x / (17 + 5 * c) + y / (23 + 3 * c) + c) for c in range(3)], axis=-1)
    for _ in range(6):
        x0, y0 = rng.integers(0, width), rng.integers(0, height)
        base[y0:y0 + height // 4, x0:x0 + width // 5] = rng.integers(0, 256, 3)
    base += rng.normal(0, 12, base.shape)
    return Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))


def hf_video_pixels(frames: list[Image.Image], ip) -> torch.Tensor:
    """(1, F, 3, 384, 384) as LlavaOnevisionVideoProcessor makes them (squash to 384, rescale, normalise), built
    from the slow image processor's steps: the video processor needs torchvision, which does not load here."""
    out = []
    for frame in frames:
        array = ip.resize(ip.process_image(frame), SizeDict(height=384, width=384), resample=PILImageResampling.BICUBIC)
        out.append(ip.normalize(ip.rescale(array, 1 / 255), [0.5] * 3, [0.5] * 3))
    return torch.from_numpy(np.stack(out))[None].float()


# ------------------------------------------------------------------------------------------------ parity helpers


def prompt(processor: UhdProcessor, text: str, items) -> torch.Tensor:
    """The project's ids for a chat-template prompt (the converted tokenizer's qwen_1_5 template) with markers."""
    rendered = processor.tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                                       add_generation_prompt=True)
    return torch.tensor([processor.expand(rendered, items)])


def assert_parity(hf, ours, hf_ids, ours_ids, hf_inputs: dict, our_inputs: dict) -> float:
    """Same logits (max |Δ| <= LOGIT_TOL, returned) and the same greedy tokens; the image must matter."""
    with torch.no_grad():
        ref = hf(input_ids=hf_ids, **hf_inputs).logits
        got = ours(input_ids=ours_ids, **our_inputs).logits
        delta = (ref - got).abs().max().item()
        assert delta <= LOGIT_TOL, f"max |Δlogit| {delta:.3g}"
        blank = ours(input_ids=ours_ids, **{**our_inputs, "pixel_values": [p * 0 for p in our_inputs["pixel_values"]]})
        assert (blank.logits - got).abs().max() > 1e-2, "the visual tokens do not reach the logits: a vacuous check"
        mask = torch.ones_like(hf_ids)
        common = {"max_new_tokens": NEW_TOKENS, "do_sample": False, "pad_token_id": 0, "eos_token_id": None}
        ref_gen = hf.generate(input_ids=hf_ids, attention_mask=mask, **hf_inputs, **common)[0, hf_ids.shape[1]:]
        got_gen = ours.generate(input_ids=ours_ids, attention_mask=mask, **our_inputs, **common)[0, ours_ids.shape[1]:]
    assert got_gen.tolist() == ref_gen.tolist()
    return delta


def single_inputs(image: Image.Image, ip):
    """transformers' pixels for one image, and the same tensors in the project's order (crops, then base)."""
    batch = ip.preprocess([image], return_tensors="pt")
    crops = batch["pixel_values"][0]
    hf = {"pixel_values": batch["pixel_values"], "image_sizes": batch["image_sizes"]}
    ours = {"pixel_values": [*crops[1:], crops[0]], "image_sizes": torch.tensor([image.size])}
    return hf, ours


# ------------------------------------------------------------------------------------------------ tests


def test_config_and_source(hf_dir):
    conv = converted(hf_dir, "llava-onevision-hf")
    c = conv.config
    assert (c.strategy, c.preset, c.projector, c.vision_feature_layer) == ("anyres", "onevision", "mlp", -1)
    assert c.image_token_id == conv.tokenizer.convert_tokens_to_ids("<image>")
    assert c.conversation == "chat_template" and c.text_config.model_type == "qwen2"
    assert c.vision_config.model_type == "siglip_vision_model" and c.vision_config.num_hidden_layers == 2
    assert conv.source["format"] == "llava-onevision-hf" and conv.source["dropped_keys"] == []
    rendered = conv.tokenizer.apply_chat_template([{"role": "user", "content": "<image>\nHi"}], tokenize=False,
                                                  add_generation_prompt=True)
    # LLaVA-NeXT conv_qwen_1_5, what OneVision was trained with
    assert rendered == ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n<image>\nHi"
                        "<|im_end|>\n<|im_start|>assistant\n")


def test_inference_prompt_is_the_chat_template(pair):
    """The project's own generation prompt (encode_prompt, template chat_template) is the ids the parity tests feed."""
    _, _, processor = pair
    item = processor.process_image(photo(300, 200))
    ids = prompt(processor, "<image>\nWhat is shown in this image?", [item])
    assert processor.prompt_ids("What is shown in this image?", [item], "chat_template") == ids[0].tolist()


@pytest.mark.parametrize("size", SINGLE_SIZES, ids=[f"{w}x{h}" for w, h in SINGLE_SIZES])
def test_single_image_parity(pair, size):
    hf, ours, processor = pair
    image = photo(*size)
    hf_in, our_in = single_inputs(image, image_processor())
    ids = prompt(processor, "<image>\nWhat is shown in this image?", [processor.process_image(image)])
    assert plan_anyres(*size, preset="onevision").downsampled == (size in DOWNSAMPLED)
    print(f"llava-onevision-hf {size}: max |dlogit| {assert_parity(hf, ours, ids, ids, hf_in, our_in):.2e}")


def test_multi_image_parity(pair):
    hf, ours, processor = pair
    images = [photo(500, 300, seed=1), photo(200, 400, seed=2)]
    batch = image_processor().preprocess([images], return_tensors="pt")  # one sample of two images: no AnyRes
    hf_in = {"pixel_values": batch["pixel_values"], "image_sizes": batch["image_sizes"],
             "batch_num_images": batch["batch_num_images"]}
    our_in = {"pixel_values": [p[0] for p in batch["pixel_values"]], "visual_kinds": ["multi", "multi"],
              "image_sizes": torch.tensor([im.size for im in images])}
    ids = prompt(processor, "<image>\n<image>\nWhat differs?", [processor.process_multi(im) for im in images])
    assert (ids == processor.image_token_id).sum() == 2 * 730
    print(f"llava-onevision-hf multi-image: max |dlogit| {assert_parity(hf, ours, ids, ids, hf_in, our_in):.2e}")


def test_video_parity(pair):
    hf, ours, processor = pair
    frames = [photo(320, 240, seed=10 + i) for i in range(3)]
    pixels = hf_video_pixels(frames, image_processor())
    ids = prompt(processor, "<video>\nWhat happens?", [processor.process_video(frames)])
    video_id = hf.config.video_token_id
    hf_ids = ids.masked_fill(ids == processor.image_token_id, video_id)  # transformers' video slots have their own id
    assert (hf_ids == video_id).sum() == 196 * 3 + 1
    our_in = {"pixel_values": list(pixels[0]), "image_sizes": torch.tensor([[384, 384]]), "visual_kinds": ["video:3"]}
    delta = assert_parity(hf, ours, hf_ids, ids, {"pixel_values_videos": pixels}, our_in)
    print(f"llava-onevision-hf video (3 frames): max |dlogit| {delta:.2e}")


# ------------------------------------------------------------------------------------------------ pixels


def max_mean(a, b) -> tuple[float, float]:
    d = (torch.as_tensor(np.asarray(a)) - torch.as_tensor(np.asarray(b))).abs()
    return d.max().item(), d.mean().item()


@pytest.mark.parametrize("size", [(672, 1088), (1920, 1080)], ids=["672x1088", "1920x1080"])
def test_anyres_pixels_match_transformers(pair, size):
    _, _, processor = pair
    image = photo(*size, seed=3)
    ours = processor.process_image(image).pixels
    theirs = image_processor().preprocess([image], return_tensors="pt")["pixel_values"][0]
    assert len(ours) == len(theirs) == plan_anyres(*size).num_crops
    worst, mean = max_mean(torch.stack([*ours[:-1]]), theirs[1:])
    base_worst, base_mean = max_mean(ours[-1], theirs[0])
    assert worst <= PIXEL_TOL and base_worst <= PIXEL_TOL, (worst, base_worst)
    assert mean <= PIXEL_MEAN_TOL and base_mean <= PIXEL_MEAN_TOL, (mean, base_mean)


def test_multi_and_video_pixels_match_transformers(pair):
    _, _, processor = pair
    ip = image_processor()
    image = photo(500, 300, seed=4)
    theirs = ip.preprocess([[image, image]], return_tensors="pt")["pixel_values"][0, 0]
    worst, mean = max_mean(processor.process_multi(image).pixels[0], theirs)
    assert worst <= PIXEL_TOL and mean <= PIXEL_MEAN_TOL, (worst, mean)
    frames = [photo(320, 240, seed=5), photo(640, 360, seed=6)]
    worst, mean = max_mean(torch.stack(processor.process_video(frames).pixels), hf_video_pixels(frames, ip)[0])
    assert worst <= PIXEL_TOL and mean <= PIXEL_MEAN_TOL, (worst, mean)


def test_siglip_normalisation(pair):
    _, _, processor = pair
    white = Image.new("RGB", (384, 384), (255, 255, 255))
    black = Image.new("RGB", (384, 384), (0, 0, 0))
    assert processor.process_image(white).pixels[-1].min().item() == pytest.approx(1.0)
    assert processor.process_image(black).pixels[-1].max().item() == pytest.approx(-1.0)


# ------------------------------------------------------------------------------------------------ bad checkpoints


def _rewrite_weights(src, dst, edit):
    import shutil

    from safetensors.torch import load_file, save_file

    shutil.copytree(src, dst)
    state = load_file(str(dst / "model.safetensors"))
    edit(state)
    save_file(state, str(dst / "model.safetensors"))
    return dst


def test_unknown_key_is_named(hf_dir, tmp_path):
    bad = _rewrite_weights(hf_dir, tmp_path / "bad", lambda s: s.update({"vision_resampler.weight": torch.zeros(2)}))
    with pytest.raises(ConversionError, match=r"unknown keys \['vision_resampler.weight'\]"):
        converted(bad, "llava-onevision-hf")


def test_missing_key_is_named(hf_dir, tmp_path):
    bad = _rewrite_weights(hf_dir, tmp_path / "bad", lambda s: s.pop("image_newline"))
    with pytest.raises(ConversionError, match=r"missing keys \['image_newline'\]"):
        converted(bad, "llava-onevision-hf").model()


def test_in_memory_key_naming_converts_too(hf_dir, tmp_path):
    """transformers 5's module names (`model.language_model.*`, `lm_head`) as well as the saved ones."""
    hf = LlavaOnevisionForConditionalGeneration.from_pretrained(hf_dir)
    renamed = _rewrite_weights(hf_dir, tmp_path / "mem", lambda s: (s.clear(), s.update(
        {k: v.clone() for k, v in hf.state_dict().items() if k != "lm_head.weight"})))
    a, b = converted(hf_dir, "llava-onevision-hf"), converted(renamed, "llava-onevision-hf")
    assert a.state_dict.keys() == b.state_dict.keys()
    assert all(torch.equal(a.state_dict[k], b.state_dict[k]) for k in a.state_dict)


def test_untied_lm_head_parity(tmp_path):
    """An untied checkpoint (the 7B/72B LLMs) keeps its own lm_head."""
    tok = hf_tokenizer()
    tiny_hf_model(tok, tie=False).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    hf = LlavaOnevisionForConditionalGeneration.from_pretrained(tmp_path).eval()
    conv = converted(tmp_path, "llava-onevision-hf")
    ours = conv.model()
    assert not conv.config.tie_word_embeddings and "language_model.lm_head.weight" in conv.state_dict
    processor = UhdProcessor(conv.tokenizer, ours)
    image = photo(300, 200)
    hf_in, our_in = single_inputs(image, image_processor())
    ids = prompt(processor, "<image>\nWhat is shown in this image?", [processor.process_image(image)])
    assert_parity(hf, ours, ids, ids, hf_in, our_in)


def test_unused_tower_parts_are_dropped_and_named(tmp_path):
    """A tower with a pooling head and feature layer -2: the head and the last layer never reach the features, so
    the converted tower is cut after the feature layer (as LLaVA-NeXT cuts SigLIP) and those keys are listed."""
    tok = hf_tokenizer()
    model = tiny_hf_model(tok)
    config = model.config
    config.vision_config.vision_use_head, config.vision_feature_layer = True, -2
    torch.manual_seed(1)
    LlavaOnevisionForConditionalGeneration(config).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    hf = LlavaOnevisionForConditionalGeneration.from_pretrained(tmp_path).eval()
    conv = converted(tmp_path, "llava-onevision-hf")
    dropped = conv.source["dropped_keys"]
    assert conv.config.vision_config.num_hidden_layers == 1 and conv.config.vision_feature_layer == -1
    assert any(".head." in k for k in dropped) and any(".encoder.layers.1." in k for k in dropped)
    ours = conv.model()
    processor = UhdProcessor(conv.tokenizer, ours)
    image = photo(300, 200)
    hf_in, our_in = single_inputs(image, image_processor())
    ids = prompt(processor, "<image>\nWhat is shown in this image?", [processor.process_image(image)])
    assert_parity(hf, ours, ids, ids, hf_in, our_in)
