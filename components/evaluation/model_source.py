"""Which model an evaluation scores: `eval.model` resolved to the model, its tokenizer, a digest of its weights and
what the provenance records about where it came from.

    ''                      the pipeline's own finetune output (models/finetune, the params' tokenizer)
    FORMAT:DIR              a released checkpoint converted on the fly (components.model.convert: llava, llava-hf,
                            llava-onevision-hf, llava-onevision); `eval.vision_tower` for llava's CLIP tower
    models:/NAME@ALIAS ...  a registered model (components.inference.sources: URIs, run ids, logged-model ids)
    DIR                     a save_pretrained directory: one `uhd convert` wrote (its own tokenizer and config) or
                            one this pipeline trained (the params' tokenizer)

A released model is its own paper-scale architecture, so its compute report counts its own FLOPs
(`architectures.spec_of`); the pipeline's tiny models report a paper architecture's instead (compute.py).
"""

from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from components.config import ModelConfig
from components.evaluation.compute import FLOPS_MODEL
from components.model.architectures import ModelSpec, spec_of
from components.model.convert import CONVERSION_RECORD
from components.model.convert.checkpoint import weight_files
from components.tracking.mlflow_logging import sha256_file

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class EvaluatedModel:
    model: object
    tokenizer: object
    sha256: str  # of the weights (several files: of their names and digests)
    source: dict  # {"kind": pipeline | converted | directory | registry, "spec": eval.model, ...}
    flops_model: str | ModelSpec = field(default=FLOPS_MODEL)


def weights_digest(files: list[Path]) -> str:
    """One file: its sha256 (what the pipeline has always recorded); shards: sha256 of `name sha256` lines."""
    if len(files) == 1:
        return sha256_file(files[0])
    lines = "".join(f"{f.name} {sha256_file(f)}\n" for f in sorted(files))
    return hashlib.sha256(lines.encode()).hexdigest()


def placement(device: str = "auto", dtype: str = "auto") -> tuple[torch.device, torch.dtype]:
    """Where and in what precision to answer (eval.device / eval.dtype). auto: float16 on CUDA, the dtype LLaVA's
    and LLaVA-UHD's eval scripts load the model in; float32 on CPU, where half precision is slow and the embedded
    default's answers were measured (benchmarks/eval_batching_bf16.py)."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    where = torch.device(device)
    if where.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"eval.device={device!r} but torch sees no CUDA device: set eval.device: cpu or auto")
    if dtype == "auto":
        dtype = "float16" if where.type == "cuda" else "float32"
    return where, DTYPES[dtype]


def converted_spec(spec: str) -> tuple[str, Path] | None:
    """(format, dir) when `spec` is FORMAT:DIR with a known format, else None."""
    from components.model.convert import FORMATS

    fmt, sep, rest = spec.partition(":")
    return (fmt, Path(rest)) if sep and fmt in FORMATS else None


def load_for_evaluation(spec: str, pipeline_dir: str | Path, model_params: ModelConfig, vision_tower: str = "",
                        tracking_uri: str | None = None) -> EvaluatedModel:
    """The model `spec` names (see the module doc), in eval mode, with its tokenizer."""
    if not spec:
        return _pipeline_model(Path(pipeline_dir), model_params)
    conversion = converted_spec(spec)
    if conversion:
        return _convert_on_the_fly(spec, *conversion, vision_tower)
    if Path(spec).is_dir():
        return _directory(spec, Path(spec), model_params)
    return _registered(spec, model_params, tracking_uri)


def _pipeline_model(model_dir: Path, model_params: ModelConfig) -> EvaluatedModel:
    from components.inference import load_dir

    uhd = load_dir(model_dir, model_params.tokenizer, model_params.tokenizer_dir)  # checks the <image> id too
    return EvaluatedModel(uhd.model, uhd.tokenizer, weights_digest(weight_files(model_dir)),
                          {"kind": "pipeline", "spec": "", "dir": str(model_dir)})


def _convert_on_the_fly(spec: str, fmt: str, checkpoint: Path, vision_tower: str) -> EvaluatedModel:
    from components.model.convert import converted

    conv = converted(checkpoint, fmt, vision_tower or None)
    model = conv.model()
    digest = weights_digest(weight_files(checkpoint))
    source = {"kind": "converted", "spec": spec, "format": fmt, "checkpoint": str(checkpoint),
              "checkpoint_sha256": digest, "vision_tower": vision_tower or None}
    return EvaluatedModel(model, conv.tokenizer, digest, source, spec_of(model.config, f"{fmt}:{checkpoint.name}"))


def _directory(spec: str, model_dir: Path, model_params: ModelConfig) -> EvaluatedModel:
    """A converted directory carries its tokenizer and is its own architecture; a pipeline export is not."""
    if not (model_dir / CONVERSION_RECORD).is_file():
        found = _pipeline_model(model_dir, model_params)
        return EvaluatedModel(found.model, found.tokenizer, found.sha256, {"kind": "directory", "spec": spec})
    model, tokenizer = _load_converted_dir(model_dir)
    return EvaluatedModel(model, tokenizer, weights_digest(weight_files(model_dir)),
                          {"kind": "converted-directory", "spec": spec}, spec_of(model.config, model_dir.name))


def _load_converted_dir(model_dir: Path):
    """A `uhd convert` directory: the model and the checkpoint's own tokenizer (kind `saved`: Llama, Qwen2, not one
    of the params' kinds), checked against the model's `<image>` id like every other pairing."""
    from components.inference import load_dir
    from components.model.build import SAVED_TOKENIZER

    uhd = load_dir(model_dir, SAVED_TOKENIZER, model_dir)
    return uhd.model, uhd.tokenizer


def _registered(spec: str, model_params: ModelConfig, tracking_uri: str | None) -> EvaluatedModel:
    from components.inference import load_dir
    from components.inference.sources import resolve
    from components.tracking.mlflow_logging import resolve_tracking_uri

    with tempfile.TemporaryDirectory(prefix="uhd-eval-model-") as tmp:
        found = resolve(spec, resolve_tracking_uri(tracking_uri), tmp)
        digest = weights_digest(weight_files(found.model_dir))
        if (found.model_dir / CONVERSION_RECORD).is_file():
            model, tokenizer = _load_converted_dir(found.model_dir)
            return EvaluatedModel(model, tokenizer, digest, {"kind": "registry", "spec": spec},
                                  spec_of(model.config, spec))
        uhd = load_dir(found.model_dir, found.tokenizer or model_params.tokenizer,
                       found.tokenizer_dir or model_params.tokenizer_dir, source=spec)
    return EvaluatedModel(uhd.model, uhd.tokenizer, digest, {"kind": "registry", "spec": spec})
