"""Reading a released checkpoint directory and loading its mapped weights exactly (shared by every format)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file


class ConversionError(ValueError):
    """A checkpoint that cannot be converted: the message names what is wrong (keys, files, config fields)."""


@dataclass
class Converted:
    config: object  # LlavaUhdConfig
    state_dict: dict[str, torch.Tensor]  # the project's parameter names
    tokenizer: object  # a PreTrainedTokenizerBase that has `<image>` at config.image_token_id
    source: dict = field(default_factory=dict)  # what was converted: format, files, notes (conversion.json)
    origin: dict[str, str] = field(default_factory=dict)  # project name -> the checkpoint's own name, for errors

    def model(self):
        """The model with every weight loaded (`load_exactly`), in eval mode, in the checkpoint's dtype.

        Its parameters are built on the meta device and the checkpoint's tensors put in their place (no random
        init, no copy): a 13B fp16 checkpoint converts in about its own size of memory instead of that plus a
        float32 model. The model therefore shares its tensors with `state_dict`."""
        from accelerate import init_empty_weights

        from components.model.modeling import LlavaUhdForConditionalGeneration

        with init_empty_weights(include_buffers=False):  # buffers stay real: RoPE, position ids, sin-cos tables
            model = LlavaUhdForConditionalGeneration(self.config)
        load_exactly(model, self.state_dict, self.source.get("format", "checkpoint"), self.origin)
        return model.eval()


def read_json(src: Path, name: str) -> dict:
    path = src / name
    if not path.is_file():
        raise ConversionError(f"{src} has no {name}: is it the right --format?")
    return json.loads(path.read_text())


def weight_files(src: Path) -> list[Path]:
    """A checkpoint directory's weight files: safetensors (one file or an index's shards), else `.bin` files."""
    files = sorted(src.glob("*.safetensors")) or sorted(src.glob("*.bin"))
    files = [f for f in files if not f.name.startswith("training_args")]
    if not files:
        raise ConversionError(f"{src} holds no *.safetensors or *.bin weights")
    return files


def read_state_dict(src: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a checkpoint directory's weight files, `.bin` through `torch.load(weights_only=True)` (never
    arbitrary pickles)."""
    state: dict[str, torch.Tensor] = {}
    for path in weight_files(src):
        part = load_file(str(path)) if path.suffix == ".safetensors" else torch.load(path, map_location="cpu",
                                                                                    weights_only=True)
        clash = state.keys() & part.keys()
        if clash:
            raise ConversionError(f"{path.name} repeats keys of another shard: {sorted(clash)[:5]}")
        state.update(part)
    return state


def load_exactly(model, state: dict[str, torch.Tensor], source: str, origin: dict[str, str] | None = None) -> None:
    """Put `state`'s tensors into `model` (assigned, not copied: the model may be on the meta device) with every
    parameter and buffer accounted for: missing or unexpected keys, or a shape that differs, raise with their names
    (and, through `origin`, the checkpoint's own name of each). A tied pair (lm_head = embeddings) may be given once."""
    origin = origin or {}
    own = model.state_dict(keep_vars=True)
    shapes = [f"{_named(k, origin)}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
              for k, v in state.items() if k in own and tuple(v.shape) != tuple(own[k].shape)]
    if shapes:
        raise ConversionError(f"{source}: shapes differ: {shapes}")
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    model.tie_weights()  # the half of a tied pair that was not given now shares the loaded tensor
    after = model.state_dict(keep_vars=True)
    loaded = {after[k].data_ptr() for k in state if k in after}
    missing = [k for k in missing if after[k].is_meta or after[k].data_ptr() not in loaded]
    if missing or unexpected:
        unexpected = [_named(k, origin) for k in unexpected]
        raise ConversionError(f"{source}: missing keys {missing}, unexpected keys {unexpected}")


def _named(key: str, origin: dict[str, str]) -> str:
    return f"{key} (checkpoint: {origin[key]})" if key in origin and origin[key] != key else key


def rename_keys(state: dict[str, torch.Tensor], rules, strict_format: str | None = None
                ) -> tuple[dict, dict[str, str]]:
    """Each key through the first regex rule `(pattern, replacement)` that matches. A key no rule matches keeps its
    name, so `load_exactly` reports it as unexpected beside the missing ones; with `strict_format` (the format's name)
    such keys raise here instead, at conversion, before a model is built. Returns the renamed state and
    new name -> checkpoint name."""
    compiled = [(re.compile(pattern), replacement) for pattern, replacement in rules]
    renamed, origin, unknown = {}, {}, []
    for key, tensor in state.items():
        new = next((pattern.sub(replacement, key, count=1) for pattern, replacement in compiled
                    if pattern.match(key)), None)
        if new is None:
            unknown.append(key)
            new = key
        if new in renamed:
            raise ConversionError(f"checkpoint keys {origin[new]} and {key} both map to {new}")
        renamed[new], origin[new] = tensor, key
    if strict_format and unknown:
        more = f" (+{len(unknown) - 20} more)" if len(unknown) > 20 else ""
        raise ConversionError(f"{strict_format}: unknown keys {sorted(unknown)[:20]}{more}: is it the right --format?")
    return renamed, origin


def drop_unused_vision_layers(state: dict[str, torch.Tensor], prefix: str, num_layers: int,
                              feature_layer: int) -> list[str]:
    """Remove (in place) the encoder layers after the feature layer: `VisionTower` cuts its encoder there, so the
    checkpoint's later layers never reach the output (LLaVA reads hidden_states[-2]). Returns the dropped keys."""
    keep = num_layers + 1 + feature_layer if feature_layer < 0 else feature_layer
    layer = re.compile(re.escape(prefix) + r"encoder\.layers\.(\d+)\.")
    dropped = [k for k in state if (m := layer.match(k)) and int(m.group(1)) >= keep]
    for key in dropped:
        del state[key]
    return dropped


def sha256_files(directory: Path) -> list[dict]:
    """name, bytes and sha256 of every file directly in `directory` (what conversion.json records as the source)."""
    from components.tracking.mlflow_logging import sha256_file  # imported when writing a record: MLflow is heavy

    return [{"name": path.name, "bytes": path.stat().st_size, "sha256": sha256_file(path)}
            for path in sorted(p for p in directory.iterdir() if p.is_file())]


# Buffers old checkpoints saved that transformers now recomputes from the config (non-persistent): RoPE's inverse
# frequencies (transformers <= 4.31 Llama, e.g. liuhaotian/llava-v1.5-*) and CLIP's position ids.
RECOMPUTED_BUFFERS = re.compile(r".*(\.rotary_emb\.inv_freq|embeddings\.position_ids)$")


def drop_recomputed_buffers(state: dict[str, torch.Tensor]) -> list[str]:
    """Remove (in place) the saved copies of buffers the model derives from its config; returns their keys."""
    dropped = [k for k in state if RECOMPUTED_BUFFERS.match(k)]
    for key in dropped:
        del state[key]
    return dropped
