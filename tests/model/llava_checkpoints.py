"""Tiny LLaVA-1.5 checkpoints written in the released layouts, for the conversion tests (no hub, no network).

One random transformers `LlavaForConditionalGeneration` (tiny CLIP at 336 px / patch 14, since pad336 always encodes
336x336; tiny Llama over the real Llama vocabulary, padded to 32064 rows like llava-hf) is the reference; the other
layouts are written from its weights by the inverse of the converter's key mapping:

  write_llava_hf      save_pretrained (+ the hub's older naming, + transformers 4.5x's `model.`-prefixed naming)
  write_llava         liuhaotian's LlavaLlamaForCausalLM layout: config.json with mm_* fields, .bin shards with
                      `model.*`, `lm_head`, `model.mm_projector.0/2.*`, no tower; the CLIP tower in its own dir
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

from components.data.tokenizers import add_image_token, load_llama_tokenizer

REPO = Path(__file__).resolve().parents[2]
LLAMA_ASSETS = REPO / "assets" / "tokenizers" / "llama"
LLAMA_VOCAB = 32000  # Vicuna's; liuhaotian's checkpoints keep it
HF_VOCAB = 32064  # llava-hf: + <image> (32000) + <pad> (32001), padded to a multiple of 64
IMAGE_ID = 32000
QUESTION = "What is in the picture?"


def picture(width: int, height: int) -> Image.Image:
    """Smooth colour ramps plus noise: resizing it moves values, so preprocessing differences would show."""
    rng = np.random.default_rng(width * 7 + height)
    x, y = np.meshgrid(np.linspace(0, 1, width), np.linspace(0, 1, height))
    base = np.stack([x, y, (x + y) / 2], axis=-1) * 200 + rng.normal(0, 20, (height, width, 3))
    return Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))


def llama_tokenizer(llava_hf: bool):
    """The Llama tokenizer as each release ships it: llava-hf's has `<image>` (32000) and `<pad>` (32001)."""
    tok = load_llama_tokenizer(LLAMA_ASSETS)
    if llava_hf:
        assert add_image_token(tok) == IMAGE_ID
        tok.add_special_tokens({"pad_token": "<pad>"})
    return tok


def tiny_hf_llava(seed: int = 0) -> LlavaForConditionalGeneration:
    vision = CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=3, num_attention_heads=2,
                              image_size=336, patch_size=14, projection_dim=16)
    # initializer_range 0.2 (not 0.02): logits spread enough that greedy decoding has clear winners.
    text = LlamaConfig(vocab_size=HF_VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                       initializer_range=0.2)
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_index=IMAGE_ID,
                         vision_feature_layer=-2, vision_feature_select_strategy="default",
                         projector_hidden_act="gelu")
    torch.manual_seed(seed)
    return LlavaForConditionalGeneration(config).eval()


# transformers 5's save_pretrained naming -> the two others a llava-hf directory may hold.
HUB_NAMING = [("vision_tower.", "vision_tower.vision_model.")]
MODEL_PREFIXED_NAMING = [("vision_tower.", "model.vision_tower.vision_model."),
                         ("multi_modal_projector.", "model.multi_modal_projector."),
                         ("language_model.model.", "model.language_model."),
                         ("language_model.lm_head.", "lm_head.")]


def write_llava_hf(model, dst: Path, naming: list[tuple[str, str]] | None = None) -> Path:
    """save_pretrained + the tokenizer as llava-hf ships it: tokenizer.json under `tokenizer_class: LlamaTokenizer`,
    legacy false (transformers 5 loads that as its own LlamaTokenizer, as LlavaProcessor would)."""
    model.save_pretrained(dst)
    llama_tokenizer(llava_hf=True).save_pretrained(dst)
    settings = json.loads((dst / "tokenizer_config.json").read_text())
    (dst / "tokenizer_config.json").write_text(json.dumps(settings | {"tokenizer_class": "LlamaTokenizer",
                                                                      "legacy": False}))
    if naming:
        state = load_file(dst / "model.safetensors")
        save_file({_renamed(k, naming): v for k, v in state.items()}, dst / "model.safetensors", {"format": "pt"})
    return dst


def _renamed(key: str, naming: list[tuple[str, str]]) -> str:
    for old, new in naming:
        if key.startswith(old):
            return new + key[len(old):]
    return key


def llava_layout_state(model) -> dict[str, torch.Tensor]:
    """The reference model's LLM and projector under liuhaotian's names, vocabulary cut to Vicuna's 32000 rows."""
    state = {}
    for key, value in model.state_dict().items():
        if key.startswith("model.language_model."):
            state["model." + key.removeprefix("model.language_model.")] = value
        elif key.startswith("model.multi_modal_projector.linear_"):
            index = {"1": "0", "2": "2"}[key.split("linear_")[1][0]]
            state[f"model.mm_projector.{index}." + key.split(".")[-1]] = value
        elif key == "lm_head.weight":
            state[key] = value
    for key in ("model.embed_tokens.weight", "lm_head.weight"):
        state[key] = state[key][:LLAMA_VOCAB]
    return {k: v.clone().contiguous() for k, v in state.items()}


def llava_layout_config(model, projector: str = "mlp2x_gelu") -> dict:
    text = model.config.text_config
    return {
        "architectures": ["LlavaLlamaForCausalLM"], "model_type": "llava", "_name_or_path": "lmsys/vicuna-7b-v1.5",
        "hidden_size": text.hidden_size, "intermediate_size": text.intermediate_size,
        "num_attention_heads": text.num_attention_heads, "num_hidden_layers": text.num_hidden_layers,
        "num_key_value_heads": text.num_key_value_heads, "max_position_embeddings": text.max_position_embeddings,
        "rms_norm_eps": text.rms_norm_eps, "hidden_act": "silu", "vocab_size": LLAMA_VOCAB, "rope_scaling": None,
        "rope_theta": 10000.0, "tie_word_embeddings": False, "torch_dtype": "float16", "use_cache": True,
        "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2,
        "mm_vision_tower": "openai/clip-vit-large-patch14-336",
        "mm_hidden_size": model.config.vision_config.hidden_size,
        "mm_projector_type": projector, "mm_vision_select_layer": -2, "mm_vision_select_feature": "patch",
        "image_aspect_ratio": "pad", "mm_use_im_start_end": False, "mm_use_im_patch_token": False,
        "mm_patch_merge_type": "flat", "tokenizer_model_max_length": 2048, "tune_mm_mlp_adapter": False,
    }


def write_sentencepiece_tokenizer(dst: Path, legacy: bool = False) -> None:
    """The release's tokenizer files: Vicuna's SentencePiece `tokenizer.model` (here: the asset's pieces in a
    ModelProto, enough for the converter, which reads only the pieces) + a LlamaTokenizer tokenizer_config.json."""
    from transformers.convert_slow_tokenizer import import_protobuf

    vocab = json.loads((LLAMA_ASSETS / "tokenizer.json").read_text())["model"]["vocab"]
    proto = import_protobuf().ModelProto()
    proto.trainer_spec.model_type = proto.trainer_spec.BPE
    kinds = {"<unk>": proto.SentencePiece.UNKNOWN, "<s>": proto.SentencePiece.CONTROL,
             "</s>": proto.SentencePiece.CONTROL}
    for piece in sorted(vocab, key=vocab.get):
        entry = proto.pieces.add()
        entry.piece, entry.score = piece, -float(vocab[piece])
        byte = piece.startswith("<0x")
        entry.type = kinds.get(piece, proto.SentencePiece.BYTE if byte else proto.SentencePiece.NORMAL)
    (dst / "tokenizer.model").write_bytes(proto.SerializeToString())
    (dst / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "LlamaTokenizer", "legacy": legacy, "add_bos_token": True, "add_eos_token": False,
        "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": None, "model_max_length": 2048,
        "padding_side": "right", "clean_up_tokenization_spaces": False}))


def write_llava(model, dst: Path, state: dict | None = None, config: dict | None = None,
                sentencepiece: bool = True) -> Path:
    """liuhaotian's layout: two .bin shards + index (as the release), an old RoPE buffer, the tokenizer (the
    release's tokenizer.model, or `sentencepiece=False`: a tokenizer.json as a re-saved copy would hold)."""
    dst.mkdir(parents=True, exist_ok=True)
    state = dict(state if state is not None else llava_layout_state(model))
    state["model.layers.0.self_attn.rotary_emb.inv_freq"] = torch.ones(4)  # saved by transformers <= 4.31
    keys = sorted(state)
    shards = {"pytorch_model-00001-of-00002.bin": keys[: len(keys) // 2],
              "pytorch_model-00002-of-00002.bin": keys[len(keys) // 2:]}
    for name, names in shards.items():
        torch.save({k: state[k] for k in names}, dst / name)
    weight_map = {k: name for name, names in shards.items() for k in names}
    (dst / "pytorch_model.bin.index.json").write_text(json.dumps({"weight_map": weight_map}))
    (dst / "config.json").write_text(json.dumps(config or llava_layout_config(model)))
    if sentencepiece:
        write_sentencepiece_tokenizer(dst)
    else:
        llama_tokenizer(llava_hf=False).save_pretrained(dst)
    return dst


def write_clip_tower(model, dst: Path) -> Path:
    """The CLIP vision tower on its own (what `--vision-tower` points at)."""
    model.model.vision_tower.save_pretrained(dst)
    return dst


def write_clip_model(model, dst: Path) -> Path:
    """A whole CLIPModel (text tower, projections, logit scale) holding the reference's vision tower: the layout of
    openai/clip-vit-large-patch14-336 itself."""
    from transformers import CLIPConfig, CLIPModel, CLIPTextConfig

    text = CLIPTextConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                          vocab_size=100, bos_token_id=0, eos_token_id=1, pad_token_id=1, projection_dim=16)
    clip = CLIPModel(CLIPConfig(text_config=text.to_dict(), vision_config=model.config.vision_config.to_dict(),
                                projection_dim=16))
    clip.vision_model.load_state_dict(model.model.vision_tower.state_dict())
    clip.save_pretrained(dst)
    return dst
