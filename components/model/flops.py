"""Cost model: inference FLOPs per image, and training memory per GPU, from architecture configs alone.

Inference FLOPs (`inference_tflops`, design.md §6)
====================================================
One forward pass for one image and its prompt, counted as 2 x multiply-accumulates of every matrix
product; element-wise work (norms, activations, softmax, RoPE, residual adds, position-embedding
interpolation, RoI-Align) is left out (< 0.5 % here). Token and patch counts come from the slicing
engine (`components.slicing`), never re-derived.

    vision tower  one pass per encoded image (slices + overview, AnyRes crops), each with its own patch
                  count n = patches (+1 CLS for CLIP):
                      L_v * [2 n (4 d^2 + 2 d f) + 4 n^2 d]  +  2 * patches * 3 p^2 d   (patch conv)
                  Attention is bidirectional, so the full n x n square is counted. CLIP features are
                  hidden_states[-2]; the reference runs the whole 24-layer tower and discards the last
                  layer's output, so `vit_layers="full"` (default) counts 24 layers; "truncated" counts
                  only the layers the features need (23; what components.model.vision executes).
                  OneVision's SigLIP is already cut to 26 layers: both options give 26.
    compressor    mlp:       2 P (d_v D + D^2) over all P patches of all images
                  resampler: per image with K patch keys and Q = 64 queries:
                      kv_proj 2 K d_v D + MHA in-proj 2 (Q + 2K) D^2 + scores/AV 4 Q K D + out-proj 2 Q D^2
                      + proj 2 Q D^2
                  spatial_resampler: kv_proj over all K patches, then each of Q = 144 queries attends to
                      its own RoI-pooled cell of k = ph*pw (<= 12) keys: K/V in-proj over Q k rows.
    LLM prefill   n = visual tokens (separators included) + text tokens, per layer
                      2 n (D q_dim + 2 D kv_dim + q_dim D + 3 D F)      (projections, SwiGLU MLP)
                    + attention scores and weighted sum:
                      "causal" (default): 2 * 2 * q_dim * n(n+1)/2  (the lower triangle a causal kernel
                                          computes: flash-attention / SDPA is_causal; Kaplan et al.'s
                                          2 L n_ctx d per token)
                      "full":             4 q_dim n^2  (eager attention's masked square)
                  + lm_head: "all" (default) 2 n D V (transformers 4.37, the reference pin, computes logits
                  at every prefill position), "last" 2 D V, "none" 0.

Prompt length. The paper's TFLOPs column counts the image and its visual tokens only: `text_tokens`
defaults to PAPER_TEXT_TOKENS = 0. Any prompt pushes LLaVA-UHD above its printed 14.6 faster than
LLaVA-1.5 above 15.5 (UHD's ViT + resampler cost is fixed; its LLM sees 122 fewer tokens): with this
formula the UHD figure leaves the 3 % band at 4 text tokens (6 against Table 2's 14.63), while the
LLaVA-1.5 system prompt alone is ~35. The text length at which each of our values reaches the printed one
is 6 (LLaVA-1.5), < 0 (UHD), 35 (UHD w/ MLP): the figures are not mutually consistent under any single
prompt length, and 0 minimises the largest error. Pass a real prompt length for
deployment estimates.

With these defaults: LLaVA-1.5-13B 336x336 15.36 (paper 15.5, -0.9 %), LLaVA-UHD-13B 672x1008 14.95
(14.6, +2.4 %), w/ MLP 112.65 (113.65, -0.9 %), w/ MLP & fixed 2x2 79.63 (80.10, -0.6 %: four 336x336
tiles + a 336x336 overview; adaptive aspect-preserving slices would give 76.03, -5.1 %). `attention=
"full"` fits LLaVA-1.5 exactly but puts the MLP row at +4.9 %, so the causal count is kept.

Training memory (`training_memory_gb`): see its docstring.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from transformers import PretrainedConfig

from components.compression import MLP, SPATIAL_RESAMPLER, effective_spatial_schema
from components.slicing.anyres import AnyresLayout
from components.slicing.layout import Layout, patch_grid
from components.slicing.strategies import plan_layout
from components.slicing.uhd import pool_shape

from .architectures import (
    CompressorSpec,
    ModelSpec,
    closed_form_parameter_counts,
    get_model_spec,
)

PAPER_TEXT_TOKENS = 0
ATTENTION_MODES = ("causal", "full")
LOGITS_MODES = ("all", "last", "none")
VIT_LAYER_MODES = ("full", "truncated")

_DEFAULT_PRESET = {"uhd": "uhd-arxiv", "anyres": "onevision", "pad336": "pad336", "fixed2x2": "fixed2x2"}

# The paper's figures (shared/reference/uhd.md §1): (model, width, height, overrides) -> TFLOPs.
PAPER_FIGURES: dict[str, tuple[str, int, int, dict, float]] = {
    "LLaVA-1.5-13B 336x336 (Table 1)": ("llava-1.5-13b", 336, 336, {}, 15.5),
    "LLaVA-UHD-13B 672x1008 (Table 1)": ("llava-uhd-13b", 672, 1008, {}, 14.6),
    "LLaVA-UHD-13B w/ MLP 672x1008 (Table 2)": ("llava-uhd-13b", 672, 1008, {"compressor": MLP}, 113.65),
    "w/ MLP & fixed 2x2 672x1008 (Table 2)": (
        "llava-uhd-13b",
        672,
        1008,
        {"compressor": MLP, "strategy": "fixed2x2"},
        80.10,
    ),
}


# ---------------------------------------------------------------------------------------------------
# Building blocks


def vit_flops(cfg: PretrainedConfig, patches: int, cls_token: bool, layers: int) -> int:
    """One vision-tower pass over an image of `patches` patches."""
    d, f, p = cfg.hidden_size, cfg.intermediate_size, cfg.patch_size
    n = patches + (1 if cls_token else 0)
    per_layer = 2 * n * (4 * d * d + 2 * d * f) + 4 * n * n * d
    return layers * per_layer + 2 * patches * 3 * p * p * d


def compressor_flops(spec: CompressorSpec, keys: int, keys_per_query: int | None = None) -> int:
    """Compressor FLOPs for one encoded image with `keys` patch features."""
    d, kv = spec.embed_dim, spec.kv_dim
    if spec.kind == MLP:
        return 2 * keys * (kv * d + d * d)
    q = spec.num_queries
    kv_proj = 2 * keys * kv * d if kv != d else 0
    if spec.kind == SPATIAL_RESAMPLER:
        if keys_per_query is None:
            raise ValueError("spatial_resampler needs the RoI pool size (keys per query)")
        attended = q * keys_per_query  # K/V rows after RoI-Align, each query sees only its own cell
        attention = 4 * q * keys_per_query * d
    else:
        attended = keys
        attention = 4 * q * keys * d
    in_proj = 2 * (q + 2 * attended) * d * d
    out_and_proj = 2 * 2 * q * d * d
    return kv_proj + in_proj + attention + out_and_proj


def llm_flops(cfg: PretrainedConfig, n: int, attention: str = "causal", logits: str = "all") -> tuple[int, int, int]:
    """(projections + MLP, attention scores + weighted sum, lm_head) FLOPs of a prefill over n tokens."""
    if attention not in ATTENTION_MODES:
        raise ValueError(f"attention must be one of {ATTENTION_MODES}, got {attention!r}")
    if logits not in LOGITS_MODES:
        raise ValueError(f"logits must be one of {LOGITS_MODES}, got {logits!r}")
    d, f, layers, v = cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers, cfg.vocab_size
    head_dim = getattr(cfg, "head_dim", None) or d // cfg.num_attention_heads
    q_dim, kv_dim = cfg.num_attention_heads * head_dim, cfg.num_key_value_heads * head_dim
    linear = layers * 2 * n * (d * q_dim + 2 * d * kv_dim + q_dim * d + 3 * d * f)
    if attention == "causal":
        attn = layers * 2 * q_dim * n * (n + 1)
    else:
        attn = layers * 4 * q_dim * n * n
    head = {"all": 2 * n * d * v, "last": 2 * d * v if n else 0, "none": 0}[logits]
    return linear, attn, head


# ---------------------------------------------------------------------------------------------------
# Per-image accounting


@dataclass(frozen=True)
class FlopsBreakdown:
    """Forward FLOPs of one image + prompt, split by module. FLOPs are plain counts (not tera)."""

    model: str
    size: tuple[int, int]
    strategy: str
    preset: str
    compressor: str
    spatial_schema: bool
    vit_passes: int
    vit_patches: int
    vit_layers: int
    visual_tokens: int  # LLM-side, separators / newlines included
    text_tokens: int
    vision: int
    compressor_flops: int
    llm_linear: int
    llm_attention: int
    llm_logits: int

    @property
    def llm_tokens(self) -> int:
        return self.visual_tokens + self.text_tokens

    @property
    def llm(self) -> int:
        return self.llm_linear + self.llm_attention + self.llm_logits

    @property
    def total(self) -> int:
        return self.vision + self.compressor_flops + self.llm

    @property
    def tflops(self) -> float:
        return self.total / 1e12

    def as_dict(self) -> dict:
        out = asdict(self)
        out.update(llm_tokens=self.llm_tokens, llm=self.llm, total=self.total, tflops=self.tflops)
        return out


def _resolve_layout(spec: ModelSpec, width: int, height: int, compressor: str, strategy: str | None,
                    preset: str | None, spatial_schema: bool):
    strategy = strategy or spec.strategy
    if preset is None:
        preset = spec.preset if strategy == spec.strategy else _DEFAULT_PRESET.get(strategy, strategy)
    layout = plan_layout(width, height, strategy=strategy, preset=preset)
    if isinstance(layout, Layout):
        layout = layout.with_compressor(compressor, spatial_schema=spatial_schema)
    elif compressor != MLP:
        raise ValueError(f"AnyRes layouts feed every crop's patches to an MLP projector, not {compressor!r}")
    return strategy, preset, layout


def _images(layout, patch_size: int) -> list[tuple[int, tuple[int, int] | None]]:
    """(patches, patch grid (cols, rows) or None) of every image the vision tower encodes."""
    if isinstance(layout, AnyresLayout):
        side = layout.base_resolution // patch_size
        return [(side * side, (side, side))] * layout.num_crops
    if layout.patch_size != patch_size:
        raise ValueError(f"layout patch size {layout.patch_size} != vision tower patch size {patch_size}")
    out = []
    for size in layout.images:
        cols, rows = patch_grid(size, patch_size)
        out.append((cols * rows, (cols, rows)))
    return out


def _vit_layers(spec: ModelSpec, vit_layers: str) -> int:
    if vit_layers not in VIT_LAYER_MODES:
        raise ValueError(f"vit_layers must be one of {VIT_LAYER_MODES}, got {vit_layers!r}")
    total = spec.vision.num_hidden_layers
    if vit_layers == "full":
        return total
    # hidden_states has total + 1 entries (embeddings first): index -k needs total + 1 - k layers
    return total + 1 + spec.vision_feature_layer


def flops_breakdown(
    model: str | ModelSpec,
    width: int,
    height: int,
    compressor: str | None = None,
    text_tokens: int = PAPER_TEXT_TOKENS,
    strategy: str | None = None,
    preset: str | None = None,
    spatial_schema: bool | None = None,
    attention: str = "causal",
    logits: str = "all",
    vit_layers: str = "full",
) -> FlopsBreakdown:
    """Per-module forward FLOPs of `model` on one `width` x `height` image plus `text_tokens` of prompt.

    compressor      overrides the model's own (e.g. "mlp" for LLaVA-UHD w/ MLP, Table 2)
    strategy/preset override the slicing (e.g. strategy="fixed2x2"); preset defaults to the model's own
                    when the strategy is unchanged, else to the strategy's default
    spatial_schema  separators between slices (default: the model's setting; on for LLaVA-UHD)
    attention       "causal" | "full"; logits "all" | "last" | "none"; vit_layers "full" | "truncated"
    """
    if text_tokens < 0:
        raise ValueError(f"text_tokens must be >= 0, got {text_tokens}")
    spec = get_model_spec(model)
    compressor = compressor or spec.compressor
    schema = spec.spatial_schema if spatial_schema is None else spatial_schema
    strategy, preset, layout = _resolve_layout(spec, width, height, compressor, strategy, preset, schema)
    comp = spec.compressor_spec(compressor)
    layers = _vit_layers(spec, vit_layers)
    images = _images(layout, spec.vision.patch_size)

    vision = sum(vit_flops(spec.vision, patches, spec.vision_has_cls, layers) for patches, _ in images)
    comp_flops = 0
    for patches, grid in images:
        per_query = None
        if comp.kind == SPATIAL_RESAMPLER:
            ph, pw = pool_shape((grid[0] * spec.vision.patch_size, grid[1] * spec.vision.patch_size),
                                 spec.vision.patch_size)
            per_query = ph * pw
        comp_flops += compressor_flops(comp, patches, per_query)
    visual = layout.num_tokens
    linear, attn, head = llm_flops(spec.llm, visual + text_tokens, attention=attention, logits=logits)
    return FlopsBreakdown(
        model=spec.name,
        size=(width, height),
        strategy=strategy,
        preset=preset,
        compressor=compressor,
        spatial_schema=effective_spatial_schema(schema, strategy),
        vit_passes=len(images),
        vit_patches=sum(p for p, _ in images),
        vit_layers=layers,
        visual_tokens=visual,
        text_tokens=text_tokens,
        vision=vision,
        compressor_flops=comp_flops,
        llm_linear=linear,
        llm_attention=attn,
        llm_logits=head,
    )


# ---------------------------------------------------------------------------------------------------
# Training: FLOPs of a step, for tokens/s -> MFU

# Dense bf16 peak TFLOPs per GPU (vendor figures, no sparsity), by a substring of torch.cuda.get_device_name().
PEAK_BF16_TFLOPS = {"A100": 312.0, "H100": 989.0, "H200": 989.0, "L40S": 362.0, "A10G": 70.0}


def peak_tflops(device_name: str) -> float | None:
    """The dense bf16 peak of a known GPU; None for CPUs and unknown devices (then no MFU is reported)."""
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in device_name), None)


def training_step_flops(llm: PretrainedConfig, vision: PretrainedConfig, vision_layers: int, vision_has_cls: bool,
                        sequence_lengths: list[int], image_patches: list[int], llm_trainable: bool,
                        vision_trainable: bool) -> int:
    """Model FLOPs of one optimizer micro-step: forward + backward of the LLM over each sequence and of the vision
    tower over each encoded image. A projection's backward costs 2x its forward with weight gradients and 1x
    without (a frozen LLM still back-propagates to the compressor before it); attention scores have no weights, so
    their backward is always 2x; a frozen tower runs forward only. The compressor is left out (under 1% of a step
    at paper scale), so MFU errs low."""
    llm_factor, vision_factor = (3 if llm_trainable else 2), (3 if vision_trainable else 1)
    text = 0
    for n in sequence_lengths:
        linear, attention, logits = llm_flops(llm, n)
        text += 3 * attention + llm_factor * (linear + logits)
    images = sum(vit_flops(vision, patches, vision_has_cls, vision_layers) for patches in image_patches)
    return text + vision_factor * images


def inference_tflops(
    model: str,
    width: int,
    height: int,
    compressor: str | None = None,
    text_tokens: int = PAPER_TEXT_TOKENS,
    strategy: str | None = None,
    preset: str | None = None,
    **options,
) -> float:
    """Forward TFLOPs of one image (design.md §6), e.g. inference_tflops("llava-1.5-13b", 336, 336) ~ 15.4.

    Models: see components.model.architectures.MODELS ("llava-1.5-7b/13b", "llava-uhd-7b/13b",
    "llava-uhd-144-7b/13b", "llava-onevision-7b"). Options as `flops_breakdown`.
    """
    return flops_breakdown(
        model, width, height, compressor=compressor, text_tokens=text_tokens, strategy=strategy, preset=preset,
        **options,
    ).tflops


def paper_comparison(**options) -> list[dict]:
    """Our value for each figure the paper prints, with the relative error."""
    rows = []
    for label, (model, w, h, overrides, paper) in PAPER_FIGURES.items():
        ours = inference_tflops(model, w, h, **{**overrides, **options})
        rows.append({"figure": label, "paper": paper, "ours": ours, "error": ours / paper - 1})
    return rows


# ---------------------------------------------------------------------------------------------------
# Training memory

GIB = 2**30
ZERO_STAGES = (0, 1, 2, 3)
LOGIT_BYTES = 10  # bf16 logits (2) + fp32 upcast (4) + fp32 log-softmax kept for the loss backward (4)
OPTIMIZER_BYTES = 12  # fp32 master weights + Adam m + Adam v
DEFAULT_OVERHEAD_GB = 2.0  # CUDA context + NCCL + allocator fragmentation


def _llm_layer_params(cfg: PretrainedConfig) -> int:
    d, f = cfg.hidden_size, cfg.intermediate_size
    head_dim = getattr(cfg, "head_dim", None) or d // cfg.num_attention_heads
    q_dim, kv_dim = cfg.num_attention_heads * head_dim, cfg.num_key_value_heads * head_dim
    return 2 * d * q_dim + 2 * d * kv_dim + 3 * d * f


def default_images_per_sample(model: str) -> int:
    """Encoded images per sample at the model's largest regular input (LLaVA-UHD 672x1008: 6 + 1)."""
    spec = get_model_spec(model)
    size = {"uhd": (672, 1008), "anyres": (1152, 1152)}.get(spec.strategy, (336, 336))
    return flops_breakdown(model, *size).vit_passes


def training_memory_gb(
    model: str,
    stage: str,
    zero_stage: int,
    num_gpus: int,
    micro_batch: int,
    seq_len: int = 2048,
    offload: bool = False,
    compressor: str | None = None,
    images_per_sample: int | None = None,
    gradient_checkpointing: bool = True,
    overhead_gb: float = DEFAULT_OVERHEAD_GB,
) -> dict:
    """Estimated peak memory per GPU (GiB) of one training stage under DeepSpeed ZeRO, bf16 mixed precision.

    Params: P (all), T (trainable: pretrain = compressor, finetune = compressor + LLM; the ViT is frozen),
    N GPUs, b micro-batch, s sequence length, LLM hidden h, KV width h_kv, MLP width f, layers L, vocab V,
    I encoded images per sample, vision tokens n_v / width d_v / MLP f_v / heads a_v, compressor width D.

        weights       2 P           / (N if ZeRO-3 else 1)             bf16 copy of every parameter
        gradients     2 T           / (N if ZeRO >= 2 else 1)          bf16, reduce-scattered from ZeRO-2 on
        optimizer     12 T          / (N if ZeRO >= 1 else 1)          fp32 master + Adam m, v;
                                                                        0 on the GPU with offload (CPU holds
                                                                        12 T / N + 4 T / N fp32 grads per rank)
        zero3_gather  2 * 2 * P_layer  (ZeRO-3 only)                   the current and the prefetched layer
        activations   (gradient checkpointing on, flash attention: no s^2 term)
            checkpoints   2 L b s h                                     each decoder layer's input
            recompute     2 * 2 b s (6 h + 2 h_kv + 4 f)                one layer's saved tensors (norm in/out,
                                                                        q, k, v, attn out, gate, up, act, prod)
                                                                        and their gradients, during backward
            logits        10 b s V                                      bf16 + fp32 logits + fp32 log-softmax
            compressor    2 b I n_v (4 D) resampler / 2 b I n_v (2 D) mlp   trainable compressor activations
            vision        2 b I n_v (4 d_v + f_v) + 2 b I a_v n_v^2     frozen ViT under no_grad: one layer's
                                                                        transient working set (eager attention)
          without checkpointing: checkpoints 0, recompute (L + 1) * 2 b s (6 h + 2 h_kv + 4 f)
        overhead      overhead_gb                                       CUDA context, NCCL, fragmentation

    Returns the breakdown in GiB, the totals, and whether it fits a 40 GB / 80 GB A100.
    """
    if zero_stage not in ZERO_STAGES:
        raise ValueError(f"zero_stage must be one of {ZERO_STAGES}, got {zero_stage}")
    if num_gpus < 1 or micro_batch < 1 or seq_len < 1:
        raise ValueError("num_gpus, micro_batch and seq_len must be >= 1")
    if offload and zero_stage == 0:
        raise ValueError("CPU optimizer offload needs ZeRO stage >= 1")
    spec = get_model_spec(model)
    counts = closed_form_parameter_counts(model, compressor)
    comp = spec.compressor_spec(compressor)
    total_p, trainable = counts.total, counts.trainable(stage)
    n = num_gpus

    weights = 2 * total_p / (n if zero_stage == 3 else 1)
    gradients = 2 * trainable / (n if zero_stage >= 2 else 1)
    optimizer = 0 if offload else OPTIMIZER_BYTES * trainable / (n if zero_stage >= 1 else 1)
    cpu = (OPTIMIZER_BYTES + 4) * trainable / n if offload else 0
    gather = 2 * 2 * _llm_layer_params(spec.llm) if zero_stage == 3 else 0

    llm = spec.llm
    h, f, layers, v = llm.hidden_size, llm.intermediate_size, llm.num_hidden_layers, llm.vocab_size
    head_dim = getattr(llm, "head_dim", None) or h // llm.num_attention_heads
    h_kv = llm.num_key_value_heads * head_dim
    b, s = micro_batch, seq_len
    one_layer = 2 * b * s * (6 * h + 2 * h_kv + 4 * f)
    if gradient_checkpointing:
        checkpoints, recompute = 2 * layers * b * s * h, 2 * one_layer
    else:
        checkpoints, recompute = 0, (layers + 1) * one_layer
    logit_mem = LOGIT_BYTES * b * s * v
    images = images_per_sample if images_per_sample is not None else default_images_per_sample(model)
    vis = spec.vision
    n_v = (vis.image_size // vis.patch_size) ** 2 + (1 if spec.vision_has_cls else 0)
    comp_act = 2 * b * images * n_v * (4 if comp.kind != MLP else 2) * comp.embed_dim
    vision_act = 2 * b * images * n_v * (4 * vis.hidden_size + vis.intermediate_size)
    vision_act += 2 * b * images * vis.num_attention_heads * n_v * n_v
    activations = checkpoints + recompute + logit_mem + comp_act + vision_act

    parts = {
        "weights": weights,
        "gradients": gradients,
        "optimizer": optimizer,
        "zero3_gather": gather,
        "act_checkpoints": checkpoints,
        "act_recompute": recompute,
        "act_logits": logit_mem,
        "act_compressor": comp_act,
        "act_vision": vision_act,
    }
    gib = {k: val / GIB for k, val in parts.items()}
    model_states = (weights + gradients + optimizer + gather) / GIB
    total = model_states + activations / GIB + overhead_gb
    return {
        "model": model,
        "stage": stage,
        "zero_stage": zero_stage,
        "num_gpus": num_gpus,
        "micro_batch": micro_batch,
        "seq_len": seq_len,
        "offload": offload,
        "images_per_sample": images,
        "total_params": total_p,
        "trainable_params": trainable,
        **gib,
        "activations": activations / GIB,
        "model_states": model_states,
        "overhead": overhead_gb,
        "total": total,
        "cpu_offload_per_rank": cpu / GIB,
        "fits_40gb": total <= 40.0,
        "fits_80gb": total <= 80.0,
    }


def max_micro_batch(model: str, stage: str, zero_stage: int, num_gpus: int, gpu_gb: float, seq_len: int = 2048,
                    offload: bool = False, limit: int = 256) -> int:
    """Largest micro-batch whose estimate fits `gpu_gb` (0 if even 1 does not)."""
    best = 0
    for b in range(1, limit + 1):
        if training_memory_gb(model, stage, zero_stage, num_gpus, b, seq_len, offload)["total"] > gpu_gb:
            break
        best = b
    return best


__all__ = [
    "FlopsBreakdown",
    "PAPER_FIGURES",
    "PAPER_TEXT_TOKENS",
    "compressor_flops",
    "flops_breakdown",
    "inference_tflops",
    "llm_flops",
    "max_micro_batch",
    "paper_comparison",
    "peak_tflops",
    "training_memory_gb",
    "training_step_flops",
    "vit_flops",
]
