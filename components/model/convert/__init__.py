"""Released checkpoints -> `LlavaUhdForConditionalGeneration` (issue #14 §1).

    model = convert_checkpoint("path/to/llava-v1.5-13b", format="llava")
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

from importlib import import_module
from pathlib import Path

from .checkpoint import ConversionError, Converted, load_exactly

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
    """A `LlavaUhdForConditionalGeneration` holding every weight of the checkpoint at `src_dir`, in eval mode."""
    return converted(src_dir, format, vision_tower).model()


__all__ = ["FORMATS", "ConversionError", "Converted", "convert_checkpoint", "converted", "load_exactly"]
