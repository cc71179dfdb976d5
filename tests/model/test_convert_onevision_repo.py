"""`--format llava-onevision` (lmms-lab, LLaVA-NeXT's layout), produced here from the tiny transformers model of
test_convert_onevision.py by the inverse key mapping plus a LLaVA-NeXT config.json.

The converted model uses LLaVA-NeXT's unpad arithmetic (preset onevision-repo); transformers' model rounds. Parity
with transformers is shown on images where the two agree; on 820x1107, where they differ (reference/onevision.md
§3.1), the converted model is checked against LLaVA-NeXT's own arithmetic, not against transformers.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import save_file
from transformers import LlavaOnevisionForConditionalGeneration, SiglipVisionConfig

from components.model.convert import ConversionError, converted
from components.model.processor import UhdProcessor
from components.slicing.anyres import plan_anyres

from .test_convert_onevision import (
    assert_parity,
    base_tokenizer,
    hf_tokenizer,
    hf_video_pixels,
    image_processor,
    photo,
    prompt,
    single_inputs,
    tiny_hf_model,
)

DIVERGENT = (820, 1107)  # HF int(round(x, 7)) keeps 81x61 tokens, LLaVA-NeXT's int(x) 81x59: 5751 vs 5589 tokens


def to_llava_next(hf: LlavaOnevisionForConditionalGeneration) -> dict[str, torch.Tensor]:
    """transformers' names -> LLaVA-NeXT's (what lmms-lab checkpoints hold); a tied lm_head is not saved (0.5B)."""
    rules = (("model.vision_tower.", "model.vision_tower.vision_tower.vision_model."),
             ("model.multi_modal_projector.linear_1.", "model.mm_projector.0."),
             ("model.multi_modal_projector.linear_2.", "model.mm_projector.2."),
             ("model.language_model.", "model."), ("model.image_newline", "model.image_newline"),
             ("lm_head.", "lm_head."))
    out = {}
    for key, tensor in hf.state_dict().items():
        if key == "lm_head.weight" and hf.config.text_config.tie_word_embeddings:
            continue
        old, new = next((o, n) for o, n in rules if key.startswith(o))
        out[new + key[len(old):]] = tensor.clone().contiguous()
    return out


def llava_next_config(hf: LlavaOnevisionForConditionalGeneration, **overrides) -> dict:
    text = hf.config.text_config.to_dict()
    rope = text.pop("rope_parameters", {})
    cfg = {k: text[k] for k in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                                "num_key_value_heads", "max_position_embeddings", "rms_norm_eps", "vocab_size",
                                "tie_word_embeddings", "hidden_act", "sliding_window", "use_sliding_window")}
    cfg |= {"architectures": ["LlavaQwenForCausalLM"], "model_type": "llava", "rope_theta": rope.get("rope_theta"),
            "mm_vision_tower": "google/siglip-so400m-patch14-384", "image_aspect_ratio": "anyres_max_9",
            "image_grid_pinpoints": [list(p) for p in hf.config.image_grid_pinpoints],
            "mm_patch_merge_type": "spatial_unpad", "mm_projector_type": "mlp2x_gelu", "mm_vision_select_layer": -2,
            "mm_vision_select_feature": "patch", "mm_hidden_size": hf.config.vision_config.hidden_size,
            "mm_spatial_pool_mode": "bilinear", "use_mm_proj": True}
    return cfg | overrides


def write_repo_dir(path, hf, state=None, **config_overrides):
    path.mkdir(parents=True, exist_ok=True)
    save_file(state if state is not None else to_llava_next(hf), str(path / "model.safetensors"))
    (path / "config.json").write_text(json.dumps(llava_next_config(hf, **config_overrides)))
    base_tokenizer().save_pretrained(path)  # Qwen2's tokenizer: no <image>
    return path


@pytest.fixture(scope="module")
def hf():
    return tiny_hf_model(hf_tokenizer())


@pytest.fixture(scope="module")
def repo_dir(hf, tmp_path_factory):
    return write_repo_dir(tmp_path_factory.mktemp("llava-onevision"), hf)


@pytest.fixture(scope="module")
def repo(repo_dir):
    conv = converted(repo_dir, "llava-onevision")
    model = conv.model()
    return conv, model, UhdProcessor(conv.tokenizer, model)


def test_config_source_and_tokenizer(repo, hf):
    conv, _, _ = repo
    c = conv.config
    assert (c.strategy, c.preset, c.vision_feature_layer) == ("anyres", "onevision-repo", -1)
    v = c.vision_config
    shape = (v.hidden_size, v.num_attention_heads, v.num_hidden_layers, v.image_size, v.patch_size)
    assert shape == (144, 2, 2, 384, 14)
    assert "derived from the weight shapes" in conv.source["vision_config"]
    # <image> added where transformers' conversion put it, inside Qwen's padded rows: no resize
    assert c.image_token_id == hf.config.image_token_id and c.text_config.vocab_size == hf.config.text_config.vocab_size
    assert "no resize" in conv.source["tokenizer"] and c.tie_word_embeddings


@pytest.mark.parametrize("size", [(672, 1088), (1920, 1080)], ids=["672x1088", "1920x1080-downsampled"])
def test_single_image_parity_where_arithmetics_agree(repo, hf, size):
    _, ours, processor = repo
    hf_layout, repo_layout = plan_anyres(*size, preset="onevision"), plan_anyres(*size, preset="onevision-repo")
    assert (hf_layout.grid, hf_layout.final_hw) == (repo_layout.grid, repo_layout.final_hw)
    image = photo(*size)
    hf_in, our_in = single_inputs(image, image_processor())
    ids = prompt(processor, "<image>\nWhat is shown in this image?", [processor.process_image(image)])
    print(f"llava-onevision {size}: max |dlogit| {assert_parity(hf, ours, ids, ids, hf_in, our_in):.2e}")


def test_multi_image_and_video_parity(repo, hf):
    _, ours, processor = repo
    images = [photo(500, 300, seed=1), photo(200, 400, seed=2)]
    batch = image_processor().preprocess([images], return_tensors="pt")
    hf_in = {k: batch[k] for k in ("pixel_values", "image_sizes", "batch_num_images")}
    our_in = {"pixel_values": [p[0] for p in batch["pixel_values"]], "visual_kinds": ["multi", "multi"],
              "image_sizes": torch.tensor([i.size for i in images])}
    ids = prompt(processor, "<image>\n<image>\nWhat differs?", [processor.process_multi(i) for i in images])
    print(f"llava-onevision multi-image: max |dlogit| {assert_parity(hf, ours, ids, ids, hf_in, our_in):.2e}")
    frames = [photo(320, 240, seed=10 + i) for i in range(3)]
    pixels = hf_video_pixels(frames, image_processor())
    ids = prompt(processor, "<video>\nWhat happens?", [processor.process_video(frames)])
    hf_ids = ids.masked_fill(ids == processor.image_token_id, hf.config.video_token_id)
    our_in = {"pixel_values": list(pixels[0]), "image_sizes": torch.tensor([[384, 384]]), "visual_kinds": ["video:3"]}
    delta = assert_parity(hf, ours, hf_ids, ids, {"pixel_values_videos": pixels}, our_in)
    print(f"llava-onevision video (3 frames): max |dlogit| {delta:.2e}")


def llava_next_tokens(hf, crops: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """LLaVA-NeXT's spatial_unpad + anyres_max_9 (llava_arch.py, unpad_image with plain int()), on transformers'
    tower and projector: the reference the lmms-lab weights were trained with."""
    with torch.no_grad():
        patches = hf.model.vision_tower(crops, output_hidden_states=True).hidden_states[-1]
        feats = hf.model.multi_modal_projector(patches)
    base, side = feats[0], 27
    cols, rows = plan_anyres(width, height, preset="onevision-repo").grid
    grid = feats[1:].view(rows, cols, side, side, -1).permute(4, 0, 2, 1, 3).flatten(1, 2).flatten(2, 3)
    ch, cw = grid.shape[1:]
    if width / height > cw / ch:
        pad = (ch - int(height * (cw / width))) // 2
        grid = grid[:, pad:ch - pad]
    else:
        pad = (cw - int(width * (ch / height))) // 2
        grid = grid[:, :, pad:cw - pad]
    h, w = grid.shape[1:]
    ratio = math.sqrt(h * w / (9 * side * side))
    if ratio > 1.1:
        grid = torch.nn.functional.interpolate(grid[None], [int(h // ratio), int(w // ratio)], mode="bilinear")[0]
    newline = hf.model.image_newline[:, None, None].expand(-1, grid.shape[1], 1)
    return torch.cat([base, torch.cat([grid, newline], dim=-1).flatten(1).T])


def test_divergent_size_follows_llava_next(repo, hf):
    _, ours, processor = repo
    image = photo(*DIVERGENT)
    hf_layout = plan_anyres(*DIVERGENT, preset="onevision")
    repo_layout = plan_anyres(*DIVERGENT, preset="onevision-repo")
    assert (hf_layout.num_tokens, repo_layout.num_tokens) == (5751, 5589)
    assert processor.process_image(image).num_tokens == repo_layout.num_tokens
    hf_in, our_in = single_inputs(image, image_processor())
    with torch.no_grad():
        got = ours.visual_tokens(our_in["pixel_values"], our_in["image_sizes"])[0]
    want = llava_next_tokens(hf, hf_in["pixel_values"][0], *DIVERGENT)
    assert got.shape == want.shape == (5589, hf.config.text_config.hidden_size)
    delta = (got - want).abs().max().item()
    print(f"llava-onevision {DIVERGENT} vs LLaVA-NeXT arithmetic: max |dtoken| {delta:.2e}")
    assert delta <= 1e-5


def test_vocabulary_grows_when_image_id_is_past_the_embedding(repo, hf, tmp_path):
    """Embedding exactly the tokenizer's size: <image> needs a new row; the logits over the old vocabulary stay."""
    _, padded, processor = repo
    size = len(base_tokenizer())
    state = to_llava_next(hf)
    state["model.embed_tokens.weight"] = state["model.embed_tokens.weight"][:size].clone()
    conv = converted(write_repo_dir(tmp_path / "exact", hf, state, vocab_size=size), "llava-onevision")
    grown = conv.model()
    embed = grown.get_input_embeddings().weight
    assert conv.config.image_token_id == size and embed.shape[0] == size + 1 and "grown" in conv.source["tokenizer"]
    assert torch.equal(embed[size], state["model.embed_tokens.weight"].mean(0))
    image = photo(300, 200)
    _, our_in = single_inputs(image, image_processor())
    ids = prompt(processor, "<image>\nDescribe.", [processor.process_image(image)])
    with torch.no_grad():
        a, b = padded(input_ids=ids, **our_in).logits, grown(input_ids=ids, **our_in).logits
    assert torch.equal(a[..., :size], b[..., :size])


def test_vision_tower_directory(repo_dir, tmp_path):
    tower = tmp_path / "siglip"
    tower.mkdir()
    full = SiglipVisionConfig(hidden_size=144, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2,
                              image_size=384, patch_size=14)
    (tower / "config.json").write_text(json.dumps({"model_type": "siglip", "vision_config": full.to_dict()}))
    conv = converted(repo_dir, "llava-onevision", vision_tower=tower)
    assert conv.config.vision_config.num_hidden_layers == 2 and str(tower) in conv.source["vision_config"]
    full.num_hidden_layers = 2  # not a tower LLaVA-NeXT cut one layer from
    (tower / "config.json").write_text(json.dumps(full.to_dict()))
    with pytest.raises(ConversionError, match="all but the last"):
        converted(repo_dir, "llava-onevision", vision_tower=tower)


def test_bad_checkpoints_are_named(hf, tmp_path):
    state = to_llava_next(hf) | {"model.vision_resampler.pos_embed": torch.zeros(2)}
    with pytest.raises(ConversionError, match=r"unknown keys \['model.vision_resampler.pos_embed'\]"):
        converted(write_repo_dir(tmp_path / "unknown", hf, state), "llava-onevision")
    state = to_llava_next(hf)
    del state["model.mm_projector.2.bias"]
    with pytest.raises(ConversionError, match=r"missing keys \['compressor.2.bias'\]"):
        converted(write_repo_dir(tmp_path / "missing", hf, state), "llava-onevision").model()
    with pytest.raises(ConversionError, match="image_aspect_ratio is 'pad'"):
        converted(write_repo_dir(tmp_path / "pad", hf, image_aspect_ratio="pad"), "llava-onevision")


def test_pinpoint_range_string():
    from components.model.convert.onevision import _repo_pinpoints

    expanded = _repo_pinpoints("(1x1),...,(6x6)", 384)
    assert len(expanded) == 36 and expanded[0] == (384, 384) and expanded[-1] == (2304, 2304)
