"""The DeepSpeed config dict and the learning-rate schedule.

Config (`build`): infra/deepspeed/<name>.json (train.<stage>.deepspeed) is the one source of the ZeRO settings;
its "auto" values are exactly the ones computed here from params: the batch arithmetic, AdamW's settings, the
clipping norm and bf16. tests/integration/test_infra.py pins that contract.

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

import json
import math
from pathlib import Path

import torch

DEEPSPEED_DIR = Path(__file__).resolve().parents[2] / "infra" / "deepspeed"


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


def config_path(name: str) -> Path:
    """infra/deepspeed/<name>.json, the one place of every ZeRO setting (a KubeRay job sees the same file: the
    repository is its working_dir)."""
    path = DEEPSPEED_DIR / f"{name}.json"
    if not path.is_file():
        known = sorted(p.stem for p in DEEPSPEED_DIR.glob("*.json"))
        raise ValueError(f"no DeepSpeed config {name!r} in {DEEPSPEED_DIR}; choose one of {known}")
    return path


def zero_stage(name: str) -> int:
    return int(json.loads(config_path(name).read_text())["zero_optimization"]["stage"])


def build(
    name: str,
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
    """infra/deepspeed/<name>.json with each "auto" replaced by the value computed here (batch arithmetic, the
    optimizer's settings, clipping, bf16); an "auto" this function does not compute is an error."""
    if bf16 == "auto":
        bf16 = bf16_supported()
    elif not isinstance(bf16, bool):
        raise ValueError(f"bf16 must be True, False or 'auto', got {bf16!r}")
    if grad_clip < 0:
        raise ValueError(f"grad_clip must be >= 0 (0 = no clipping), got {grad_clip!r}")
    computed = {
        "train_batch_size": global_batch,
        "train_micro_batch_size_per_gpu": micro_batch,
        "gradient_accumulation_steps": gradient_accumulation(global_batch, micro_batch, world_size),
        "gradient_clipping": float(grad_clip),  # DeepSpeed: 0 = none
        "bf16.enabled": bool(bf16),
        "optimizer.params.lr": lr,
        "optimizer.params.weight_decay": weight_decay,
        "optimizer.params.betas": list(betas),
        "optimizer.params.eps": eps,
    }
    return _fill_auto(json.loads(config_path(name).read_text()), computed, name)


def _fill_auto(config: dict, computed: dict, name: str, prefix: str = "") -> dict:
    filled = {}
    for key, value in config.items():
        dotted = prefix + key
        if isinstance(value, dict):
            filled[key] = _fill_auto(value, computed, name, f"{dotted}.")
        elif value == "auto":
            if dotted not in computed:
                raise ValueError(f"infra/deepspeed/{name}.json: {dotted} is \"auto\", which the project does not "
                                 f"compute (it computes {sorted(computed)})")
            filled[key] = computed[dotted]
        else:
            filled[key] = value
    return filled


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
