"""The DeepSpeed config dict, built from a handful of training numbers.

Schedule: DeepSpeed's own `WarmupCosineLR` scheduler (linear warmup from 0 to `lr` over
`max(1, round(warmup_ratio * total_steps))` optimizer steps (DeepSpeed itself warms up over at least 2), then
cosine decay to `cos_min_ratio * lr`); it is saved in and restored from DeepSpeed checkpoints. Steps count
optimizer steps (after gradient accumulation), which is what DeepSpeed's scheduler steps on.

`torch_adam: true` is always set: DeepSpeed's fused Adam would JIT-compile a C++ op (minutes on CPU, needs
nvcc on GPU); torch's AdamW needs neither (shared/reference/stack.md §3).
"""

from __future__ import annotations


def bf16_supported() -> bool:
    """Whether the current DeepSpeed accelerator (CPU here, CUDA on A100s) supports bf16."""
    from deepspeed.accelerator import get_accelerator

    try:
        return bool(get_accelerator().is_bf16_supported())
    except Exception:  # an accelerator that cannot answer does not get bf16
        return False


def gradient_accumulation(global_batch: int, micro_batch: int, world_size: int) -> int:
    """global_batch / (micro_batch * world_size), exactly; raise with the numbers otherwise."""
    for name, value in (("global_batch", global_batch), ("micro_batch", micro_batch), ("world_size", world_size)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    per_step = micro_batch * world_size
    if global_batch % per_step:
        raise ValueError(
            f"global_batch {global_batch} is not divisible by micro_batch {micro_batch} x world_size {world_size} "
            f"= {per_step}: gradient accumulation would be {global_batch / per_step:.3f}"
        )
    return global_batch // per_step


def build(
    zero_stage: int,
    global_batch: int,
    micro_batch: int,
    world_size: int,
    lr: float,
    weight_decay: float = 0.0,
    grad_clip: float = 1.0,
    bf16: bool | str = "auto",
    warmup_ratio: float = 0.03,
    total_steps: int = 1,
    cos_min_ratio: float = 0.0,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
) -> dict:
    """A complete DeepSpeed config (ZeRO stage, batch arithmetic, torch AdamW, WarmupCosineLR, bf16)."""
    if zero_stage not in (0, 1, 2, 3):
        raise ValueError(f"zero_stage must be 0-3, got {zero_stage!r}")
    if not 0.0 <= warmup_ratio < 1.0:
        raise ValueError(f"warmup_ratio must be in [0, 1), got {warmup_ratio}")
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    if bf16 == "auto":
        bf16 = bf16_supported()
    elif not isinstance(bf16, bool):
        raise ValueError(f"bf16 must be True, False or 'auto', got {bf16!r}")
    accumulation = gradient_accumulation(global_batch, micro_batch, world_size)
    warmup = max(1, round(warmup_ratio * total_steps))  # DeepSpeed rejects 0 (and uses at least 2 internally)
    return {
        "train_batch_size": global_batch,
        "train_micro_batch_size_per_gpu": micro_batch,
        "gradient_accumulation_steps": accumulation,
        "gradient_clipping": grad_clip,
        "zero_optimization": {"stage": zero_stage},
        "bf16": {"enabled": bool(bf16)},
        "optimizer": {
            "type": "AdamW",
            "params": {"lr": lr, "weight_decay": weight_decay, "betas": list(betas), "eps": eps, "torch_adam": True},
        },
        "scheduler": {
            "type": "WarmupCosineLR",
            "params": {
                "total_num_steps": total_steps,
                "warmup_num_steps": warmup,
                "warmup_min_ratio": 0.0,
                "cos_min_ratio": cos_min_ratio,
                "warmup_type": "linear",
            },
        },
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
