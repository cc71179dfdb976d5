"""LLaVA-1.5 layouts: liuhaotian/llava-v1.5-* (`--format llava`) and llava-hf/llava-1.5-*-hf (`--format llava-hf`).

`--format llava` also reads LLaVA-UHD's own ECCV checkpoints (guozonghao96/llava-uhd-144-13b): the same layout and
config, with `mm_projector_type: adapt_spatial_resampler` (shared/reference/uhd.md §3.2) and `model.mm_projector.*`
holding `AdaptSpatialResampler`, whose parameter names `SpatialResampler` keeps (components/model/compressors.py).

What each checkpoint was trained with becomes the converted config, so the project's processor feeds it the same
pixels and tokens:
  LLaVA-1.5 (`mlp2x_gelu`, `image_aspect_ratio: pad`)  strategy pad336, compressor mlp, no spatial schema
  LLaVA-UHD ECCV (`adapt_spatial_resampler`)           strategy uhd, preset uhd-eccv, spatial_resampler, schema on
  both                                                  conversation vicuna_v1, CLIP hidden_states[-2] without CLS

The `<image>` token. llava-hf's vocabulary already has it (image_token_index, 32000) with an embedding row and an
lm_head row: kept as is, so the converted logits are the original's over its whole vocabulary. liuhaotian's
tokenizer has none (LLaVA splices at index -200): `<image>` is added to the tokenizer (id = its old length, 32000)
and the language model keeps its 32000 rows. The project's model needs no row for it: placeholder ids are masked to
0 before the embedding lookup and their slots overwritten with visual tokens (LlavaUhdForConditionalGeneration.
forward), and with no lm_head row `<image>` can never be generated; the logits equal the original's exactly.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from components.compression import MLP, SPATIAL_GRID, SPATIAL_RESAMPLER
from components.data.conversation import IMAGE_TOKEN
from components.data.tokenizers import add_image_token, load_llama_tokenizer

from .checkpoint import (
    ConversionError,
    Converted,
    drop_recomputed_buffers,
    drop_unused_vision_layers,
    read_json,
    read_state_dict,
    rename_keys,
)

REPO = Path(__file__).resolve().parents[3]
LLAMA_ASSETS = REPO / "assets" / "tokenizers" / "llama"  # Vicuna v1.5's vocabulary, converted (its README)
CONVERSATION = "vicuna_v1"  # LLaVA-1.5's and LLaVA-UHD's fine-tuning template (`--version v1`)
MLP_PROJECTOR = "mlp2x_gelu"  # LLaVA-1.5's mm_projector_type
UHD_PROJECTOR = "adapt_spatial_resampler"  # LLaVA-UHD ECCV's (uhd.md §3.2)
TOWER = "vision_tower.model."  # the CLIP vision model inside components.model.vision.VisionTower

# llava-hf in both namings: transformers 4.4x and the hub files (`vision_tower.vision_model.*`,
# `language_model.model.*`, `language_model.lm_head.*`; transformers 5 also writes this one, without
# `vision_model.`) and transformers >= 4.52 in memory (`model.vision_tower.*`, `model.language_model.*`, `lm_head`).
LLAVA_HF_RULES = [
    (r"^(model\.)?vision_tower\.(vision_model\.)?", TOWER),
    (r"^(model\.)?multi_modal_projector\.linear_1\.", "compressor.0."),
    (r"^(model\.)?multi_modal_projector\.linear_2\.", "compressor.2."),
    (r"^(model\.language_model|language_model\.model)\.", "language_model.model."),
    (r"^(language_model\.)?lm_head\.", "language_model.lm_head."),
]
# liuhaotian/llava-v1.5-* (LlavaLlamaForCausalLM): the projector keeps its own names (`0.*`, `2.*`; the resampler's
# `query`, `pos_embed`, `kv_proj`, `attn.*`, `ln_q`, `ln_kv`, `ln_post`, `proj`). The CLIP tower is usually absent.
LLAVA_RULES = [
    (r"^model\.mm_projector\.", "compressor."),
    (r"^model\.vision_tower\.vision_tower\.(vision_model\.)?", TOWER),
    (r"^model\.", "language_model.model."),
    (r"^lm_head\.", "language_model.lm_head."),
]
CLIP_RULES = [(r"^(vision_model\.)?", TOWER)]

# config.json fields of a LlavaLlamaForCausalLM that are the Llama's own (the rest is LLaVA's mm_* and bookkeeping).
_NOT_LLAMA = {"architectures", "model_type", "_name_or_path", "transformers_version", "torch_dtype", "dtype"}


def convert_llava_hf(src: Path, vision_tower: Path | None = None) -> Converted:
    """llava-hf/llava-1.5-*-hf: transformers' LlavaForConditionalGeneration, tower included."""
    from transformers import LlavaConfig

    if vision_tower is not None:
        raise ConversionError("--vision-tower is for --format llava: a llava-hf checkpoint holds its vision tower")
    raw = read_json(src, "config.json")
    if "mm_vision_tower" in raw or "mm_projector_type" in raw:
        raise ConversionError(f"{src} is LLaVA's own layout (mm_* fields in config.json): use --format llava")
    if raw.get("model_type") != "llava" or "text_config" not in raw:
        raise ConversionError(f"{src}/config.json is not a transformers LlavaForConditionalGeneration "
                              "(model_type llava with a text_config): is it the right --format?")
    hf = LlavaConfig.from_pretrained(str(src))
    _check_hf_config(hf)
    tokenizer = load_checkpoint_tokenizer(src)
    image_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    if image_id != hf.image_token_id:
        raise ConversionError(f"{src}: the tokenizer gives {IMAGE_TOKEN} id {image_id}, config.json's "
                              f"image_token_index is {hf.image_token_id}")
    config = _llava15_config(_common(hf.vision_config.to_dict(), hf.text_config.to_dict(), hf.vision_feature_layer,
                                     tokenizer, image_id))
    state, origin = rename_keys(read_state_dict(src), LLAVA_HF_RULES)
    notes = _drop_unused(state, hf.vision_config.num_hidden_layers, hf.vision_feature_layer)
    notes.append(f"{IMAGE_TOKEN} = id {image_id}, the checkpoint's own image_token_index (its embedding and lm_head "
                 "rows kept: logits over the whole vocabulary as the original's)")
    return Converted(config, state, tokenizer, _record("llava-hf", src, None, notes), origin)


def _check_hf_config(hf) -> None:
    """The LlavaConfig options this conversion reproduces; anything else is refused, not approximated."""
    wanted = {"vision_feature_select_strategy": "default", "projector_hidden_act": "gelu",
              "multimodal_projector_bias": True}
    wrong = {k: getattr(hf, k, None) for k, v in wanted.items() if getattr(hf, k, v) != v}
    if not isinstance(hf.vision_feature_layer, int):
        wrong["vision_feature_layer"] = hf.vision_feature_layer
    if hf.vision_config.model_type != "clip_vision_model":
        wrong["vision_config.model_type"] = hf.vision_config.model_type
    if wrong:
        raise ConversionError(f"llava-hf config values this conversion does not support: {wrong} "
                              f"(supported: {wanted}, one integer vision_feature_layer, a CLIP tower)")


def convert_llava(src: Path, vision_tower: Path | None) -> Converted:
    """liuhaotian/llava-v1.5-* or LLaVA-UHD ECCV (LlavaLlamaForCausalLM); the CLIP tower from `vision_tower`."""
    from transformers import LlamaConfig

    raw = read_json(src, "config.json")
    if "text_config" in raw:
        raise ConversionError(f"{src} is a transformers (llava-hf style) checkpoint, config.json has a text_config: "
                              "use --format llava-hf")
    _check_llava_config(src, raw)
    projector = raw.get("mm_projector_type", "linear")
    tower_config, tower_state, tower_origin = load_clip_tower(vision_tower, raw.get("mm_vision_tower"))
    if raw.get("mm_hidden_size", tower_config.hidden_size) != tower_config.hidden_size:
        raise ConversionError(f"{src}: mm_hidden_size {raw['mm_hidden_size']} but the --vision-tower has hidden "
                              f"size {tower_config.hidden_size}: it is not the tower this checkpoint was trained on")
    text = _llama_config(raw)
    tokenizer, notes = load_llava_tokenizer(src, LlamaConfig(**text))
    had_image_token = IMAGE_TOKEN in tokenizer.get_vocab()
    image_id = add_image_token(tokenizer)
    feature_layer = int(raw.get("mm_vision_select_layer", -2))
    state, origin = rename_keys(read_state_dict(src), LLAVA_RULES)
    if any(k.startswith(TOWER) for k in state):
        notes.append("the checkpoint holds its own vision tower weights: used instead of --vision-tower's")
    else:
        state.update(tower_state)
        origin.update(tower_origin)
    notes += _drop_unused(state, tower_config.num_hidden_layers, feature_layer)
    common = _common(tower_config.to_dict(), text, feature_layer, tokenizer, image_id)
    if projector == UHD_PROJECTOR:
        config = _uhd_config(common, _resampler_grid(state))
        notes.append("LLaVA-UHD ECCV: strategy uhd, preset uhd-eccv (the training slicing; its evaluation scripts "
                     "first resized the long side to 1024: preset uhd-eccv-eval), spatial_resampler, spatial schema; "
                     "attention heads (not stored) = LLM hidden // 128, as the reference builder")
    else:
        config = _llava15_config(common)
    notes.append(_image_token_note(image_id, text["vocab_size"], had_image_token))
    return Converted(config, state, tokenizer, _record("llava", src, vision_tower, notes), origin)


def _image_token_note(image_id: int, vocab_size: int, had_image_token: bool) -> str:
    if image_id < vocab_size:  # a tokenizer shorter than the embedding: the id has a (never trained) row
        return f"{IMAGE_TOKEN} = id {image_id} has an lm_head row of the checkpoint: it is not excluded from generation"
    return (f"{IMAGE_TOKEN} {'is' if had_image_token else 'added to the tokenizer as'} id {image_id}, outside the "
            f"language model's {vocab_size} rows: placeholders are masked before the embedding lookup, and with no "
            "lm_head row it can never be generated")


def _check_llava_config(src: Path, raw: dict) -> None:
    problems = []
    architectures = raw.get("architectures") or ["LlavaLlamaForCausalLM"]
    if architectures != ["LlavaLlamaForCausalLM"]:
        problems.append(f"architectures {architectures} (only LlavaLlamaForCausalLM: a Llama/Vicuna LLM)")
    projector = raw.get("mm_projector_type", "linear")
    if projector not in (MLP_PROJECTOR, UHD_PROJECTOR):
        problems.append(f"mm_projector_type {projector!r} (supported: {MLP_PROJECTOR}, {UHD_PROJECTOR})")
    if raw.get("mm_vision_select_feature", "patch") != "patch":
        problems.append(f"mm_vision_select_feature {raw['mm_vision_select_feature']!r} (supported: patch)")
    if raw.get("mm_use_im_start_end", False):
        problems.append("mm_use_im_start_end true (image start/end tokens are not part of the project's prompts)")
    if projector == MLP_PROJECTOR and raw.get("image_aspect_ratio", "pad") != "pad":
        problems.append(f"image_aspect_ratio {raw['image_aspect_ratio']!r} (LLaVA-1.5's pad = strategy pad336)")
    if "mm_vision_tower" not in raw and "mm_hidden_size" not in raw:
        problems.append("no mm_* fields: not a LLaVA checkpoint")
    if problems:
        raise ConversionError(f"{src}/config.json: unsupported " + "; ".join(problems))


def _llama_config(raw: dict) -> dict:
    """The Llama config a LlavaLlamaForCausalLM config.json carries at its top level."""
    from transformers import LlamaConfig

    fields = (set(LlamaConfig().to_dict()) | {"rope_theta", "rope_scaling"}) - _NOT_LLAMA
    # rope_scaling null (Vicuna v1.5's) is the default; passing it would only raise transformers' deprecation warning.
    return LlamaConfig(**{k: v for k, v in raw.items() if k in fields and v is not None}).to_dict()


def load_clip_tower(path: Path | None, name: str | None):
    """A local CLIP save_pretrained directory (CLIPModel or CLIPVisionModel) as the tower's config and state."""
    from transformers import CLIPVisionConfig

    wanted = name or "openai/clip-vit-large-patch14-336"
    if path is None:
        raise ConversionError(f"--format llava checkpoints do not hold their vision tower ({wanted}): pass "
                              f"--vision-tower DIR, a local copy of it (`huggingface-cli download {wanted} "
                              "--local-dir DIR`)")
    if not path.is_dir():
        raise ConversionError(f"--vision-tower {path} is not a directory")
    model_type = read_json(path, "config.json").get("model_type")
    if model_type not in ("clip", "clip_vision_model"):
        raise ConversionError(f"--vision-tower {path} is a {model_type!r} model, not CLIP")
    config = CLIPVisionConfig.from_pretrained(str(path))
    state = read_state_dict(path)
    if model_type == "clip":  # a whole CLIPModel: only its vision half
        state = {k: v for k, v in state.items() if k.startswith("vision_model.")}
    drop_recomputed_buffers(state)
    renamed, origin = rename_keys(state, CLIP_RULES)
    return config, renamed, {k: f"--vision-tower {v}" for k, v in origin.items()}


def load_llava_tokenizer(src: Path, llm_config) -> tuple[object, list[str]]:
    """LLaVA's releases ship Vicuna's SentencePiece `tokenizer.model` and no tokenizer.json. When its pieces are,
    one by one, the Llama vocabulary of the project's converted tokenizer (assets/tokenizers/llama), that tokenizer
    is used, with the checkpoint's `legacy` flag: transformers 5 needs the sentencepiece package to convert the file
    and rebuilds a Llama tokenizer's normalizer, which changes how spaces tokenize (components/data/tokenizers.py).
    Any other vocabulary goes through AutoTokenizer."""
    model_file = src / "tokenizer.model"
    if not (model_file.is_file() and LLAMA_ASSETS.is_dir() and _sentencepiece_pieces(model_file) == _asset_pieces()):
        return load_checkpoint_tokenizer(src, llm_config), []
    settings = read_json(src, "tokenizer_config.json") if (src / "tokenizer_config.json").is_file() else {}
    legacy = bool(settings.get("legacy", True))  # transformers' LlamaTokenizer default when the file is silent
    note = (f"tokenizer: tokenizer.model holds the Llama vocabulary of {LLAMA_ASSETS.relative_to(REPO)} (checked "
            f"piece by piece): that converted tokenizer, legacy={legacy} as the checkpoint's tokenizer_config")
    return load_llama_tokenizer(LLAMA_ASSETS, legacy=legacy), [note]


def _sentencepiece_pieces(path: Path) -> list[str]:
    """The pieces of a SentencePiece model file in id order, read with protobuf (no sentencepiece package)."""
    from transformers.convert_slow_tokenizer import import_protobuf

    proto = import_protobuf().ModelProto()
    proto.ParseFromString(path.read_bytes())
    return [piece.piece for piece in proto.pieces]


def _asset_pieces() -> list[str]:
    vocab = json.loads((LLAMA_ASSETS / "tokenizer.json").read_text())["model"]["vocab"]
    return sorted(vocab, key=vocab.get)


def load_checkpoint_tokenizer(src: Path, llm_config=None):
    """The checkpoint directory's own tokenizer; LLaVA's v1 template pads with `<unk>` when it has no pad token.
    `llm_config` stands in for config.json where transformers cannot read that (LLaVA's own `llava` configs)."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(src), **({"config": llm_config} if llm_config else {}))
    except (OSError, ValueError) as err:
        raise ConversionError(f"{src}: no tokenizer could be loaded from it ({err})") from err
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.unk_token
    return tokenizer


def _drop_unused(state: dict, num_layers: int, feature_layer: int) -> list[str]:
    notes = []
    recomputed = drop_recomputed_buffers(state)
    if recomputed:
        notes.append(f"dropped {len(recomputed)} saved buffers transformers recomputes (rotary inv_freq, position_ids)")
    unused = drop_unused_vision_layers(state, TOWER, num_layers, feature_layer)
    if unused:
        notes.append(f"dropped {len(unused)} tensors of vision encoder layers after the feature layer "
                     f"{feature_layer} (never reach the output)")
    return notes


def _resampler_grid(state: dict) -> int:
    query = state.get("compressor.query")
    if query is None:
        raise ConversionError("mm_projector_type adapt_spatial_resampler but the checkpoint has no "
                              "model.mm_projector.query")
    grid = math.isqrt(query.shape[0])
    if grid * grid != query.shape[0]:
        raise ConversionError(f"model.mm_projector.query has {query.shape[0]} queries, not a square grid")
    return grid


def _common(vision: dict, text: dict, feature_layer: int, tokenizer, image_id: int) -> dict:
    from components.model.modeling import separator_token_ids

    comma, newline = separator_token_ids(tokenizer)
    return {"vision_config": vision, "text_config": text, "vision_feature_layer": feature_layer,
            "conversation": CONVERSATION, "image_token_id": image_id, "slice_separator_id": comma,
            "row_separator_id": newline, "tie_word_embeddings": False}


def _llava15_config(common: dict):
    from components.model.modeling import LlavaUhdConfig

    return LlavaUhdConfig(**common, compressor=MLP, strategy="pad336", preset="pad336", spatial_schema=False)


def _uhd_config(common: dict, grid: int):
    from components.model.modeling import LlavaUhdConfig

    kwargs = {"grid_size": grid} if grid != SPATIAL_GRID else None
    return LlavaUhdConfig(**common, compressor=SPATIAL_RESAMPLER, compressor_kwargs=kwargs, strategy="uhd",
                          preset="uhd-eccv", spatial_schema=True)


def _record(format: str, src: Path, vision_tower: Path | None, notes: list[str]) -> dict:
    return {"format": format, "source": str(src.resolve()),
            "vision_tower": str(vision_tower.resolve()) if vision_tower else None, "notes": notes}
