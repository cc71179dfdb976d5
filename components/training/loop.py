"""The per-worker training loop: tiny or paper-scale LLaVA-UHD through DeepSpeed, resumable to the batch.

`train(TrainConfig) -> metrics`. Pretrain trains the compressor only (vision tower and LLM frozen); finetune
trains compressor + LLM. Every `save_every` optimizer steps a DeepSpeed checkpoint is written with a
`client_state` holding the step, the sampler state (epoch, consumed batches) and the torch / numpy / python
RNG states; `resume=True` restarts from the latest one and reproduces the uninterrupted run's later losses.
Works single-process (the env vars DeepSpeed needs are filled in) and under torchrun / Ray Train (already set).
`TrainHooks` lets a launcher (ray_trainer.py) resume from another directory, see every step's metrics and
replace where checkpoints are written, reusing this loop's save/resume logic unchanged.

Trust boundary: resuming goes through DeepSpeed's `engine.load_checkpoint`, which reads every file with
`torch.load(weights_only=False)`: it unpickles, and a pickle can run any code. This loop resumes only from the
folder it is told to: `cfg.output_dir/checkpoints` when `cfg.resume` is set (the run's own output folder, chosen
by the caller) or `hooks.resume_dir` (ray_trainer.py passes Ray's checkpoint, which comes only from the run's own
run dir or the caller's explicit `resume_from`, and checks that). It never looks for checkpoints anywhere else;
point it only at folders that you or this run wrote. (export.py reads the final weights with weights_only=True.)
"""

from __future__ import annotations

import math
import os
import random
import socket
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from components.config import Params
from components.model.build import build_model, load_tokenizer
from components.slicing.train_time import TrainTimeResize
from components.threads import use_cpu_cores

from . import deepspeed_config
from .collate import Collate
from .dataset import TrainingSet
from .precision import autocast_context, use_cpu_autocast
from .sampler import GlobalBatchSampler
from .throughput import Throughput

TRAINABLE = {"pretrain": ("compressor", "image_newline"), "finetune": ("compressor", "image_newline", "language_model")}


# The defaults of every params-backed field are the typed params' (components/config.py), the pretrain recipe's for
# the stage settings: one place for each default. `from_params` is the one mapping from params.
_PARAMS = Params()
_MODEL, _RECIPE = _PARAMS.model, _PARAMS.train.pretrain
# Fields with the same name and meaning in TrainConfig and the params blocks, copied as they are.
MODEL_FIELDS = ("architecture", "vision_weights", "llm_weights", "tokenizer", "conversation", "vision_hidden",
                "vision_layers", "llm_hidden", "llm_layers")
RECIPE_FIELDS = ("max_length", "epochs", "global_batch", "micro_batch", "deepspeed", "lr", "weight_decay", "grad_clip",
                 "batch_order", "bf16", "autocast", "warmup_ratio", "save_every", "gradient_checkpointing")


@dataclass
class TrainConfig:
    validated_dir: str
    layouts_path: str
    raw_root: str
    output_dir: str
    stage: str = "pretrain"  # pretrain | finetune: which set, template and trainable modules
    source: str = _PARAMS.data.source
    tokenizer: str = _MODEL.tokenizer  # llama | gpt2 | smollm2, loaded offline from tokenizer_dir
    tokenizer_dir: str = _MODEL.tokenizer_dir
    template: str | None = None  # default: plain (pretrain), `conversation` (finetune)
    conversation: str = _MODEL.conversation  # the instruction template, recorded in the model for answering
    end_of_turn: str | None = None
    compressor: str = _PARAMS.compressor
    strategy: str = _PARAMS.slicing.strategy
    preset: str = _PARAMS.slicing.active_preset
    spatial_schema: bool = _PARAMS.spatial_schema  # the layouts table holds the count for either switch
    # slicing.train_time (components/slicing/train_time.py): the ECCV training code's resizes before slicing, and
    # overview-only encoding (set for pretraining only; it goes into the model config, whose `plan` follows it)
    textvqa_long_side: int = _PARAMS.slicing.train_time.textvqa_long_side
    resize_as_grid_p: float = _PARAMS.slicing.train_time.resize_as_grid_p
    train_time_seed: int = _PARAMS.slicing.train_time.seed
    overview_only: bool = False
    max_length: int = _RECIPE.max_length
    limit: int | None = None  # first N samples of the set
    epochs: float = _RECIPE.epochs  # passes over the set: the run takes ceil(epochs x full global batches an epoch)
    steps: int | None = None  # exactly this many optimizer steps instead (tests, benchmarks); None: from epochs
    global_batch: int = _RECIPE.global_batch
    micro_batch: int = _RECIPE.micro_batch
    deepspeed: str = _RECIPE.deepspeed  # infra/deepspeed/<name>.json
    lr: float = _RECIPE.lr
    weight_decay: float = _RECIPE.weight_decay
    grad_clip: float = _RECIPE.grad_clip  # 0 = no clipping
    batch_order: str = _RECIPE.batch_order  # components/training/sampler.py ORDERS
    bf16: bool | str = _RECIPE.bf16
    autocast: str = _RECIPE.autocast  # CPU bf16 autocast: auto (where the CPU has AMX/AVX512-BF16) | bf16 | off
    warmup_ratio: float = _RECIPE.warmup_ratio
    seed: int = 0
    num_workers: int = 0
    threads: int = _PARAMS.train.ray.threads_per_worker  # torch CPU threads; 0 = node cores / local workers
    save_every: int = _RECIPE.save_every  # optimizer steps between checkpoints; 0 = only at the end
    resume: bool = False
    stop_after: int | None = None  # simulate a crash: return after this many steps (the schedule keeps its length)
    architecture: str = _MODEL.architecture  # tiny | a components/model/architectures.py MODELS name
    vision_weights: str = _MODEL.vision_weights  # paper scale: save_pretrained dir or hub id for the vision tower
    llm_weights: str = _MODEL.llm_weights  # paper scale: save_pretrained dir or hub id loaded as the language model
    gradient_checkpointing: bool = _RECIPE.gradient_checkpointing
    tune_vision: bool = _PARAMS.train.tune_vision  # finetune also trains the ViT
    finetune_llm_layers: int = _PARAMS.train.finetune_llm_layers  # finetune: the LLM's top N layers; 0 = all
    vision_hidden: int = _MODEL.vision_hidden  # tiny model sizes (components/model/tiny.py)
    vision_layers: int = _MODEL.vision_layers
    llm_hidden: int = _MODEL.llm_hidden
    llm_layers: int = _MODEL.llm_layers
    init_from: str | None = None  # a save_pretrained directory whose weights start this run (finetune <- pretrain)
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_params(cls, params: Params, stage: str, *, validated_dir: str, layouts_path: str, raw_root: str,
                    output_dir: str, init_from: str | None = None, root: str | Path = ".") -> TrainConfig:
        """The config of training stage `stage` under `params`. Relative paths (the data, the output, the
        tokenizer, init_from) are made absolute against `root`: Ray workers do not run in the repository root."""
        recipe = getattr(params.train, stage)
        # only fine-tuning unfreezes the ViT or LLM layers: pretraining never reads these (nor lists them in dvc.yaml)
        finetune_only = ({"tune_vision": params.train.tune_vision,
                          "finetune_llm_layers": params.train.finetune_llm_layers} if stage == "finetune" else {})

        def absolute(path):
            return str((Path(root) / path).resolve()) if path else None

        return cls(
            validated_dir=absolute(validated_dir), layouts_path=absolute(layouts_path), raw_root=absolute(raw_root),
            output_dir=absolute(output_dir), init_from=absolute(init_from), stage=stage, source=params.data.source,
            tokenizer_dir=absolute(params.model.tokenizer_dir), compressor=params.compressor,
            strategy=params.slicing.strategy, preset=params.slicing.active_preset,
            spatial_schema=params.spatial_schema, limit=recipe.limit or None,
            **_train_time_fields(params.slicing.train_time, stage),
            threads=params.train.ray.threads_per_worker,
            **finetune_only,
            **{name: getattr(params.model, name) for name in MODEL_FIELDS},
            **{name: getattr(recipe, name) for name in RECIPE_FIELDS})


    @property
    def train_time(self) -> TrainTimeResize:
        return TrainTimeResize(self.textvqa_long_side, self.resize_as_grid_p, self.train_time_seed)


def _train_time_fields(train_time, stage: str) -> dict:
    return {"textvqa_long_side": train_time.textvqa_long_side, "resize_as_grid_p": train_time.resize_as_grid_p,
            "train_time_seed": train_time.seed,
            "overview_only": stage == "pretrain" and train_time.pretrain_overview_only}


@dataclass
class TrainHooks:
    """Launcher hooks. resume_dir: load its `latest` checkpoint (whatever cfg.resume says); on_step(step,
    metrics) after every optimizer step (metrics: loss, lr and the Throughput rates); save(engine, step, client_state)
    replaces the default `engine.save_checkpoint(output_dir/checkpoints, tag=step<N>)` and returns a tag."""

    resume_dir: str | None = None
    on_step: Callable[[int, dict], None] | None = None
    save: Callable[[object, int, dict], str] | None = None


def trainable_modules(stage: str, tune_vision: bool) -> tuple[str, ...]:
    """Top-level modules a stage updates: pretrain the compressor, finetune also the LLM (and the ViT if asked)."""
    return TRAINABLE[stage] + (("vision_tower",) if tune_vision and stage == "finetune" else ())


def set_trainable(model, stage: str, tune_vision: bool = False, llm_layers: int = 0) -> None:
    """Only the stage's modules get gradients (and optimizer state); the rest is frozen. `llm_layers` > 0: of the
    LLM, only its top `llm_layers` decoder layers (and final norm) learn."""
    trainable = trainable_modules(stage, tune_vision)
    for name, param in model.named_parameters():
        param.requires_grad_(name.split(".")[0] in trainable)
    if "language_model" in trainable and llm_layers:
        _train_top_llm_layers(model.language_model, llm_layers)


def stage_template(cfg: TrainConfig) -> str:
    """LLaVA's recipe: pretraining captions in the plain format, instruction tuning in the model's conversation."""
    return cfg.template or ("plain" if cfg.stage == "pretrain" else cfg.conversation)


def build_stage_model(cfg: TrainConfig, tokenizer):
    """The factory's model of `cfg` (components.model.build), with only the stage's modules trainable and
    activation checkpointing on when asked: how a model is trained is this loop's concern, not the factory's."""
    model = build_model(cfg, tokenizer)
    set_trainable(model, cfg.stage, cfg.tune_vision, cfg.finetune_llm_layers)
    if cfg.gradient_checkpointing:  # non-reentrant: works with the frozen embeddings of pretraining
        model.activation_checkpointing_enable({"use_reentrant": False})
    return model


def _train_top_llm_layers(llm, n: int) -> None:
    """Only the top `n` decoder layers and the final norm learn; the embeddings (and a tied lm_head) stay."""
    decoder = llm.get_decoder()
    if n > len(decoder.layers):
        raise ValueError(f"finetune_llm_layers {n} > the LLM's {len(decoder.layers)} layers")
    llm.requires_grad_(False)
    for module in (*decoder.layers[-n:], decoder.norm):
        module.requires_grad_(True)


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


def sampler_lengths(dataset, order: str) -> list[int]:
    """What the order groups by: LLaVA's word counts for its modality-grouped order (what the reference balances),
    the sequence lengths (text + visual tokens, what a micro-batch pads to) otherwise; only the sign matters to
    `random`."""
    return dataset.modality_lengths if order == "modality_grouped" else dataset.lengths


def planned_steps(cfg: TrainConfig, steps_per_epoch: int, samples: int) -> int:
    """`cfg.steps` when set, else ceil(epochs x steps an epoch) (HF's rule for fractional epochs): quarantined or
    skipped samples shorten the run instead of pushing its last steps into another epoch."""
    if steps_per_epoch == 0:
        raise ValueError(f"{cfg.stage}: {samples} usable samples make no full global batch of {cfg.global_batch}; "
                         "lower train.<stage>.global_batch or add data")
    if cfg.steps is not None:
        return cfg.steps
    return max(1, math.ceil(round(cfg.epochs * steps_per_epoch, 6)))  # rounded: 0.3 x 10 is 3, not 3.0000000000000004


def _mean_over_ranks(value: float, world_size: int) -> float:
    """The step's loss over every rank's micro-batches (rank 0 logs it), not rank 0's share alone."""
    if world_size == 1:
        return value
    total = torch.tensor([value], dtype=torch.float64)
    torch.distributed.all_reduce(total)
    return float(total.item()) / world_size


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
    """Run the planned optimizer steps (or until `stop_after`); return losses, LRs, checkpoints and data stats."""
    hooks = hooks or TrainHooks()
    _dist_env()
    import deepspeed
    import deepspeed.ops
    from deepspeed.accelerator import get_accelerator

    if get_accelerator().device_name() == "cpu":  # skip the shm all-reduce JIT build (stack.md §3)
        deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
    world_size, rank = int(os.environ["WORLD_SIZE"]), int(os.environ["RANK"])
    use_cpu_cores(cfg.threads)
    tokenizer = load_tokenizer(cfg.tokenizer, cfg.tokenizer_dir)
    model = build_stage_model(cfg, tokenizer)
    dataset = TrainingSet(cfg.validated_dir, cfg.layouts_path, cfg.raw_root, cfg.stage, tokenizer, model.config,
                          source=cfg.source, template=stage_template(cfg), max_length=cfg.max_length,
                          end_of_turn=cfg.end_of_turn, limit=cfg.limit, train_time=cfg.train_time)
    ds_config = deepspeed_config.build(cfg.deepspeed, cfg.global_batch, cfg.micro_batch, world_size, cfg.lr,
                                       cfg.weight_decay, cfg.grad_clip, cfg.bf16)
    accumulation = ds_config["gradient_accumulation_steps"]
    # one global batch per optimizer step, whatever the split into workers x micro-batches x accumulation
    sampler = GlobalBatchSampler(sampler_lengths(dataset, cfg.batch_order), cfg.micro_batch, order=cfg.batch_order,
                                 seed=cfg.seed, num_replicas=world_size, rank=rank, accumulation=accumulation)
    steps_per_epoch = sampler.steps_per_epoch()
    total_steps = planned_steps(cfg, steps_per_epoch, len(dataset))
    engine, _, _, _ = deepspeed.initialize(
        model=model, model_parameters=[p for p in model.parameters() if p.requires_grad], config=ds_config,
        lr_scheduler=deepspeed_config.schedule(total_steps, cfg.warmup_ratio))
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
    autocast = use_cpu_autocast(cfg.autocast, torch.device(engine.device))
    losses, lrs, saved, meter = [], [], [], Throughput(engine.module, engine.device)
    stop = total_steps if cfg.stop_after is None else min(total_steps, cfg.stop_after)
    engine.train()
    while step < stop:
        lrs.append(float(engine.get_lr()[0]))  # the LR this optimizer step uses
        micro_losses = []
        for _ in range(accumulation):
            batch, sampler_state = next(batches)
            meter.add(batch)
            with autocast_context(autocast):  # the loss reads logits only where labels are: compute only those
                loss = engine(**_to_device(batch, engine.device, dtype), logits_at_labels=True).loss
            engine.backward(loss)
            engine.step()
            micro_losses.append(float(loss.detach()))
        step += 1
        losses.append(_mean_over_ranks(sum(micro_losses) / len(micro_losses), world_size))
        if rank == 0:  # one line a step: minutes-long CPU stages must show that they move
            print(f"[{cfg.stage}] step {step}/{total_steps} loss {losses[-1]:.4f} lr {lrs[-1]:.2e} "
                  f"{time.perf_counter() - meter.t0:.0f} s", flush=True)
        if hooks.on_step is not None:
            hooks.on_step(step, {"loss": losses[-1], "lr": lrs[-1], **meter.snapshot()})
        if (cfg.save_every and step % cfg.save_every == 0) or step == total_steps:
            client = {"step": step, "sampler": sampler_state, "rng": _rng_state(), "config": asdict(cfg)}
            if hooks.save is not None:
                saved.append(hooks.save(engine, step, client))
            else:
                engine.save_checkpoint(str(ckpt_dir), tag=f"step{step}", client_state=client)
                saved.append(f"step{step}")
    rates = meter.snapshot()
    return {"losses": losses, "lrs": lrs, "steps": step, "planned_steps": total_steps, "epochs": cfg.epochs,
            "steps_per_epoch": steps_per_epoch, "checkpoints": saved, "resumed_from": resumed_from,
            "gradient_accumulation": accumulation, "gradient_clipping": engine.gradient_clipping(),
            "bf16": ds_config["bf16"]["enabled"], "cpu_bf16_autocast": autocast,
            "seconds": time.perf_counter() - meter.t0, **rates,
            "data": {**dataset.stats(), "not_in_a_full_global_batch": sampler.dropped(sampler.epoch)},
            "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad)}
