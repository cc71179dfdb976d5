"""LLaVA-UHD as transformers classes: `LlavaUhdConfig` and `LlavaUhdForConditionalGeneration`.

The model wraps any causal LM (Llama/Vicuna at paper scale, SmolLM2 or a tiny Llama offline), a
CLIP/SigLIP vision tower (vision.py) and a compressor (compressors.py). Its input contract is the
processor's: each image's placeholder token is already repeated once per visual token (the count comes
from the layouts table / `plan_layout`), `pixel_values` is the flat list of every encoded image (each
image's slices row-major, then its overview) and `image_sizes` the (width, height) each layout was
planned for. The model re-plans each layout from `image_sizes` with the same slicing code, encodes,
compresses, inserts the spatial schema separators, and scatters the result into the placeholder slots;
a count mismatch raises with both numbers instead of silently shifting tokens.

Importing this module registers the classes with the Auto API (no remote code).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from huggingface_hub.dataclasses import strict
from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForImageTextToText,
    GenerationMixin,
    PreTrainedConfig,
    PreTrainedModel,
)
from transformers.configuration_utils import SubConfigSpec
from transformers.modeling_outputs import CausalLMOutputWithPast

from components.compression import RESAMPLER, check_compressor, effective_compressor
from components.data.conversation import IGNORE_INDEX
from components.slicing.anyres import VIDEO_POOL_STRIDE, AnyresLayout, get_anyres_preset, video_num_tokens
from components.slicing.layout import ROW_SEPARATOR, SLICE_SEPARATOR, Layout
from components.slicing.strategies import check_strategy, plan_layout

from .compressors import build_compressor
from .vision import VisionTower

CLIP_VIT_L_336 = {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24,
                  "num_attention_heads": 16, "image_size": 336, "patch_size": 14, "projection_dim": 768}


@strict
class LlavaUhdConfig(PreTrainedConfig):
    """vision_config / text_config: any CLIP-or-SigLIP vision config and any causal-LM config.

    compressor      a components.compression name; `projector` is the one that runs (AnyRes: always mlp)
    spatial_schema  ',' between slices of a row and '\\n' after each row, as token embeddings
    strategy/preset the slicing the processor used; the model re-plans layouts with it
    overview_only   encode each image's overview alone, no slices (the ECCV pretraining's `--single True`)
    image_token_id  the placeholder id the processor repeats once per visual token
    separator ids   the tokenizer's ids for ',' and '\\n' (set from the tokenizer, never hard-coded)
    """

    model_type = "llava_uhd"
    sub_configs_defaults = {
        "vision_config": SubConfigSpec(config_class=AutoConfig, model_type="clip_vision_model",
                                       init_kwargs=CLIP_VIT_L_336),
        "text_config": SubConfigSpec(config_class=AutoConfig, model_type="llama"),
    }

    vision_config: dict | PreTrainedConfig | None = None
    text_config: dict | PreTrainedConfig | None = None
    compressor: str = RESAMPLER
    compressor_kwargs: dict | None = None
    spatial_schema: bool = True
    strategy: str = "uhd"
    preset: str = "uhd-arxiv"
    overview_only: bool = False
    vision_feature_layer: int = -2
    tune_vision: bool = False
    # The conversation template of instruction tuning, hence of answering (evaluation, inference): vicuna_v1
    # (LLaVA-1.5's text format) | chat_template (the LLM's own, e.g. SmolLM2-Instruct's ChatML). Pretraining is plain.
    conversation: str = "vicuna_v1"
    image_token_id: int = 32000
    slice_separator_id: int | None = None
    row_separator_id: int | None = None
    tie_word_embeddings: bool = False

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        check_strategy(self.strategy, self.preset)
        check_compressor(self.compressor)
        if self.overview_only and self.strategy != "uhd":
            raise ValueError(f"overview_only encodes UHD overviews; strategy {self.strategy!r} has none")

    @property
    def projector(self) -> str:
        """The compressor that runs (components.compression's projector rule)."""
        return effective_compressor(self.compressor, self.strategy)


def separator_token_ids(tokenizer) -> tuple[int, int]:
    """The ids a tokenizer gives ',' and '\\n' *inside* text (e.g. Llama: 29892 and 13, not '▁,')."""
    ids = []
    for sep in (SLICE_SEPARATOR, ROW_SEPARATOR):
        base = tokenizer("x", add_special_tokens=False)["input_ids"]
        with_sep = tokenizer("x" + sep, add_special_tokens=False)["input_ids"]
        extra = with_sep[len(base):]
        if with_sep[: len(base)] != base or len(extra) != 1:
            raise ValueError(f"{type(tokenizer).__name__} does not encode {sep!r} as one token after text: {with_sep}")
        ids.append(extra[0])
    return ids[0], ids[1]


class LlavaUhdPreTrainedModel(PreTrainedModel):
    config: LlavaUhdConfig
    config_class = LlavaUhdConfig
    base_model_prefix = "model"
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    _skip_keys_device_placement = ["past_key_values"]
    _supports_sdpa = True


class LlavaUhdForConditionalGeneration(LlavaUhdPreTrainedModel, GenerationMixin):
    def __init__(self, config: LlavaUhdConfig):
        super().__init__(config)
        self.vision_tower = VisionTower(config.vision_config, config.vision_feature_layer, config.tune_vision)
        llm_dim = config.text_config.hidden_size
        self.compressor = build_compressor(config.projector, config.vision_config.hidden_size, llm_dim,
                                           **(config.compressor_kwargs or {}))
        self.language_model = AutoModelForCausalLM.from_config(config.text_config)
        # OneVision's learned row terminator; unused (and absent) for the UHD family.
        self.image_newline = nn.Parameter(torch.zeros(llm_dim)) if config.strategy == "anyres" else None
        self.post_init()

    # -- plumbing the LLM expects -------------------------------------------------------------------
    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module:
        return self.language_model.get_output_embeddings()

    def _init_weights(self, module):
        if module is self and self.image_newline is not None:
            nn.init.normal_(self.image_newline, std=self.config.text_config.hidden_size**-0.5)

    # -- vision side ----------------------------------------------------------------------------------
    def plan(self, width: int, height: int) -> Layout | AnyresLayout:
        """The layout this model encodes an image of (width, height) with: the processor's, by construction."""
        layout = plan_layout(int(width), int(height), self.config.strategy, self.config.preset)
        if isinstance(layout, Layout):
            layout = layout.with_compressor(self.config.compressor, self.config.spatial_schema)
            if self.config.overview_only:
                layout = layout.overview_only()
        return layout

    def _visual_item(self, size: tuple[int, int], kind: str) -> VisualItem:
        """What one entry of `image_sizes` stands for: an image, one image of a multi-image sample, or a video."""
        if kind == "image":
            layout = self.plan(*size)
            return VisualItem(kind, layout, _encoded_sizes(layout), layout.num_tokens)
        if self.config.strategy != "anyres":
            raise ValueError(f"visual kind {kind!r} is OneVision's (strategy anyres), not {self.config.strategy!r}")
        preset = get_anyres_preset(self.config.preset)
        side = (preset.base_resolution, preset.base_resolution)
        if kind == "multi":
            return VisualItem(kind, None, [side], preset.tokens_per_crop + 1)
        if kind.startswith("video:"):
            frames = int(kind.split(":", 1)[1])
            return VisualItem(kind, None, [side] * frames, video_num_tokens(frames, preset.name))
        raise ValueError(f"unknown visual kind {kind!r}: use image, multi or video:<frames>")

    def visual_tokens(self, pixel_values: list[torch.Tensor], image_sizes, visual_kinds=None) -> list[torch.Tensor]:
        """Per visual item: its token sequence (n_i, llm_dim), separators and newlines included.

        visual_kinds (optional, one per image_sizes row): "image" (default; the model's slicing strategy),
        "multi" (one image of a multi-image sample: OneVision's padded base crop + newline) or
        "video:<frames>" (frames squashed to the base resolution, pooled to 14x14, one newline per video).
        """
        sizes = _sizes(image_sizes)
        kinds = list(visual_kinds) if visual_kinds is not None else ["image"] * len(sizes)
        items = [self._visual_item(size, kind) for size, kind in zip(sizes, kinds, strict=True)]
        needed = sum(len(item.encoded_sizes) for item in items)
        if needed != len(pixel_values):
            raise ValueError(f"{len(items)} visual items need {needed} encoded images, got {len(pixel_values)}")
        features = self.compressor(self.vision_tower(list(pixel_values)))
        out, start = [], 0
        for item, size in zip(items, sizes, strict=True):
            n = len(item.encoded_sizes)
            _check_pixels(pixel_values[start:start + n], item.encoded_sizes, size)
            out.append(self._assemble(item, features[start:start + n]))
            start += n
            if out[-1].shape[0] != item.num_tokens:
                raise RuntimeError(f"assembled {out[-1].shape[0]} visual tokens, the plan says {item.num_tokens}")
        return out

    def _assemble(self, item: VisualItem, tokens: list[torch.Tensor]) -> torch.Tensor:
        if item.kind == "multi":
            return torch.cat([tokens[0], self.image_newline[None].to(tokens[0].dtype)])
        if item.kind.startswith("video"):
            return self._assemble_video(tokens)
        if isinstance(item.layout, AnyresLayout):
            return self._assemble_anyres(tokens, item.layout)
        return self._assemble_uhd(tokens, item.layout)

    def _assemble_video(self, tokens: list[torch.Tensor]) -> torch.Tensor:
        """Each frame's projected 27x27 map bilinearly pooled to ceil(27/2)^2 = 196 tokens, one newline at the end."""
        side = int(round(tokens[0].shape[0] ** 0.5))
        pooled_side = -(-side // VIDEO_POOL_STRIDE)
        frames = torch.stack(tokens).reshape(len(tokens), side, side, -1).permute(0, 3, 1, 2)
        pooled = F.interpolate(frames, size=(pooled_side, pooled_side), mode="bilinear", align_corners=False)
        flat = pooled.flatten(2).transpose(1, 2).reshape(-1, frames.shape[1])
        return torch.cat([flat, self.image_newline[None].to(flat.dtype)])

    def _separator_embeddings(self, separators: tuple[str, ...], device) -> torch.Tensor:
        ids = {SLICE_SEPARATOR: self.config.slice_separator_id, ROW_SEPARATOR: self.config.row_separator_id}
        if None in ids.values():
            raise ValueError("spatial_schema needs slice_separator_id and row_separator_id: "
                             "set them with components.model.modeling.separator_token_ids(tokenizer)")
        index = torch.tensor([ids[s] for s in separators], device=device)
        return self.get_input_embeddings()(index)

    def _assemble_uhd(self, tokens: list[torch.Tensor], layout: Layout) -> torch.Tensor:
        """slice_1 sep_1 slice_2 sep_2 ... slice_k sep_k overview (layout.segments order)."""
        if not layout.separators:
            return torch.cat(tokens)
        seps = self._separator_embeddings(layout.separators, tokens[0].device).to(tokens[0].dtype)
        parts = []
        for i, slice_tokens in enumerate(tokens[:-1]):
            parts += [slice_tokens, seps[i:i + 1]]
        return torch.cat([*parts, tokens[-1]])

    def _assemble_anyres(self, tokens: list[torch.Tensor], layout: AnyresLayout) -> torch.Tensor:
        """OneVision: base crop, then the stitched crops unpadded, maybe downsampled, one newline per row."""
        side = layout.base_resolution // self.vision_tower.patch_size
        cols, rows = layout.grid
        grid = torch.stack(tokens[:-1]).reshape(rows, cols, side, side, -1)
        grid = grid.permute(4, 0, 2, 1, 3).reshape(-1, rows * side, cols * side)  # (C, H, W)
        (uh, uw), (fh, fw) = layout.unpadded_hw, layout.final_hw
        top, left = (rows * side - uh) // 2, (cols * side - uw) // 2
        grid = grid[:, top:top + uh, left:left + uw]
        if layout.downsampled:
            grid = F.interpolate(grid[None], size=(fh, fw), mode="bilinear", align_corners=False)[0]
        newline = self.image_newline.to(grid.dtype)[:, None, None].expand(-1, fh, 1)
        grid = torch.cat([grid, newline], dim=2).flatten(1).transpose(0, 1)
        return torch.cat([tokens[-1], grid])

    # -- the LMM --------------------------------------------------------------------------------------
    def forward(self, input_ids=None, pixel_values=None, image_sizes=None, attention_mask=None, position_ids=None,
                past_key_values=None, inputs_embeds=None, labels=None, use_cache=None, logits_to_keep=0,
                visual_kinds=None, logits_at_labels=False, **kwargs):
        """The LMM forward. `logits_at_labels=True` (training): the vocabulary projection runs only where a label
        is supervised (the next token of a non -100 position), which is where the loss reads it; the loss equals
        the full-logits one (mean token cross-entropy, fp32 logits) and `logits` holds only those rows."""
        if inputs_embeds is None:
            image_mask = input_ids == self.config.image_token_id
            inputs_embeds = self.get_input_embeddings()(input_ids.masked_fill(image_mask, 0))
            if pixel_values is not None:
                visual = self.visual_tokens(pixel_values, image_sizes, visual_kinds)
                _check_slots(image_mask, visual)
                flat = torch.cat(visual).to(inputs_embeds.dtype)
                inputs_embeds = inputs_embeds.masked_scatter(image_mask[..., None], flat)
            elif image_mask.any() and (past_key_values is None or past_key_values.get_seq_length() == 0):
                raise ValueError("input_ids hold image placeholders but no pixel_values were given")
        if labels is not None and logits_at_labels:
            return self._loss_at_labels(inputs_embeds, attention_mask, position_ids, labels, **kwargs)
        output = self.language_model(inputs_embeds=inputs_embeds, attention_mask=attention_mask,
                                     position_ids=position_ids, past_key_values=past_key_values, labels=labels,
                                     use_cache=use_cache, logits_to_keep=logits_to_keep, **kwargs)
        return CausalLMOutputWithPast(loss=output.loss, logits=output.logits, past_key_values=output.past_key_values,
                                      hidden_states=output.hidden_states, attentions=output.attentions)

    def _loss_at_labels(self, inputs_embeds, attention_mask, position_ids, labels, **kwargs):
        """LLaVA's shifted causal-LM loss with logits for the supervised positions only: with ~500 visual and
        prompt tokens per sample and a few answer tokens, the 49K-wide (or 32K) projection of every position
        is most of a small LLM's step, and none of it reaches the loss."""
        hidden = self.language_model.get_decoder()(inputs_embeds=inputs_embeds, attention_mask=attention_mask,
                                                   position_ids=position_ids, use_cache=False, **kwargs)
        targets = labels[:, 1:]
        supervised = targets != IGNORE_INDEX
        rows = hidden.last_hidden_state[:, :-1][supervised]
        logits = self.language_model.get_output_embeddings()(rows).float()
        loss = F.cross_entropy(logits, targets[supervised]) if rows.shape[0] else logits.sum() * 0.0
        return CausalLMOutputWithPast(loss=loss, logits=logits)


def _sizes(image_sizes) -> list[tuple[int, int]]:
    if isinstance(image_sizes, torch.Tensor):
        image_sizes = image_sizes.tolist()
    return [(int(w), int(h)) for w, h in image_sizes]


@dataclass(frozen=True)
class VisualItem:
    kind: str  # image | multi | video:<frames>
    layout: Layout | AnyresLayout | None
    encoded_sizes: list[tuple[int, int]]  # (w, h) of every encoded image, in pixel_values order
    num_tokens: int


def _encoded_sizes(layout: Layout | AnyresLayout) -> list[tuple[int, int]]:
    """(w, h) of every encoded image in the order the processor stacks them: slices, then overview."""
    if isinstance(layout, AnyresLayout):
        side = layout.base_resolution
        return [(side, side)] * layout.num_crops
    return list(layout.images)


def _check_pixels(pixels: list[torch.Tensor], encoded_sizes, size) -> None:
    for tensor, (w, h) in zip(pixels, encoded_sizes, strict=True):
        if tuple(tensor.shape[-2:]) != (h, w):
            raise ValueError(f"pixel tensor {tuple(tensor.shape)} does not match the layout's {w}x{h} image of "
                             f"the {size[0]}x{size[1]} input: re-run preprocessing with this model's slicing config")


def _check_slots(image_mask: torch.Tensor, visual: list[torch.Tensor]) -> None:
    """Placeholder runs (row-major over the batch) must match each image's visual token count exactly."""
    flat = image_mask.flatten().to(torch.int8)
    edges = torch.diff(torch.cat([flat.new_zeros(1), flat, flat.new_zeros(1)]))
    starts, ends = torch.nonzero(edges == 1).flatten(), torch.nonzero(edges == -1).flatten()
    runs = (ends - starts).tolist()
    wanted = [v.shape[0] for v in visual]
    if runs != wanted:
        raise ValueError(
            f"image placeholder slots {runs} do not match the visual tokens the model produces {wanted} "
            "(layouts table vs model config: re-run the layouts stage with the model's slicing/compressor)")


AutoConfig.register("llava_uhd", LlavaUhdConfig)
AutoModelForImageTextToText.register(LlavaUhdConfig, LlavaUhdForConditionalGeneration)
