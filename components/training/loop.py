"""The per-worker training loop: tiny or paper-scale LLaVA-UHD through DeepSpeed, resumable to the batch.

`train(TrainConfig) -> metrics`. Pretrain trains the compressor only (vision tower and LLM frozen); finetune
trains compressor + LLM. Every `save_every` optimizer steps a DeepSpeed checkpoint is written with a
`client_state` holding the step, the sampler state (epoch, consumed batches) and the torch / numpy / python
RNG states; `resume=True` restarts from the latest one and reproduces the uninterrupted run's later losses.
Works single-process (the env vars DeepSpeed needs are filled in) and under torchrun / Ray Train (already set).
`TrainHooks` lets a launcher (ray_trainer.py) resume from another directory, see every step's metrics and
replace where checkpoints are written, reusing this loop's save/resume logic unchanged.
"""

from __future__ import annotations

import os
import random
import re
import socket
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import deepspeed_config
from .collate import Collate
from .dataset import TrainingSet
from .sampler import LengthGroupedBatchSampler
from .throughput import Throughput

TRAINABLE = {"pretrain": ("compressor", "image_newline"), "finetune": ("compressor", "image_newline", "language_model")}


@dataclass
class TrainConfig:
    validated_dir: str
    layouts_path: str
    raw_root: str
    output_dir: str
    stage: str = "pretrain"  # pretrain | finetune: which set, template and trainable modules
    source: str = "synthetic"
    tokenizer: str = "llama"  # llama | gpt2 | smollm2, loaded offline from tokenizer_dir
    tokenizer_dir: str = "assets/tokenizers/llama"
    template: str | None = None  # default: plain (pretrain), vicuna_v1 (finetune)
    end_of_turn: str | None = None
    compressor: str = "resampler"
    strategy: str = "uhd"
    preset: str = "uhd-arxiv"
    spatial_schema: bool = True  # the layouts table holds the count for either switch
    max_length: int = 2048
    limit: int | None = None  # first N samples of the set
    steps: int = 10
    global_batch: int = 4
    micro_batch: int = 2
    zero_stage: int = 2
    lr: float = 1e-3
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    bf16: bool | str = False
    warmup_ratio: float = 0.03
    seed: int = 0
    num_workers: int = 0
    save_every: int = 0  # optimizer steps between checkpoints; 0 = only at the end
    resume: bool = False
    stop_after: int | None = None  # simulate a crash: return after this many steps (the schedule keeps `steps`)
    architecture: str = "tiny"  # tiny | a components/model/architectures.py MODELS name (llava-uhd-7b, -13b)
    vision_weights: str = ""  # paper scale: save_pretrained dir or hub id loaded into the vision tower
    llm_weights: str = ""  # paper scale: save_pretrained dir or hub id loaded as the language model
    gradient_checkpointing: bool = False
    tune_vision: bool = False  # finetune also trains the ViT
    vision_hidden: int = 32  # tiny model sizes (components/model/tiny.py)
    vision_layers: int = 2
    llm_hidden: int = 64
    llm_layers: int = 2
    init_from: str | None = None  # a save_pretrained directory whose weights start this run (finetune <- pretrain)
    extra: dict = field(default_factory=dict)


@dataclass
class TrainHooks:
    """Launcher hooks. resume_dir: load its `latest` checkpoint (whatever cfg.resume says); on_step(step,
    metrics) after every optimizer step (metrics: loss, lr and the Throughput rates); save(engine, step, client_state)
    replaces the default `engine.save_checkpoint(output_dir/checkpoints, tag=step<N>)` and returns a tag."""

    resume_dir: str | None = None
    on_step: Callable[[int, dict], None] | None = None
    save: Callable[[object, int, dict], str] | None = None


def load_tokenizer(kind: str, asset_dir: str):
    from components.data import tokenizers

    loaders = {"llama": tokenizers.load_llama_tokenizer, "gpt2": tokenizers.load_gpt2_tokenizer,
               "smollm2": tokenizers.load_smollm2_tokenizer}
    tok = loaders[kind](asset_dir)
    tokenizers.add_image_token(tok)
    return tok


def model_config(cfg: TrainConfig, tokenizer):
    """The LlavaUhdConfig of `cfg.architecture`: tiny sizes, or a paper spec's CLIP + Vicuna configs (built in code,
    never fetched) with the vocabulary of `tokenizer` (Vicuna's 32000 + the <image> token)."""
    from components.model.modeling import LlavaUhdConfig, separator_token_ids
    from components.model.tiny import tiny_llava_uhd_config

    image_id, separators = tokenizer.convert_tokens_to_ids("<image>"), separator_token_ids(tokenizer)
    common = {"compressor": cfg.compressor, "strategy": cfg.strategy, "preset": cfg.preset,
              "spatial_schema": cfg.spatial_schema}
    if cfg.architecture == "tiny":
        config = tiny_llava_uhd_config(len(tokenizer), image_id, separators, vision_hidden=cfg.vision_hidden,
                                       vision_layers=cfg.vision_layers, llm_hidden=cfg.llm_hidden,
                                       llm_layers=cfg.llm_layers, **common)
        config.tune_vision = cfg.tune_vision
        return config
    from components.model.architectures import get_model_spec

    spec = get_model_spec(cfg.architecture)
    text = spec.llm.to_dict() | {"vocab_size": len(tokenizer)}
    return LlavaUhdConfig(vision_config=spec.vision.to_dict(), text_config=text, **common,
                          vision_feature_layer=spec.vision_feature_layer, tune_vision=cfg.tune_vision,
                          image_token_id=image_id, slice_separator_id=separators[0], row_separator_id=separators[1],
                          tie_word_embeddings=False)


def _load_pretrained(model, cfg: TrainConfig, vocab_size: int) -> None:
    """Paper scale: the released CLIP and Vicuna weights (safetensors only: no pickles from outside)."""
    from transformers import AutoModelForCausalLM, CLIPVisionModel

    if cfg.vision_weights:
        tower = model.vision_tower.model
        state = CLIPVisionModel.from_pretrained(cfg.vision_weights, use_safetensors=True).state_dict()
        missing, unexpected = tower.load_state_dict(state, strict=False)
        kept = len(getattr(tower, "vision_model", tower).encoder.layers)  # the tower is cut after its feature layer
        layer = [re.search(r"encoder\.layers\.(\d+)\.", k) for k in unexpected]
        extra = [k for k, m in zip(unexpected, layer, strict=True) if m is None or int(m.group(1)) < kept]
        if missing or extra:
            raise ValueError(f"{cfg.vision_weights} does not fit the tower: missing {missing}, unexpected {extra}")
    if cfg.llm_weights:
        llm = AutoModelForCausalLM.from_pretrained(cfg.llm_weights, use_safetensors=True)
        llm.resize_token_embeddings(vocab_size)  # + <image>
        model.language_model = llm


def build_model(cfg: TrainConfig, tokenizer):
    from components.model.modeling import LlavaUhdForConditionalGeneration

    torch.manual_seed(cfg.seed)
    model = LlavaUhdForConditionalGeneration(model_config(cfg, tokenizer))
    if cfg.init_from:
        from safetensors.torch import load_file

        state = load_file(str(Path(cfg.init_from) / "model.safetensors"))
        model.load_state_dict(state, strict=True)  # a different compressor or size is an error, not a warning
    elif cfg.architecture != "tiny":
        _load_pretrained(model, cfg, len(tokenizer))
    trainable = TRAINABLE[cfg.stage] + (("vision_tower",) if cfg.tune_vision and cfg.stage == "finetune" else ())
    for name, param in model.named_parameters():
        param.requires_grad_(name.split(".")[0] in trainable)
    if cfg.gradient_checkpointing:  # non-reentrant: works with the frozen embeddings of pretraining
        model.activation_checkpointing_enable({"use_reentrant": False})
    return model


def _dist_env() -> None:
    """Single process: the variables DeepSpeed's init reads (torchrun and Ray Train set them already).
    The port is a free one the OS picks, so concurrent runs on one machine never collide."""
    for key, value in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "1"), ("MASTER_ADDR", "127.0.0.1")):
        os.environ.setdefault(key, value)
    if "MASTER_PORT" not in os.environ:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            os.environ["MASTER_PORT"] = str(probe.getsockname()[1])


def _rng_state() -> dict:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


def _batches(dataset, sampler, collate, num_workers: int):
    """Endless (batch, sampler_state) pairs; the state counts batches consumed, not prefetched."""
    while True:
        consumed = sampler.position
        loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler, collate_fn=collate,
                                             num_workers=num_workers, persistent_workers=False)
        for batch in loader:
            consumed += 1
            yield batch, sampler.state_dict(consumed=consumed)
        sampler.set_epoch(sampler.epoch + 1)


def _to_device(batch: dict, device, dtype) -> dict:
    out = {k: v.to(device) for k, v in batch.items() if isinstance(v, torch.Tensor)}
    if "pixel_values" in batch:
        out["pixel_values"] = [p.to(device=device, dtype=dtype) for p in batch["pixel_values"]]
        out["image_sizes"] = batch["image_sizes"]
    return out


def train(cfg: TrainConfig, hooks: TrainHooks | None = None) -> dict:
    """Run `cfg.steps` optimizer steps (or until `stop_after`); return losses, LRs, checkpoints and data stats."""
    hooks = hooks or TrainHooks()
    _dist_env()
    import deepspeed
    import deepspeed.ops
    from deepspeed.accelerator import get_accelerator

    if get_accelerator().device_name() == "cpu":  # skip the shm all-reduce JIT build (stack.md §3)
        deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
    world_size, rank = int(os.environ["WORLD_SIZE"]), int(os.environ["RANK"])
    tokenizer = load_tokenizer(cfg.tokenizer, cfg.tokenizer_dir)
    model = build_model(cfg, tokenizer)
    dataset = TrainingSet(cfg.validated_dir, cfg.layouts_path, cfg.raw_root, cfg.stage, tokenizer, model.config,
                          source=cfg.source, template=cfg.template, max_length=cfg.max_length,
                          end_of_turn=cfg.end_of_turn, limit=cfg.limit)
    ds_config = deepspeed_config.build(cfg.zero_stage, cfg.global_batch, cfg.micro_batch, world_size, cfg.lr,
                                       cfg.weight_decay, cfg.grad_clip, cfg.bf16, cfg.warmup_ratio, cfg.steps)
    accumulation = ds_config["gradient_accumulation_steps"]
    engine, _, _, _ = deepspeed.initialize(
        model=model, model_parameters=[p for p in model.parameters() if p.requires_grad], config=ds_config)
    sampler = LengthGroupedBatchSampler(dataset.lengths, cfg.micro_batch, seed=cfg.seed, num_replicas=world_size,
                                        rank=rank)
    ckpt_dir = Path(cfg.output_dir) / "checkpoints"
    step, resumed_from = 0, None
    resume_dir = Path(hooks.resume_dir) if hooks.resume_dir else (ckpt_dir if cfg.resume else None)
    if resume_dir is not None and (resume_dir / "latest").exists():
        path, client = engine.load_checkpoint(str(resume_dir))
        if path is None:
            raise RuntimeError(f"could not load the latest checkpoint under {resume_dir}")
        step, resumed_from = int(client["step"]), path
        sampler.load_state_dict(client["sampler"])
        _set_rng_state(client["rng"])
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    batches = _batches(dataset, sampler, Collate(pad), cfg.num_workers)
    dtype = next(engine.module.parameters()).dtype
    losses, lrs, saved, meter = [], [], [], Throughput(engine.module, engine.device)
    stop = cfg.steps if cfg.stop_after is None else min(cfg.steps, cfg.stop_after)
    engine.train()
    while step < stop:
        lrs.append(float(engine.get_lr()[0]))  # the LR this optimizer step uses
        micro_losses = []
        for _ in range(accumulation):
            batch, sampler_state = next(batches)
            meter.add(batch)
            loss = engine(**_to_device(batch, engine.device, dtype)).loss
            engine.backward(loss)
            engine.step()
            micro_losses.append(float(loss.detach()))
        step += 1
        losses.append(sum(micro_losses) / len(micro_losses))
        if hooks.on_step is not None:
            hooks.on_step(step, {"loss": losses[-1], "lr": lrs[-1], **meter.snapshot()})
        if (cfg.save_every and step % cfg.save_every == 0) or step == cfg.steps:
            client = {"step": step, "sampler": sampler_state, "rng": _rng_state(), "config": asdict(cfg)}
            if hooks.save is not None:
                saved.append(hooks.save(engine, step, client))
            else:
                engine.save_checkpoint(str(ckpt_dir), tag=f"step{step}", client_state=client)
                saved.append(f"step{step}")
    rates = meter.snapshot()
    return {"losses": losses, "lrs": lrs, "steps": step, "checkpoints": saved, "resumed_from": resumed_from,
            "gradient_accumulation": accumulation, "bf16": ds_config["bf16"]["enabled"],
            "seconds": time.perf_counter() - meter.t0, **rates, "data": dataset.stats(),
            "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad)}
