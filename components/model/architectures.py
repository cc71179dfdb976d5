"""Paper-scale architectures as transformers config objects built in code (never fetched from a hub).

Every cost figure of the project (FLOPs, parameter counts, training memory) is derived from these
configs alone, never from weights:

    vision towers   CLIP ViT-L/14-336 (LLaVA-1.5, LLaVA-UHD), SigLIP so400m-patch14-384 with its last
                    layer removed (LLaVA-OneVision: 27 -> 26 layers, no pooling head)
    LLMs            Vicuna-7B/13B-v1.5 (LlamaForCausalLM, untied embeddings), Qwen2-7B (OneVision)
    compressors     resampler          arXiv v1 perceiver resampler: 64 queries, one cross-attention
                    spatial_resampler  ECCV spatially constrained resampler: 144 queries on a 12x12 grid,
                                       each query attends only to its own RoI-pooled cell (<= 12 keys)
                    mlp                LLaVA-1.5 mlp2x_gelu: Linear(vision, llm), GELU, Linear(llm, llm)

The compressor modules below are *shape replicas* of the reference code (thunlp/LLaVA-UHD
`resampler.py` / `adapt_spatial_resampler.py`, shared/reference/uhd.md §2-§3): same parameters, same
shapes, same frozen buffers-as-parameters, so that meta-device parameter counts are exact. They are not
the project's trainable compressors (those live beside this file and are built from params.yaml).

`MODELS` is an explicit registry: nothing dispatches on substrings of a model name.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn
from transformers import (
    CLIPVisionConfig,
    CLIPVisionModel,
    LlamaConfig,
    LlamaForCausalLM,
    PretrainedConfig,
    Qwen2Config,
    Qwen2ForCausalLM,
    SiglipVisionConfig,
    SiglipVisionModel,
)

from components.compression import MLP, RESAMPLER, SPATIAL_RESAMPLER, check_compressor, queries_per_image

RESAMPLER_HEAD_DIM = 128  # heads = embed / 128 (40 for Vicuna-13B's 5120)
MAX_SPATIAL_KEYS = 12  # RoI pool shapes are 4x2, 3x2, 4x3, 3x3 and transposes: at most 12 keys per query

# ---------------------------------------------------------------------------------------------------
# Configs


def clip_vit_l14_336() -> CLIPVisionConfig:
    """openai/clip-vit-large-patch14-336 vision tower: 24 layers, 1024 wide, 577 tokens (CLS + 24x24)."""
    return CLIPVisionConfig(
        hidden_size=1024,
        intermediate_size=4096,
        num_hidden_layers=24,
        num_attention_heads=16,
        image_size=336,
        patch_size=14,
        projection_dim=768,
        hidden_act="quick_gelu",
    )


def siglip_so400m_14_384(num_hidden_layers: int = 26) -> SiglipVisionConfig:
    """google/siglip-so400m-patch14-384 as LLaVA-OneVision uses it: last of 27 layers deleted, no head."""
    return SiglipVisionConfig(
        hidden_size=1152,
        intermediate_size=4304,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=16,
        image_size=384,
        patch_size=14,
        vision_use_head=False,
    )


def vicuna_7b() -> LlamaConfig:
    """lmsys/vicuna-7b-v1.5 (Llama-2-7B shape)."""
    return LlamaConfig(
        hidden_size=4096,
        intermediate_size=11008,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=32,
        vocab_size=32000,
        max_position_embeddings=4096,
        tie_word_embeddings=False,
    )


def vicuna_13b() -> LlamaConfig:
    """lmsys/vicuna-13b-v1.5 (Llama-2-13B shape)."""
    return LlamaConfig(
        hidden_size=5120,
        intermediate_size=13824,
        num_hidden_layers=40,
        num_attention_heads=40,
        num_key_value_heads=40,
        vocab_size=32000,
        max_position_embeddings=4096,
        tie_word_embeddings=False,
    )


def qwen2_7b() -> Qwen2Config:
    """Qwen/Qwen2-7B-Instruct (LLaVA-OneVision-7B's LLM): GQA with 4 KV heads, biased q/k/v."""
    return Qwen2Config(
        hidden_size=3584,
        intermediate_size=18944,
        num_hidden_layers=28,
        num_attention_heads=28,
        num_key_value_heads=4,
        vocab_size=152064,
        max_position_embeddings=32768,
        tie_word_embeddings=False,
    )


# ---------------------------------------------------------------------------------------------------
# Compressor shapes


@dataclass(frozen=True)
class CompressorSpec:
    """Dimensions of one compressor instance.

    kind        resampler | spatial_resampler | mlp
    kv_dim      vision feature width (1024 for CLIP-L, 1152 for SigLIP so400m)
    embed_dim   LLM hidden size (the resamplers work at LLM width, as the reference does)
    num_queries compressed tokens per encoded image (None for the MLP: one token per patch)
    num_heads   resampler attention heads (embed / 128)
    """

    kind: str
    kv_dim: int
    embed_dim: int
    num_queries: int | None
    num_heads: int

    @property
    def max_keys_per_query(self) -> int | None:
        """spatial_resampler: each query sees only its RoI-pooled cell; resampler: every patch."""
        return MAX_SPATIAL_KEYS if self.kind == SPATIAL_RESAMPLER else None


def compressor_spec(kind: str, vision: PretrainedConfig, llm: PretrainedConfig) -> CompressorSpec:
    return CompressorSpec(
        kind=check_compressor(kind),
        kv_dim=vision.hidden_size,
        embed_dim=llm.hidden_size,
        num_queries=queries_per_image(kind),
        num_heads=llm.hidden_size // RESAMPLER_HEAD_DIM,
    )


class PerceiverResamplerShape(nn.Module):
    """Parameter replica of the reference `Resampler` / `AdaptSpatialResampler` core.

    query (Q x D), pos_embed (Q x D 2D sin-cos, an nn.Parameter with requires_grad=False as in the
    reference), kv_proj Linear(kv -> D, no bias), one nn.MultiheadAttention(D, heads), LayerNorms
    ln_q / ln_kv / ln_post (eps 1e-6), proj (D x D parameter). The spatial variant has the same
    parameters with Q = 144; its locality lives in the forward (RoI-pooled keys), not in the weights.
    """

    def __init__(self, spec: CompressorSpec):
        super().__init__()
        q, d = spec.num_queries, spec.embed_dim
        self.pos_embed = nn.Parameter(torch.empty(q, d), requires_grad=False)
        self.query = nn.Parameter(torch.empty(q, d))
        self.kv_proj = nn.Linear(spec.kv_dim, d, bias=False) if spec.kv_dim != d else nn.Identity()
        self.attn = nn.MultiheadAttention(d, spec.num_heads)
        self.ln_q = nn.LayerNorm(d, eps=1e-6)
        self.ln_kv = nn.LayerNorm(d, eps=1e-6)
        self.ln_post = nn.LayerNorm(d, eps=1e-6)
        self.proj = nn.Parameter(torch.empty(d, d))


class MlpProjectorShape(nn.Sequential):
    """LLaVA-1.5 `mlp2x_gelu`."""

    def __init__(self, spec: CompressorSpec):
        super().__init__(nn.Linear(spec.kv_dim, spec.embed_dim), nn.GELU(), nn.Linear(spec.embed_dim, spec.embed_dim))


def build_compressor(spec: CompressorSpec) -> nn.Module:
    return MlpProjectorShape(spec) if spec.kind == MLP else PerceiverResamplerShape(spec)


# ---------------------------------------------------------------------------------------------------
# Whole models


@dataclass(frozen=True)
class ModelSpec:
    """One paper model: vision tower + compressor + LLM, and how it lays images out.

    vision_feature_layer  which hidden state feeds the compressor (CLIP: -2 of the full 24-layer tower,
                          which the reference runs entirely; OneVision: -1 of the already truncated tower)
    extra_llm_params      parameters outside the three modules (OneVision's learned image_newline)
    """

    name: str
    vision: PretrainedConfig
    llm: PretrainedConfig
    compressor: str
    strategy: str
    preset: str
    spatial_schema: bool
    vision_feature_layer: int
    description: str
    extra_llm_params: int = 0
    aliases: tuple[str, ...] = field(default=())

    @property
    def vision_has_cls(self) -> bool:
        return isinstance(self.vision, CLIPVisionConfig)

    def compressor_spec(self, compressor: str | None = None) -> CompressorSpec:
        return compressor_spec(compressor or self.compressor, self.vision, self.llm)


def _models() -> dict[str, ModelSpec]:
    specs = []
    for size, llm in (("7b", vicuna_7b), ("13b", vicuna_13b)):
        specs.append(
            ModelSpec(
                name=f"llava-1.5-{size}",
                vision=clip_vit_l14_336(),
                llm=llm(),
                compressor=MLP,
                strategy="pad336",
                preset="pad336",
                spatial_schema=False,
                vision_feature_layer=-2,
                description=f"LLaVA-1.5-{size.upper()}: pad to 336x336, MLP projector, 576 tokens",
            )
        )
        specs.append(
            ModelSpec(
                name=f"llava-uhd-{size}",
                vision=clip_vit_l14_336(),
                llm=llm(),
                compressor=RESAMPLER,
                strategy="uhd",
                preset="uhd-arxiv",
                spatial_schema=True,
                vision_feature_layer=-2,
                description=f"LLaVA-UHD-{size.upper()} (arXiv v1): N<=6 slices + overview, 64 queries each, "
                "spatial schema",
            )
        )
        specs.append(
            ModelSpec(
                name=f"llava-uhd-144-{size}",
                vision=clip_vit_l14_336(),
                llm=llm(),
                compressor=SPATIAL_RESAMPLER,
                strategy="uhd",
                preset="uhd-eccv",
                spatial_schema=True,
                vision_feature_layer=-2,
                description=f"LLaVA-UHD-{size.upper()} (ECCV / released checkpoint): 7 slices, 144 queries each",
            )
        )
    specs.append(
        ModelSpec(
            name="llava-onevision-7b",
            vision=siglip_so400m_14_384(),
            llm=qwen2_7b(),
            compressor=MLP,
            strategy="anyres",
            preset="onevision",
            spatial_schema=False,
            vision_feature_layer=-1,
            description="LLaVA-OneVision-7B: SigLIP so400m (26 layers), anyres_max_9, MLP, Qwen2-7B",
            extra_llm_params=qwen2_7b().hidden_size,  # image_newline
        )
    )
    return {s.name: s for s in specs}


MODELS: dict[str, ModelSpec] = _models()


def spec_of(config, name: str) -> ModelSpec:
    """The ModelSpec of a built model's own config (a converted released checkpoint): its real tower and LLM, so
    the compute report counts the FLOPs of the model that answered, not of a stand-in architecture."""
    return ModelSpec(name=name, vision=config.vision_config, llm=config.text_config, compressor=config.projector,
                     strategy=config.strategy, preset=config.preset, spatial_schema=bool(config.spatial_schema),
                     vision_feature_layer=config.vision_feature_layer, description=f"{name} (its own config)")


def get_model_spec(name: str | ModelSpec) -> ModelSpec:
    if isinstance(name, ModelSpec):
        return name
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODELS)}") from None


def build_vision(config: PretrainedConfig) -> nn.Module:
    if isinstance(config, SiglipVisionConfig):
        return SiglipVisionModel(config)
    if isinstance(config, CLIPVisionConfig):
        return CLIPVisionModel(config)
    raise TypeError(f"unsupported vision config {type(config).__name__}")


def build_llm(config: PretrainedConfig) -> nn.Module:
    if isinstance(config, Qwen2Config):
        return Qwen2ForCausalLM(config)
    if isinstance(config, LlamaConfig):
        return LlamaForCausalLM(config)
    raise TypeError(f"unsupported LLM config {type(config).__name__}")


def build_meta_model(name: str, compressor: str | None = None) -> nn.ModuleDict:
    """The full paper model on the meta device (no memory, no weights): vision_tower, projector, llm."""
    spec = get_model_spec(name)
    with torch.device("meta"):
        modules = nn.ModuleDict(
            {
                "vision_tower": build_vision(spec.vision),
                "projector": build_compressor(spec.compressor_spec(compressor)),
                "llm": build_llm(spec.llm),
            }
        )
        if spec.extra_llm_params:
            modules.register_parameter("image_newline", nn.Parameter(torch.empty(spec.extra_llm_params)))
    return modules


# ---------------------------------------------------------------------------------------------------
# Parameter counts


@dataclass(frozen=True)
class ParamCounts:
    """Parameter counts of one model; `compressor_frozen` are the resampler's fixed sin-cos tables."""

    vision: int
    compressor: int
    compressor_frozen: int
    llm: int
    extra: int = 0

    @property
    def total(self) -> int:
        return self.vision + self.compressor + self.llm + self.extra

    @property
    def compressor_trainable(self) -> int:
        return self.compressor - self.compressor_frozen

    def trainable(self, stage: str) -> int:
        """pretrain: compressor only; finetune: compressor + LLM (+ image_newline). The ViT stays frozen."""
        if stage == "pretrain":
            return self.compressor_trainable + self.extra
        if stage == "finetune":
            return self.compressor_trainable + self.llm + self.extra
        raise ValueError(f"stage must be 'pretrain' or 'finetune', got {stage!r}")

    def as_dict(self) -> dict:
        return {
            "vision": self.vision,
            "compressor": self.compressor,
            "llm": self.llm,
            "extra": self.extra,
            "total": self.total,
            "trainable_pretrain": self.trainable("pretrain"),
            "trainable_finetune": self.trainable("finetune"),
        }


def _numel(module: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def meta_parameter_counts(name: str, compressor: str | None = None) -> ParamCounts:
    """Count by instantiating the transformers classes on the meta device."""
    m = build_meta_model(name, compressor)
    proj = m["projector"]
    return ParamCounts(
        vision=_numel(m["vision_tower"]),
        compressor=_numel(proj),
        compressor_frozen=_numel(proj) - _numel(proj, trainable_only=True),
        llm=_numel(m["llm"]),
        extra=get_model_spec(name).extra_llm_params,
    )


def vision_params_closed_form(cfg: PretrainedConfig) -> int:
    d, f, n_layers, p = cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers, cfg.patch_size
    patches = (cfg.image_size // p) ** 2
    layer = 4 * (d * d + d) + (d * f + f) + (f * d + d) + 2 * 2 * d  # attn (biased) + MLP + 2 LayerNorms
    if isinstance(cfg, CLIPVisionConfig):
        # conv (no bias) + class embedding + positions (CLS + patches) + pre- and post-LayerNorm
        embeddings = 3 * p * p * d + d + (patches + 1) * d + 2 * d
        return embeddings + n_layers * layer + 2 * d
    # SigLIP: conv with bias, positions for patches only, post-LayerNorm, no head
    embeddings = 3 * p * p * d + d + patches * d
    return embeddings + n_layers * layer + 2 * d


def llm_params_closed_form(cfg: PretrainedConfig) -> int:
    d, f, n_layers, v = cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers, cfg.vocab_size
    head_dim = getattr(cfg, "head_dim", None) or d // cfg.num_attention_heads
    q_dim, kv_dim = cfg.num_attention_heads * head_dim, cfg.num_key_value_heads * head_dim
    attn = d * q_dim + 2 * d * kv_dim + q_dim * d
    if isinstance(cfg, Qwen2Config):
        attn += q_dim + 2 * kv_dim  # q/k/v biases
    layer = attn + 3 * d * f + 2 * d  # SwiGLU MLP + 2 RMSNorms
    embeddings = v * d * (1 if cfg.tie_word_embeddings else 2)
    return embeddings + n_layers * layer + d


def compressor_params_closed_form(spec: CompressorSpec) -> tuple[int, int]:
    """(total, frozen) parameters of a compressor."""
    d, kv = spec.embed_dim, spec.kv_dim
    if spec.kind == MLP:
        return kv * d + d + d * d + d, 0
    q = spec.num_queries
    kv_proj = kv * d if kv != d else 0
    mha = 3 * d * d + 3 * d + d * d + d
    total = q * d + q * d + kv_proj + mha + 3 * 2 * d + d * d
    return total, q * d


def closed_form_parameter_counts(name: str, compressor: str | None = None) -> ParamCounts:
    spec = get_model_spec(name)
    comp_total, comp_frozen = compressor_params_closed_form(spec.compressor_spec(compressor))
    return ParamCounts(
        vision=vision_params_closed_form(spec.vision),
        compressor=comp_total,
        compressor_frozen=comp_frozen,
        llm=llm_params_closed_form(spec.llm),
        extra=spec.extra_llm_params,
    )
