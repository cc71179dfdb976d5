"""Reading a released checkpoint directory and loading its mapped weights exactly (shared by every format)."""

from __future__ import annotations

import json
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

    def model(self):
        """The model with every weight loaded (`load_exactly`), in eval mode."""
        from components.model.modeling import LlavaUhdForConditionalGeneration

        model = LlavaUhdForConditionalGeneration(self.config)
        load_exactly(model, self.state_dict, self.source.get("format", "checkpoint"))
        return model.eval()


def read_json(src: Path, name: str) -> dict:
    path = src / name
    if not path.is_file():
        raise ConversionError(f"{src} has no {name}: is it the right --format?")
    return json.loads(path.read_text())


def read_state_dict(src: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a checkpoint directory: safetensors (one file or an index's shards), else `.bin` files through
    `torch.load(weights_only=True)` (never arbitrary pickles)."""
    files = sorted(src.glob("*.safetensors")) or sorted(src.glob("*.bin"))
    files = [f for f in files if not f.name.startswith("training_args")]
    if not files:
        raise ConversionError(f"{src} holds no *.safetensors or *.bin weights")
    state: dict[str, torch.Tensor] = {}
    for path in files:
        part = load_file(str(path)) if path.suffix == ".safetensors" else torch.load(path, map_location="cpu",
                                                                                    weights_only=True)
        clash = state.keys() & part.keys()
        if clash:
            raise ConversionError(f"{path.name} repeats keys of another shard: {sorted(clash)[:5]}")
        state.update(part)
    return state


def load_exactly(model, state: dict[str, torch.Tensor], source: str) -> None:
    """Load `state` into `model` with every parameter and buffer accounted for: missing or unexpected keys, or a
    shape that differs, raise with their names. A tied pair (lm_head = embeddings) may be given once."""
    own = model.state_dict(keep_vars=True)
    shapes = [f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
              for k, v in state.items() if k in own and tuple(v.shape) != tuple(own[k].shape)]
    if shapes:
        raise ConversionError(f"{source}: shapes differ: {shapes}")
    missing, unexpected = model.load_state_dict(state, strict=False)
    loaded = {p.data_ptr() for name, p in own.items() if name in state}
    missing = [k for k in missing if own[k].data_ptr() not in loaded]
    if missing or unexpected:
        raise ConversionError(f"{source}: missing keys {missing}, unexpected keys {unexpected}")
