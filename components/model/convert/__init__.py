"""Released checkpoints -> `LlavaUhdForConditionalGeneration` (issue #14 §1).

    model = convert_checkpoint("path/to/llava-v1.5-13b", format="llava", vision_tower="path/to/clip-vit-l-14-336")
    convert_to_directory(src, dst, format="llava-hf")   # what `uhd convert SRC DST --format ...` runs

Each format module maps one published layout of weights onto the project's parameter names and returns a
`Converted` (config, state dict, tokenizer with `<image>`); `load_exactly` then loads every weight or raises
with the names of the missing and unexpected keys, so nothing is silently left at random init.

formats
  llava               liuhaotian/llava-v1.5-* (and LLaVA-UHD's own ECCV checkpoints, told apart by the config)
  llava-hf            llava-hf/llava-1.5-*-hf (transformers' LlavaForConditionalGeneration)
  llava-onevision-hf  llava-hf/llava-onevision-*-hf (transformers' LlavaOnevisionForConditionalGeneration)
  llava-onevision     lmms-lab/llava-onevision-* (LLaVA-NeXT's layout)
"""

from __future__ import annotations

import json
import shutil
from importlib import import_module
from pathlib import Path

import torch

from components.atomic import partial_path

from .checkpoint import ConversionError, Converted, load_exactly, sha256_files

CONVERSION_RECORD = "conversion.json"  # beside config.json: what was converted, from which files, and how

# format name -> (module, function): each function is `(src_dir: Path, vision_tower: Path | None) -> Converted`.
FORMATS = {
    "llava": ("llava", "convert_llava"),
    "llava-hf": ("llava", "convert_llava_hf"),
    "llava-onevision-hf": ("onevision", "convert_onevision_hf"),
    "llava-onevision": ("onevision", "convert_onevision"),
}


def converted(src_dir: str | Path, format: str, vision_tower: str | Path | None = None) -> Converted:
    """The checkpoint at `src_dir` as the project's config, state dict and tokenizer (not yet a model)."""
    if format not in FORMATS:
        raise ConversionError(f"unknown checkpoint format {format!r}; choose one of {sorted(FORMATS)}")
    src = Path(src_dir)
    if not src.is_dir():
        raise ConversionError(f"{src} is not a directory: convert reads a local checkpoint directory "
                              "(download it first, e.g. `huggingface-cli download <repo> --local-dir DIR`)")
    module, function = FORMATS[format]
    convert = getattr(import_module(f"{__name__}.{module}"), function)
    return convert(src, Path(vision_tower) if vision_tower else None)


def convert_checkpoint(src_dir: str | Path, format: str, vision_tower: str | Path | None = None):
    """A `LlavaUhdForConditionalGeneration` holding every weight of the checkpoint at `src_dir`, in eval mode and the
    checkpoint's dtype (`.float()` for float32)."""
    return converted(src_dir, format, vision_tower).model()


def convert_to_directory(src_dir: str | Path, dst_dir: str | Path, format: str,
                         vision_tower: str | Path | None = None) -> Path:
    """Write the converted checkpoint as a project model directory: `save_pretrained` (config.json with the slicing
    strategy/preset, compressor and conversation it was trained with, model.safetensors), the tokenizer with
    `<image>`, and conversion.json (format, source files with sha256, notes). `load_saved_model(dst)` reads it, and
    `components.inference.load_dir(dst, "saved", dst)` answers with it. Weights keep the checkpoint's float dtype."""
    dst = Path(dst_dir)
    if dst.exists() and any(dst.iterdir()):
        raise ConversionError(f"{dst} is not empty: convert writes into a new or empty directory")
    result = converted(src_dir, format, vision_tower)
    model = result.model()
    dtype = _stored_dtype(result.state_dict)
    model.to(dtype)
    record = dict(result.source)
    record["dtype"] = str(dtype).removeprefix("torch.")
    record["parameters"] = sum(p.numel() for p in model.parameters())
    record["source_files"] = sha256_files(Path(src_dir))
    if vision_tower:
        record["vision_tower_files"] = sha256_files(Path(vision_tower))
    # Written beside dst and renamed into place: an interrupted conversion leaves no half model at dst.
    partial = partial_path(dst)
    shutil.rmtree(partial, ignore_errors=True)
    try:
        model.save_pretrained(str(partial))
        result.tokenizer.save_pretrained(str(partial))
        (partial / CONVERSION_RECORD).write_text(json.dumps(record, indent=2) + "\n")
        if dst.exists():
            dst.rmdir()  # empty, checked above
        partial.rename(dst)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return dst


def _stored_dtype(state: dict[str, torch.Tensor]) -> torch.dtype:
    """The floating dtype holding most of the checkpoint's values (a 13B fp16 release stays fp16 on disk)."""
    sizes: dict = {}
    for tensor in state.values():
        if tensor.is_floating_point():
            sizes[tensor.dtype] = sizes.get(tensor.dtype, 0) + tensor.numel()
    return max(sizes, key=sizes.get) if sizes else torch.float32


__all__ = ["CONVERSION_RECORD", "FORMATS", "ConversionError", "Converted", "convert_checkpoint",
           "convert_to_directory", "converted", "load_exactly"]
