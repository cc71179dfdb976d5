"""Mixed precision on CPU: bf16 autocast only where the processor multiplies bf16 fast.

CPUs with AMX-BF16 or AVX512-BF16 run a 2048x2048 bf16 matmul ~6x faster than fp32 (~900 vs ~150 GFLOP/s a
core, measured on Sapphire Rapids-class hosts); CPUs without them emulate bf16 and run it ~60x SLOWER than fp32
(1.3 vs 82 GFLOP/s, measured on an AVX2/AVX512 EPYC). So `autocast: auto` turns bf16 autocast on only where
the instruction set has it and keeps the fp32 path everywhere else; `bf16` forces it, `off` never uses it.
On GPUs mixed precision is DeepSpeed's (`bf16: true`), not this.
"""

from __future__ import annotations

import contextlib
import functools
from pathlib import Path

import torch

AUTOCAST_MODES = ("auto", "bf16", "off")
FAST_BF16_FLAGS = ("amx_bf16", "avx512_bf16")  # /proc/cpuinfo flags of native bf16 matrix/vector units


@functools.cache
def cpu_has_fast_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    try:
        text = Path(cpuinfo).read_text()
    except OSError:  # not Linux: no way to tell, so stay on the safe (fp32) side
        return False
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return any(flag in flags for flag in FAST_BF16_FLAGS)


def use_cpu_autocast(mode: str, device: torch.device) -> bool:
    if mode not in AUTOCAST_MODES:
        raise ValueError(f"autocast must be one of {AUTOCAST_MODES}, got {mode!r}")
    if device.type != "cpu" or mode == "off":
        return False
    return mode == "bf16" or cpu_has_fast_bf16()


def autocast_context(enabled: bool):
    """bf16 autocast for the forward (the backward follows it); a no-op context when disabled."""
    return torch.autocast("cpu", dtype=torch.bfloat16) if enabled else contextlib.nullcontext()
