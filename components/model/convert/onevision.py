"""LLaVA-OneVision layouts: llava-hf/llava-onevision-*-hf (`--format llava-onevision-hf`) and lmms-lab/llava-onevision-*
(`--format llava-onevision`, LLaVA-NeXT's own layout).

Both become a `LlavaUhdConfig` with strategy `anyres`: SigLIP tower, `mlp2x_gelu` projector (`compressor.0/2`), the
learned `image_newline`, a Qwen2 LLM. What differs is the unpad arithmetic the model re-plans layouts with
(shared/reference/onevision.md §3.1):
  llava-onevision-hf  preset "onevision"       HF's `int(round(x, 7))`, what transformers' processor and model agree on
  llava-onevision     preset "onevision-repo"  LLaVA-NeXT's plain `int(x)`, what the released weights were trained with

LLaVA-NeXT's SigLIP (multimodal_encoder/siglip_encoder.py) deletes the last of so400m's 27 encoder layers and replaces
the pooling head by Identity before training, and its features are `hidden_states[-1]` of that 26-layer tower (before
post_layernorm) whatever `mm_vision_select_layer` says. So the checkpoint holds embeddings, 26 layers and
post_layernorm, no head, and the converted tower is those 26 layers with feature layer -1 (HF's conversion script
does the same: `num_hidden_layers=26, vision_use_head=False`, loaded strictly). The SigLIP config is not in an lmms-lab
directory: it comes from `vision_tower` (a SigLIP directory) when given, else from the weight shapes plus so400m's
constants (`source["vision_config"]` says which).

Both formats answer in LLaVA-NeXT's `qwen_1_5` conversation (ChatML with the default system prompt), which the
converted tokenizer carries as its chat template (`conversation="chat_template"`).
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from components.compression import MLP
from components.data.conversation import IMAGE_TOKEN
from components.slicing.anyres import get_anyres_preset

from .checkpoint import (
    ConversionError,
    Converted,
    drop_recomputed_buffers,
    drop_unused_vision_layers,
    read_json,
    read_state_dict,
    rename_keys,
)

HF_FORMAT, REPO_FORMAT = "llava-onevision-hf", "llava-onevision"
HF_PRESET, REPO_PRESET = "onevision", "onevision-repo"

# LLaVA-NeXT's conv_qwen_1_5 rendered as a chat template (= Qwen2-Instruct's own): string contents, `<image>` markers
# stay in the text. The llava-hf processor's template expects content lists and would drop string contents.
QWEN_1_5_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

# google/siglip-so400m-patch14-384, for an lmms-lab directory converted without `vision_tower`: what its weights
# cannot tell (head count through the head dimension, activation, epsilon, and the image size: 27 positions per side
# fit any size from 378 to 391 at patch 14).
SO400M = {"head_dim": 72, "hidden_act": "gelu_pytorch_tanh", "layer_norm_eps": 1e-6, "num_channels": 3,
          "image_size": 384}

# Checkpoint key -> project key, first match wins; a key no rule matches is an error. `model.` + `lm_head` is
# transformers 5's in-memory naming; `language_model.model.` / `vision_tower.vision_model.` is the released hub files'
# (transformers 4); transformers 5.23's save_pretrained writes `vision_tower.` without `vision_model.`.
HF_KEYS = (
    (r"^(?:model\.)?vision_tower\.(?:vision_model\.)?", "vision_tower.model."),
    (r"^(?:model\.)?multi_modal_projector\.linear_1\.", "compressor.0."),
    (r"^(?:model\.)?multi_modal_projector\.linear_2\.", "compressor.2."),
    (r"^(?:model\.)?image_newline$", "image_newline"),
    (r"^(?:model\.language_model|language_model\.model)\.", "language_model.model."),
    (r"^(?:language_model\.)?lm_head\.", "language_model.lm_head."),
)
REPO_KEYS = (
    (r"^model\.vision_tower\.vision_tower\.vision_model\.", "vision_tower.model."),
    (r"^model\.mm_projector\.([02])\.", r"compressor.\1."),
    (r"^model\.image_newline$", "image_newline"),
    (r"^model\.(embed_tokens|layers|norm)\.", r"language_model.model.\1."),
    (r"^lm_head\.", "language_model.lm_head."),
)


# ------------------------------------------------------------------------------------------------ the two formats


def convert_onevision_hf(src: Path, vision_tower: Path | None = None) -> Converted:
    """llava-hf/llava-onevision-qwen2-*-ov-hf (transformers' LlavaOnevisionForConditionalGeneration)."""
    cfg = read_json(src, "config.json")
    if vision_tower is not None:
        raise ConversionError(f"--format {HF_FORMAT} carries its vision config; drop --vision-tower")
    _check_hf_config(cfg)
    from transformers import AutoConfig, SiglipVisionConfig

    vision = SiglipVisionConfig(**_without_type(cfg["vision_config"]))
    text = AutoConfig.for_model(**cfg["text_config"])
    tokenizer = _load_tokenizer(src)
    image_id = cfg.get("image_token_id", cfg.get("image_token_index"))
    token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    if token_id != image_id:
        raise ConversionError(f"{src}: config image_token_id {image_id} is not the tokenizer's {IMAGE_TOKEN} id "
                              f"{token_id}: tokenizer and weights do not belong together")
    state, origin = _renamed(src, HF_KEYS, HF_FORMAT)
    vision, dropped = _keep_feature_layers(vision, cfg["vision_feature_layer"], state)
    source = {"format": HF_FORMAT, "preset": HF_PRESET, "vision_config": "config.json vision_config",
              "vision_feature_layer": cfg["vision_feature_layer"], "dropped_keys": dropped,
              "chat_template": "LLaVA-NeXT conv_qwen_1_5 (ChatML, default system prompt)"}
    return _converted(vision, text, state, tokenizer, image_id, HF_PRESET, source, origin)


def convert_onevision(src: Path, vision_tower: Path | None = None) -> Converted:
    """lmms-lab/llava-onevision-qwen2-*-ov (LLaVA-NeXT's LlavaQwenForCausalLM layout)."""
    cfg = read_json(src, "config.json")
    _check_repo_config(cfg)
    state, origin = _renamed(src, REPO_KEYS, REPO_FORMAT)
    vision, vision_note = _repo_vision_config(state, vision_tower)
    _check_geometry(vision.image_size, vision.patch_size, REPO_PRESET)
    vision, dropped = _keep_feature_layers(vision, -1, state)  # a SigLIP head, if one was saved
    text = _qwen2_config(cfg)
    tokenizer = _load_tokenizer(src)
    had_image = IMAGE_TOKEN in tokenizer.get_vocab()
    from components.data.tokenizers import add_image_token

    image_id = add_image_token(tokenizer)
    state, vocab_note = _fit_vocabulary(state, text, image_id, had_image)
    source = {"format": REPO_FORMAT, "preset": REPO_PRESET, "vision_config": vision_note, "tokenizer": vocab_note,
              "dropped_keys": dropped,
              "vision_feature_layer": "-1 of the checkpoint's truncated SigLIP (LLaVA-NeXT ignores "
                                      f"mm_vision_select_layer={cfg.get('mm_vision_select_layer')} for SigLIP)",
              "chat_template": "LLaVA-NeXT conv_qwen_1_5 (ChatML, default system prompt)"}
    return _converted(vision, text, state, tokenizer, image_id, REPO_PRESET, source, origin)


def _converted(vision, text, state, tokenizer, image_id: int, preset: str, source: dict, origin: dict) -> Converted:
    from components.model.modeling import LlavaUhdConfig

    text.tie_word_embeddings = _tied(state, text)
    if text.tie_word_embeddings:
        state.pop("language_model.lm_head.weight", None)  # the embeddings, loaded once
    tokenizer.chat_template = QWEN_1_5_CHAT_TEMPLATE
    config = LlavaUhdConfig(vision_config=vision.to_dict(), text_config=text.to_dict(), compressor=MLP,
                            spatial_schema=False, strategy="anyres", preset=preset, vision_feature_layer=-1,
                            image_token_id=int(image_id), tie_word_embeddings=text.tie_word_embeddings,
                            conversation="chat_template")
    return Converted(config, state, tokenizer, source, origin)


# ------------------------------------------------------------------------------------------------ keys


def _renamed(src: Path, rules, fmt: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The checkpoint's tensors under the project's names; keys no rule knows raise with their names (a wrong
    --format, or a checkpoint with parts this project has no place for). Saved copies of derived buffers (older
    Qwen2 checkpoints' RoPE inv_freq) are dropped first: the model recomputes them from its config."""
    state = read_state_dict(src)
    drop_recomputed_buffers(state)
    return rename_keys(state, rules, strict_format=fmt)


def _tied(state: dict[str, torch.Tensor], text) -> bool:
    """Tie lm_head to the embeddings when the checkpoint says so and holds no different lm_head (a file that
    carries both and they differ keeps both: tying would silently replace one)."""
    head, embed = state.get("language_model.lm_head.weight"), state.get("language_model.model.embed_tokens.weight")
    declared = bool(getattr(text, "tie_word_embeddings", False))
    if head is None:
        return declared  # a tied pair saved once; untied without lm_head: load_exactly names the missing key
    return declared and embed is not None and torch.equal(head, embed)


# ------------------------------------------------------------------------------------------------ vision tower


def _keep_feature_layers(vision, feature_layer, state) -> tuple[object, list[str]]:
    """The tower cut after its feature layer (what LLaVA-NeXT itself does to SigLIP): the layers past it and the
    pooling head never reach the features, so their weights are dropped from `state` (named in source) and the
    feature is -1. Returns the cut config and the dropped keys."""
    if not isinstance(feature_layer, int):
        raise ConversionError(f"vision_feature_layer {feature_layer!r}: only one feature layer is supported")
    total = vision.num_hidden_layers
    keep = total + 1 + feature_layer if feature_layer < 0 else feature_layer
    if not 1 <= keep <= total:
        raise ConversionError(f"vision_feature_layer {feature_layer} is outside a {total}-layer tower")
    prefix = "vision_tower.model."
    head = [k for k in state if k.startswith(prefix + "head.")]
    for key in head:
        del state[key]
    dropped = sorted(head + drop_unused_vision_layers(state, prefix, total, feature_layer))
    vision.num_hidden_layers, vision.vision_use_head = keep, False
    return vision, dropped


def _repo_vision_config(state: dict[str, torch.Tensor], vision_tower: Path | None):
    """SigLIP config of an lmms-lab checkpoint's tower: the given SigLIP directory's (one layer fewer, as LLaVA-NeXT
    deletes it), else the weight shapes + so400m's constants."""
    from transformers import SiglipVisionConfig

    prefix = "vision_tower.model."
    layers = {int(m.group(1)) for k in state if (m := re.match(rf"{re.escape(prefix)}encoder\.layers\.(\d+)\.", k))}
    if not layers or layers != set(range(len(layers))):
        raise ConversionError(f"{REPO_FORMAT}: vision tower layers {sorted(layers)} are not 0..n-1")
    if vision_tower is not None:
        cfg = read_json(Path(vision_tower), "config.json")
        cfg = cfg.get("vision_config", cfg) if cfg.get("model_type") == "siglip" else cfg
        vision = SiglipVisionConfig(**_without_type(cfg))
        if vision.num_hidden_layers - 1 != len(layers):
            raise ConversionError(f"{vision_tower} has {vision.num_hidden_layers} layers; LLaVA-NeXT keeps all but the "
                                  f"last, the checkpoint holds {len(layers)}: not this checkpoint's tower")
        vision.num_hidden_layers, vision.vision_use_head = len(layers), False
        return vision, f"{vision_tower} (last layer removed, no head)"
    patch = state[prefix + "embeddings.patch_embedding.weight"]
    hidden, positions = patch.shape[0], state[prefix + "embeddings.position_embedding.weight"].shape[0]
    side = int(round(positions**0.5))
    if hidden % SO400M["head_dim"] or side * side != positions or SO400M["image_size"] // patch.shape[-1] != side:
        raise ConversionError(f"{REPO_FORMAT}: a {hidden}-wide tower with {positions} positions is not SigLIP so400m's "
                              "shape family: pass --vision-tower with the SigLIP directory it was trained from")
    vision = SiglipVisionConfig(
        hidden_size=hidden, intermediate_size=state[prefix + "encoder.layers.0.mlp.fc1.weight"].shape[0],
        num_hidden_layers=len(layers), num_attention_heads=hidden // SO400M["head_dim"], patch_size=patch.shape[-1],
        image_size=SO400M["image_size"], hidden_act=SO400M["hidden_act"], layer_norm_eps=SO400M["layer_norm_eps"],
        num_channels=SO400M["num_channels"], vision_use_head=False)
    return vision, f"derived from the weight shapes + so400m constants {SO400M}"


# ------------------------------------------------------------------------------------------------ configs


def _check_hf_config(cfg: dict) -> None:
    _require(cfg.get("vision_config", {}).get("model_type") == "siglip_vision_model",
             "vision_config.model_type", cfg.get("vision_config", {}).get("model_type"), "siglip_vision_model")
    _require(cfg.get("vision_feature_select_strategy", "full") == "full", "vision_feature_select_strategy",
             cfg.get("vision_feature_select_strategy"), "full (SigLIP has no CLS to drop)")
    _require(cfg.get("vision_aspect_ratio", "anyres_max_9") == "anyres_max_9", "vision_aspect_ratio",
             cfg.get("vision_aspect_ratio"), "anyres_max_9")
    _require(cfg.get("projector_hidden_act", "gelu") == "gelu", "projector_hidden_act", cfg.get("projector_hidden_act"),
             "gelu")
    _require(cfg.get("multimodal_projector_bias", True), "multimodal_projector_bias", False, True)
    _check_pinpoints([tuple(p) for p in cfg.get("image_grid_pinpoints", [])], HF_PRESET)
    vision = cfg["vision_config"]
    _check_geometry(vision.get("image_size"), vision.get("patch_size"), HF_PRESET)


def _check_repo_config(cfg: dict) -> None:
    _require(cfg.get("image_aspect_ratio") == "anyres_max_9", "image_aspect_ratio", cfg.get("image_aspect_ratio"),
             "anyres_max_9")
    _require(cfg.get("mm_patch_merge_type") == "spatial_unpad", "mm_patch_merge_type", cfg.get("mm_patch_merge_type"),
             "spatial_unpad")
    _require(cfg.get("mm_projector_type") == "mlp2x_gelu", "mm_projector_type", cfg.get("mm_projector_type"),
             "mlp2x_gelu")
    _require("siglip" in str(cfg.get("mm_vision_tower", "")).lower(), "mm_vision_tower", cfg.get("mm_vision_tower"),
             "a SigLIP tower")
    _require(cfg.get("mm_vision_select_feature", "patch") == "patch", "mm_vision_select_feature",
             cfg.get("mm_vision_select_feature"), "patch")
    # Video: OV's defaults (bilinear pooling, one newline per video) are what the project's model implements.
    _require(cfg.get("mm_newline_position", "one_token") == "one_token", "mm_newline_position",
             cfg.get("mm_newline_position"), "one_token")
    _require(cfg.get("mm_spatial_pool_mode", "bilinear") == "bilinear", "mm_spatial_pool_mode",
             cfg.get("mm_spatial_pool_mode"), "bilinear")
    _check_pinpoints(_repo_pinpoints(cfg.get("image_grid_pinpoints"), get_anyres_preset(REPO_PRESET).base_resolution),
                     REPO_PRESET)


def _repo_pinpoints(value, crop: int) -> list[tuple[int, int]]:
    """LLaVA-NeXT's pinpoints: a list of pairs, or a range string "(1x1),...,(6x6)" of which only the first and the
    last match count, each multiplied by the crop size (llava/train/train.py)."""
    if isinstance(value, str):
        found = re.findall(r"\((\d+)x(\d+)\)", value)
        if not found:
            raise ConversionError(f"image_grid_pinpoints {value!r} is not a (AxB),...,(CxD) range")
        (a0, a1), (b0, b1) = [tuple(map(int, p)) for p in (found[0], found[-1])]
        return [(i * crop, j * crop) for i in range(a0, b0 + 1) for j in range(a1, b1 + 1)]
    return [tuple(p) for p in (value or [])]


def _check_pinpoints(pinpoints: list[tuple[int, int]], preset: str) -> None:
    # As sets: HF reads each pair as (h, w), LLaVA-NeXT as (w, h); the OV set is symmetric.
    expected = set(get_anyres_preset(preset).pinpoints)
    _require(set(pinpoints) == expected, "image_grid_pinpoints", f"{len(set(pinpoints))} resolutions",
             f"preset {preset!r}'s 36 (384i, 384j), i, j = 1..6")


def _check_geometry(image_size, patch_size, preset: str) -> None:
    p = get_anyres_preset(preset)
    _require((image_size, patch_size) == (p.base_resolution, p.patch_size), "vision image_size/patch_size",
             (image_size, patch_size), (p.base_resolution, p.patch_size))


def _require(ok: bool, field: str, got, want) -> None:
    if not ok:
        raise ConversionError(f"config {field} is {got!r}; the project's OneVision (AnyRes) model needs {want}")


def _qwen2_config(cfg: dict):
    """The LLM part of an lmms-lab config.json (a Qwen2 config with LLaVA's mm_* fields mixed in)."""
    from transformers import Qwen2Config

    known = set(Qwen2Config().to_dict()) | {"rope_theta", "rope_scaling"}
    fields = {k: v for k, v in cfg.items() if k in known and k not in ("architectures", "model_type",
                                                                       "_name_or_path", "transformers_version")}
    return Qwen2Config(**fields)


def _without_type(cfg: dict) -> dict:
    return {k: v for k, v in cfg.items() if k not in ("model_type", "architectures", "transformers_version")}


# ------------------------------------------------------------------------------------------------ tokenizer


def _load_tokenizer(src: Path):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(src))
    except (OSError, ValueError) as error:
        raise ConversionError(f"{src}: no loadable tokenizer ({error}); copy the checkpoint's tokenizer files "
                              "next to its weights") from error


def _fit_vocabulary(state: dict[str, torch.Tensor], text, image_id: int, had_image: bool):
    """Room for `<image>` in the LLM's vocabulary. Qwen2's embedding is padded beyond its tokenizer (151936 rows
    for 151646 tokens), so the id usually lands in unused rows and nothing changes. Otherwise the embedding and
    lm_head grow by the missing rows, each new row the mean of the old ones: the logits over the original
    vocabulary are unchanged, and a mean row's logit (the mean logit) is never the greedy choice."""
    rows = state["language_model.model.embed_tokens.weight"].shape[0]
    if text.vocab_size != rows:
        raise ConversionError(f"config vocab_size {text.vocab_size} != embed_tokens rows {rows}")
    added = "already in the tokenizer" if had_image else "added"
    if image_id < rows:
        return state, f"{IMAGE_TOKEN} {added} at id {image_id}, inside the {rows}-row embedding (no resize)"
    grow = image_id + 1 - rows
    for key in ("language_model.model.embed_tokens.weight", "language_model.lm_head.weight"):
        if key in state:
            old = state[key]
            state[key] = torch.cat([old, old.mean(0, keepdim=True).expand(grow, -1)])
    text.vocab_size = image_id + 1
    grown = f"embedding/lm_head grown {rows} -> {text.vocab_size} rows (new rows: the mean)"
    return state, f"{IMAGE_TOKEN} {added} at id {image_id}: {grown}"
