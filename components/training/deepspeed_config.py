"""The DeepSpeed config dict, built from a handful of training numbers, and the learning-rate schedule.

Schedule (`schedule`, handed to `deepspeed.initialize(lr_scheduler=...)`; DeepSpeed saves and restores its
state in checkpoints): linear warmup over `max(1, round(warmup_ratio * total_steps))` optimizer steps (none at
ratio 0), then cosine decay towards `cos_min_ratio * lr`, and no optimizer step at lr 0. DeepSpeed's own
WarmupCosineLR starts at iteration -1 (lr 0) and its linear warmup at 0/W, so the first two optimizer steps
moved nothing (2 of the embedded pretraining's 10 steps; HF's schedule wastes one), and its cosine reaches 0
on the last step. Steps count optimizer steps (after gradient accumulation).

`torch_adam: true` is always set: DeepSpeed's fused Adam would JIT-compile a C++ op (minutes on CPU, needs
nvcc on GPU); torch's AdamW needs neither (shared/reference/stack.md §3).
"""

from __future__ import annotations

import math

import torch


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
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
) -> dict:
    """A complete DeepSpeed config (ZeRO stage, batch arithmetic, torch AdamW, bf16); the schedule is `schedule`."""
    if zero_stage not in (0, 1, 2, 3):
        raise ValueError(f"zero_stage must be 0-3, got {zero_stage!r}")
    if bf16 == "auto":
        bf16 = bf16_supported()
    elif not isinstance(bf16, bool):
        raise ValueError(f"bf16 must be True, False or 'auto', got {bf16!r}")
    accumulation = gradient_accumulation(global_batch, micro_batch, world_size)
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
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }


def warmup_steps(total_steps: int, warmup_ratio: float) -> int:
    return max(1, round(warmup_ratio * total_steps)) if warmup_ratio > 0 else 0


def lr_ratio(step: int, total_steps: int, warmup: int, cos_min_ratio: float = 0.0) -> float:
    """The share of the peak lr that optimizer step `step` (1-based) uses: step/warmup, then a cosine from the
    peak over the remaining steps that ends one step short of its floor, so the last step still trains."""
    if step <= warmup:
        return step / warmup
    # clamped: the scheduler also steps after the last optimizer step (a ratio nothing uses), and a run may be
    # all warmup (total_steps == warmup)
    progress = min(1.0, (step - warmup - 1) / max(1, total_steps - warmup))
    return cos_min_ratio + (1 - cos_min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def schedule(total_steps: int, warmup_ratio: float = 0.03, cos_min_ratio: float = 0.0):
    """`deepspeed.initialize(lr_scheduler=...)`: optimizer -> a LambdaLR following `lr_ratio`."""
    if total_steps < 1 or not 0.0 <= warmup_ratio < 1.0:
        raise ValueError(f"need total_steps >= 1 and warmup_ratio in [0, 1), got {total_steps}, {warmup_ratio}")
    warmup = warmup_steps(total_steps, warmup_ratio)

    def make(optimizer):  # LambdaLR passes the number of steps already taken: this step is that + 1
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda done: lr_ratio(done + 1, total_steps, warmup, cos_min_ratio))

    return make
