"""Batch inference with a trained LLaVA-UHD, from the registry, an MLflow run or a local directory.

    from components.inference import load_model
    uhd = load_model("models:/llava-uhd@champion")     # or models:/llava-uhd/3, models:/m-..., a run id, a dir
    uhd.answer("photo.jpg", "What is written on the sign?")
    uhd.answer_batch([("a.png", "Q1"), ("b.jpg", "Q2")], batch_size=8)
    uhd.layout("photo.jpg").line()                      # grid, slices, visual tokens

Generation is the evaluation runner's (one prompt + generation implementation); the MLflow pyfunc's `predict`
goes through `UhdModel` as well.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from .model import DEFAULT_MAX_NEW_TOKENS, LayoutSummary, UhdModel, load_dir
from .sources import ModelNotFound, ModelSource, alias_exists, resolve

__all__ = ["DEFAULT_MAX_NEW_TOKENS", "LayoutSummary", "ModelNotFound", "ModelSource", "UhdModel", "alias_exists",
           "load_dir", "load_model", "resolve"]


def load_model(source: str | Path, tracking_uri: str | None = None, tokenizer: str | None = None,
               tokenizer_dir: str | Path | None = None, device: str | torch.device = "cpu",
               cache_dir: str | Path | None = None) -> UhdModel:
    """Load `source` (see components.inference.sources) into a `UhdModel`.

    tokenizer / tokenizer_dir: the tokenizer kind and asset directory, needed for a local directory without a
    tokenizer (MLflow models carry theirs; an explicit value overrides). MLflow artifacts are downloaded into
    cache_dir (kept) or a temporary directory removed once the weights are in memory.
    """
    from components.tracking.mlflow_logging import resolve_tracking_uri

    uri = resolve_tracking_uri(tracking_uri)
    if cache_dir is not None:
        return _load(resolve(str(source), uri, cache_dir), str(source), tokenizer, tokenizer_dir, device)
    with tempfile.TemporaryDirectory(prefix="uhd-model-") as tmp:
        return _load(resolve(str(source), uri, tmp), str(source), tokenizer, tokenizer_dir, device)


def _load(found: ModelSource, source: str, tokenizer: str | None, tokenizer_dir: str | Path | None,
          device: str | torch.device) -> UhdModel:
    tok_dir = tokenizer_dir or found.tokenizer_dir
    if tok_dir is None:
        raise ModelNotFound(f"{source}: no tokenizer with the model; pass tokenizer_dir (and tokenizer kind), "
                            "e.g. params.yaml's model.tokenizer_dir")
    return load_dir(found.model_dir, tokenizer or found.tokenizer, tok_dir, device, source=source)
