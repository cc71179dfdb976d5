"""After `ray_trainer.fit`: the final DeepSpeed checkpoint -> a `save_pretrained` directory, and the DVC reports.

`export_checkpoint(cfg, checkpoint_dir, out_dir)` rebuilds the model of `cfg` with the factory
(`components.model.build.build_model`) and loads the module weights of the newest
`step<N>/mp_rank_00_model_states.pt` (ZeRO 0-2 keep the full module there; ZeRO-3 is consolidated with
DeepSpeed's zero_to_fp32). `write_reports` writes the per-step loss/lr CSV (DVC plots) and
the summary metrics JSON (DVC metrics).
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import numpy as np
import torch

from components.atomic import partial_path
from components.model.build import build_model, check_model_dir, load_tokenizer

from . import deepspeed_config
from .loop import TrainConfig


def _step_dir(checkpoint_dir: Path) -> Path:
    latest = checkpoint_dir / "latest"
    if latest.exists():
        return checkpoint_dir / latest.read_text().strip()
    steps = sorted(checkpoint_dir.glob("step*"), key=lambda p: int(p.name[4:]))
    if not steps:
        raise FileNotFoundError(f"no DeepSpeed step<N> directory under {checkpoint_dir}")
    return steps[-1]


# Besides tensors, our client_state holds numpy's RNG state; allow exactly those types and nothing else, so the
# checkpoint is read with weights_only=True (no arbitrary pickles).
_NUMPY_RNG_GLOBALS = [np._core.multiarray._reconstruct, np.ndarray, np.dtype, type(np.dtype("uint32"))]


def module_state(checkpoint_dir: str | Path, zero_stage: int) -> dict:
    step_dir = _step_dir(Path(checkpoint_dir))
    if zero_stage == 3:
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        return get_fp32_state_dict_from_zero_checkpoint(str(checkpoint_dir), tag=step_dir.name)
    with torch.serialization.safe_globals(_NUMPY_RNG_GLOBALS):
        return torch.load(step_dir / "mp_rank_00_model_states.pt", map_location="cpu", weights_only=True)["module"]


def export_checkpoint(cfg: TrainConfig, checkpoint_dir: str | Path, out_dir: str | Path) -> Path:
    """The trained model as `save_pretrained(out_dir)` (config.json + model.safetensors), replacing out_dir."""
    tokenizer = load_tokenizer(cfg.tokenizer, cfg.tokenizer_dir)
    model = build_model(cfg, tokenizer)
    model.load_state_dict(module_state(checkpoint_dir, deepspeed_config.zero_stage(cfg.deepspeed)), strict=True)
    out = Path(out_dir)
    # Written beside the target, then swapped in by renames: a reader never sees a half-written model, and an
    # interrupted export leaves the previous one in place (check_model_dir refuses a partial folder anyway).
    partial, old = partial_path(out), out.with_name(f".{out.name}.old-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(partial)
    check_model_dir(partial)
    if out.exists():
        out.rename(old)
    partial.rename(out)
    shutil.rmtree(old, ignore_errors=True)
    return out


def write_reports(reports_dir: str | Path, stage: str, losses: list[float], lrs: list[float], summary: dict,
                  speed: dict | None = None) -> dict:
    """`<stage>_loss.csv` (step, loss, lr) and `<stage>_metrics.json` (summary + final_loss, steps): tracked, the
    same bytes on a rerun. `speed` (this machine's throughput, wall time and MLflow run) goes to `<stage>_speed.json`,
    gitignored. Returns both together."""
    reports = Path(reports_dir)
    reports.mkdir(parents=True, exist_ok=True)
    with open(reports / f"{stage}_loss.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["step", "loss", "lr"])
        rows = enumerate(zip(losses, lrs, strict=True), start=1)
        writer.writerows((step, f"{loss:.6f}", f"{lr:.8g}") for step, (loss, lr) in rows)
    metrics = {"final_loss": losses[-1] if losses else None, "steps": len(losses), **summary}
    (reports / f"{stage}_metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    if speed is not None:
        (reports / f"{stage}_speed.json").write_text(json.dumps(speed, indent=2, sort_keys=True) + "\n")
    return {**metrics, **(speed or {})}
