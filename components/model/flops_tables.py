"""The rows behind `uhd flops`: TFLOPs per (image size, model column) and training memory per model.

A column is `(model, compressor)`; compressor None means the model's own. The figures come from
`components.model.flops` (formulas in its docstring); this module only decides which rows to compute.
"""

from __future__ import annotations

from components.compression import MLP

from .architectures import MODELS, get_model_spec
from .flops import flops_breakdown, max_micro_batch, training_memory_gb

ONEVISION = "llava-onevision-7b"
Column = tuple[str, str | None]


def column_label(name: str, compressor: str | None) -> str:
    return f"{name}:{compressor}" if compressor else name


def parse_column(text: str) -> Column:
    """`model[:compressor]` -> (model, compressor or None); an unknown model raises ValueError."""
    name, _, compressor = text.partition(":")
    get_model_spec(name)
    return name, compressor or None


def default_columns(model: str) -> list[Column]:
    """The LLaVA-1.5 baseline with the same LLM, `model`, `model` with the MLP, and OneVision."""
    spec = get_model_spec(model)
    baseline = next(
        (m.name for m in MODELS.values() if m.strategy == "pad336" and m.llm.to_dict() == spec.llm.to_dict()),
        None,
    )
    columns: list[Column] = []
    if baseline and baseline != model:
        columns.append((baseline, None))
    columns.append((model, None))
    if spec.compressor != MLP:
        columns.append((model, MLP))
    if model != ONEVISION:
        columns.append((ONEVISION, None))
    return columns


def flops_table(sizes: list[tuple[int, int]], columns: list[Column], **options) -> list[dict]:
    """One row per (size, column): the FLOPs breakdown plus `size` ("WxH") and `column` (its label)."""
    rows = []
    for w, h in sizes:
        for name, compressor in columns:
            b = flops_breakdown(name, w, h, compressor=compressor, **options)
            rows.append({**b.as_dict(), "size": f"{w}x{h}", "column": column_label(name, compressor)})
    return rows


def memory_rows(models: list[str], num_gpus: int, seq_len: int, micro_batch: dict[str, int]) -> list[dict]:
    """Training memory per GPU for each model, stage, ZeRO stage (2, 3) and optimizer offload (off, on),
    with the largest micro-batch that fits a 40 GB and an 80 GB card."""
    rows = []
    for model in models:
        for stage in ("pretrain", "finetune"):
            for zero in (2, 3):
                for offload in (False, True):
                    r = training_memory_gb(model, stage, zero, num_gpus, micro_batch[stage], seq_len, offload)
                    r["max_mb_40gb"] = max_micro_batch(model, stage, zero, num_gpus, 40.0, seq_len, offload)
                    r["max_mb_80gb"] = max_micro_batch(model, stage, zero, num_gpus, 80.0, seq_len, offload)
                    rows.append(r)
    return rows
