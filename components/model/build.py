"""The one model factory: a tokenizer, the LlavaUhdConfig of a run, a fresh or initialised model, a saved model.

Training, export, evaluation, inference, the MLflow pyfunc, the tests and the benchmarks all get their model and
tokenizer here, so a model is built in one order (hence from one seed, one set of weights) wherever it is built.

`spec` is any object with the run's model attributes (`components.training.loop.TrainConfig` is one):

    architecture            tiny | smollm2-135m (the embedded default: a random CLIP-architecture ViT of the tiny
                            sizes + the real SmolLM2-135M-Instruct, components/model/smollm2.py) | a
                            components/model/architectures.py MODELS name (llava-uhd-7b, -13b, ...)
    tokenizer, tokenizer_dir the tokenizer kind (llama | gpt2 | smollm2 | saved: a save_pretrained tokenizer, e.g.
                            a converted checkpoint's) and its offline asset directory
    compressor, strategy, preset, spatial_schema, tune_vision
    overview_only           optional: encode overviews only (the ECCV pretraining; slicing.train_time)
    vision_hidden, vision_layers, llm_hidden, llm_layers      the tiny sizes (components/model/tiny.py)
    vision_weights, llm_weights   paper scale: safetensors directories or hub ids of CLIP and the LLM
    seed, init_from         the initialisation seed; a save_pretrained directory whose weights start the run

Which parameters a training stage updates (and activation checkpointing) is the training loop's business: the
factory decides what the weights are, never how they are trained.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from components.data import tokenizers
from components.data.conversation import IMAGE_TOKEN

from .architectures import get_model_spec
from .modeling import LlavaUhdConfig, LlavaUhdForConditionalGeneration, separator_token_ids
from .tiny import tiny_llava_uhd_config, tiny_vision_config

SMOLLM2 = "smollm2-135m"  # the embedded default's architecture
SAVED_TOKENIZER = "saved"  # the tokenizer saved in a model directory (`uhd convert` writes one)


def load_saved_tokenizer(model_dir: str | Path):
    """A tokenizer written by `save_pretrained` beside the model (a converted checkpoint's own, `<image>` included)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(model_dir))


def has_saved_tokenizer(model_dir: str | Path) -> bool:
    return (Path(model_dir) / "tokenizer_config.json").is_file()


TOKENIZER_LOADERS = {"llama": tokenizers.load_llama_tokenizer, "gpt2": tokenizers.load_gpt2_tokenizer,
                     "smollm2": tokenizers.load_smollm2_tokenizer, SAVED_TOKENIZER: load_saved_tokenizer}


def load_tokenizer(kind: str, asset_dir: str | Path):
    """The tokenizer `kind` from its offline asset directory, with the `<image>` token added."""
    tok = TOKENIZER_LOADERS[kind](str(asset_dir))
    tokenizers.add_image_token(tok)
    return tok


def model_config(spec, tokenizer) -> LlavaUhdConfig:
    """The LlavaUhdConfig of `spec.architecture`: tiny sizes, or a paper spec's CLIP + Vicuna configs (built in
    code, never fetched) with the vocabulary of `tokenizer` (Vicuna's 32000 + the <image> token)."""
    common = {"compressor": spec.compressor, "strategy": spec.strategy, "preset": spec.preset,
              "spatial_schema": spec.spatial_schema, "conversation": getattr(spec, "conversation", "vicuna_v1"),
              "overview_only": getattr(spec, "overview_only", False)}
    if spec.architecture == "tiny":
        config = tiny_config(tokenizer, vision_hidden=spec.vision_hidden, vision_layers=spec.vision_layers,
                             llm_hidden=spec.llm_hidden, llm_layers=spec.llm_layers, **common)
        config.tune_vision = spec.tune_vision
        return config
    image_id, separators = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN), separator_token_ids(tokenizer)
    if spec.architecture == SMOLLM2:
        return smollm2_config(spec, tokenizer, image_id, separators, common)
    paper = get_model_spec(spec.architecture)
    text = paper.llm.to_dict() | {"vocab_size": len(tokenizer)}
    return LlavaUhdConfig(vision_config=paper.vision.to_dict(), text_config=text, **common,
                          vision_feature_layer=paper.vision_feature_layer, tune_vision=spec.tune_vision,
                          image_token_id=image_id, slice_separator_id=separators[0], row_separator_id=separators[1],
                          tie_word_embeddings=False)


def smollm2_config(spec, tokenizer, image_id: int, separators: tuple[int, int], common: dict) -> LlavaUhdConfig:
    """The embedded default: the real geometry of the tiny ViT (random CLIP architecture, 336 px, patch 14) at
    `vision_hidden` x `vision_layers`, and SmolLM2-135M-Instruct's own config (+ the `<image>` token)."""
    from transformers import AutoConfig

    from .smollm2 import ensure_converted

    text = AutoConfig.from_pretrained(str(ensure_converted())).to_dict() | {"vocab_size": len(tokenizer)}
    vision = tiny_vision_config(spec.strategy, hidden=spec.vision_hidden, layers=spec.vision_layers)
    return LlavaUhdConfig(vision_config=vision.to_dict(), text_config=text, **common,
                          vision_feature_layer=-2 if spec.strategy != "anyres" else -1, tune_vision=spec.tune_vision,
                          image_token_id=image_id, slice_separator_id=separators[0], row_separator_id=separators[1],
                          tie_word_embeddings=False)


def tiny_config(tokenizer, **options) -> LlavaUhdConfig:
    """The debug-size config (components/model/tiny.py; `options` as `tiny_llava_uhd_config`) for `tokenizer`'s
    vocabulary, `<image>` id and separator ids."""
    image_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    return tiny_llava_uhd_config(len(tokenizer), image_id, separator_token_ids(tokenizer), **options)


def tiny_model(tokenizer, seed: int = 0, **options) -> LlavaUhdForConditionalGeneration:
    """A random debug-size model for `tokenizer` from `seed`, without a run config: what the tests and benchmarks
    build when they need "a model" (the same weights as `build_model` of a tiny spec with the same options)."""
    torch.manual_seed(seed)
    return LlavaUhdForConditionalGeneration(tiny_config(tokenizer, **options))


def load_pretrained_weights(model: LlavaUhdForConditionalGeneration, spec, vocab_size: int) -> None:
    """Paper scale: the released CLIP and Vicuna weights (safetensors only: no pickles from outside)."""
    from transformers import CLIPVisionModel

    if spec.vision_weights:
        tower = model.vision_tower.model
        state = CLIPVisionModel.from_pretrained(spec.vision_weights, use_safetensors=True).state_dict()
        missing, unexpected = tower.load_state_dict(state, strict=False)
        kept = len(getattr(tower, "vision_model", tower).encoder.layers)  # the tower is cut after its feature layer
        layer = [re.search(r"encoder\.layers\.(\d+)\.", k) for k in unexpected]
        extra = [k for k, m in zip(unexpected, layer, strict=True) if m is None or int(m.group(1)) < kept]
        if missing or extra:
            raise ValueError(f"{spec.vision_weights} does not fit the tower: missing {missing}, unexpected {extra}")
    if spec.llm_weights:
        load_llm_weights(model, spec.llm_weights, vocab_size)


def load_llm_weights(model: LlavaUhdForConditionalGeneration, source: str | Path, vocab_size: int) -> None:
    """A pretrained causal LM (safetensors directory or hub id) as the model's language model, its vocabulary
    grown by the rows the tokenizer added (`<image>`); the new rows get the mean embedding (HF's default)."""
    from transformers import AutoModelForCausalLM

    llm = AutoModelForCausalLM.from_pretrained(str(source), use_safetensors=True, dtype=torch.float32)
    llm.resize_token_embeddings(vocab_size)
    model.language_model = llm


def build_model(spec, tokenizer) -> LlavaUhdForConditionalGeneration:
    """A fresh model of `spec` from `spec.seed`, then the weights of `spec.init_from` (a save_pretrained
    directory) or, at paper scale, the pretrained vision tower and LLM. Every parameter is left trainable."""
    torch.manual_seed(spec.seed)
    model = LlavaUhdForConditionalGeneration(model_config(spec, tokenizer))
    if spec.init_from:
        from safetensors.torch import load_file

        load_exported_weights(model, load_file(str(Path(spec.init_from) / "model.safetensors")), spec.init_from)
    elif spec.architecture == SMOLLM2:
        from .smollm2 import ensure_converted

        load_llm_weights(model, ensure_converted(), len(tokenizer))
    elif spec.architecture != "tiny":
        load_pretrained_weights(model, spec, len(tokenizer))
    return model


def load_exported_weights(model: LlavaUhdForConditionalGeneration, state: dict, source) -> None:
    """Every weight of a save_pretrained export, exactly: a different compressor or size is an error, not a
    warning. save_pretrained writes a tied pair once (SmolLM2's lm_head IS its embedding), so a key may be absent
    only where its parameter shares storage with one that was loaded."""
    missing, unexpected = model.load_state_dict(state, strict=False)
    params = model.state_dict(keep_vars=True)
    loaded = {p.data_ptr() for name, p in params.items() if name in state}
    untied = [k for k in missing if params[k].data_ptr() not in loaded]
    if untied or unexpected:
        raise ValueError(f"{source} does not fit this model: missing {untied}, unexpected {unexpected}")


def missing_model_files(model_dir: str | Path) -> list[str]:
    """What a `save_pretrained` directory lacks to be whole: config.json and the weights (one safetensors file,
    or an index and every shard it names). Empty = complete."""
    path = Path(model_dir)
    missing = [] if (path / "config.json").is_file() else ["config.json"]
    index = path / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text()).get("weight_map", {}).values()))
        return missing + [s for s in shards if not (path / s).is_file()]
    return missing + ([] if (path / "model.safetensors").is_file() else ["model.safetensors"])


def check_model_dir(model_dir: str | Path) -> Path:
    """`model_dir`, or a clear error when it is not a whole model (an interrupted export, a copy in progress)."""
    missing = missing_model_files(model_dir)
    if missing:
        raise FileNotFoundError(f"{model_dir} is not a complete save_pretrained model (missing {', '.join(missing)}): "
                                "re-run the stage that writes it (e.g. `dvc repro finetune`)")
    return Path(model_dir)


def load_saved_model(model_dir: str | Path, device: str | torch.device = "cpu") -> LlavaUhdForConditionalGeneration:
    """A `save_pretrained` directory (config.json + model.safetensors), on `device`, in eval mode."""
    return LlavaUhdForConditionalGeneration.from_pretrained(str(check_model_dir(model_dir))).to(device).eval()


def load_tokenizer_for(model: LlavaUhdForConditionalGeneration, kind: str, asset_dir: str | Path):
    """The training tokenizer (+ `<image>`), checked against the model so a wrong pairing fails loudly."""
    tok = load_tokenizer(kind, asset_dir)
    image_id = tok.convert_tokens_to_ids(IMAGE_TOKEN)
    if image_id != model.config.image_token_id:
        raise ValueError(f"tokenizer {kind!r} at {asset_dir} gives <image> id {image_id}, the model expects "
                         f"{model.config.image_token_id}: it is not the tokenizer this model was trained with")
    return tok
