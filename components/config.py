"""params.yaml -> frozen, typed config. The one place where params become Python objects.

Unknown keys, missing keys and wrong types are errors that name the offending path, so a typo in
`dvc exp run -S slicing.prset=...` fails at stage start instead of silently using a default.

The defaults below are the embedded profile, the same values as params.yaml (tests/unit/test_params_agree.py pins
that): they are the only defaults of these settings. The library configs built from params (TrainConfig,
RaySettings, EvalPlan, GateConfig, validate_annotations) take theirs from here, each through one function.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from components.compression import COMPRESSORS, RESAMPLER
from components.slicing.limits import MAX_PIXELS
from components.slicing.presets import get_preset
from components.slicing.strategies import ANYRES_PRESETS, PRESETS, STRATEGIES, plan_layout
from components.slicing.train_time import TrainTimeResize


class ConfigError(ValueError):
    pass


class FieldError(ConfigError):
    """One value that breaks its rule; `parse` prefixes the params path, so the message names the exact key."""


def _require(ok: bool, name: str, allowed: str, value) -> None:
    if not ok:
        raise FieldError(f"{name}: must be {allowed}, got {value!r}")


@dataclass(frozen=True)
class SyntheticDataConfig:
    """Size of the embedded dataset (components/data/synthetic.py)."""

    train_scenes: int = 64  # fine-detail scenes for each of pretraining and fine-tuning
    eval_scenes: int = 6  # held-out scenes per benchmark
    easy_vqa_images: int = 32
    fine_line_scenes: int = 0  # extra fine-tuning scenes asked only about their fine lines (benchmarks/fine_detail)

    def __post_init__(self):
        for name, low in (("train_scenes", 1), ("eval_scenes", 1), ("easy_vqa_images", 0), ("fine_line_scenes", 0)):
            _require(getattr(self, name) >= low, name, f">= {low}", getattr(self, name))


@dataclass(frozen=True)
class HubDataConfig:
    """The real datasets (components/data/catalog.py)."""

    limit: int = 0  # first N files (and N per-image URLs) per dataset; 0 = everything
    workers: int = 4  # parallel downloads

    def __post_init__(self):
        _require(self.limit >= 0, "limit", ">= 0 (0 = everything)", self.limit)
        _require(self.workers >= 1, "workers", ">= 1", self.workers)


@dataclass(frozen=True)
class DataConfig:
    source: str = "synthetic"  # synthetic (embedded, offline) | hub (LCS-558K, the 665K mix, benchmarks)
    seed: int = 0
    synthetic: SyntheticDataConfig = field(default_factory=SyntheticDataConfig)
    hub: HubDataConfig = field(default_factory=HubDataConfig)

    def __post_init__(self):
        _require(self.source in ("synthetic", "hub"), "source", "synthetic or hub", self.source)


@dataclass(frozen=True)
class ValidateConfig:
    """Great Expectations checks of the training sets (components/data/validation/)."""

    full_decode_fraction: float = 0.05  # share of images fully decoded to catch truncated files (seeded)
    max_pixels: int = MAX_PIXELS  # decompression-bomb limit (PIL's default MAX_IMAGE_PIXELS)
    seed: int = 0
    workers: int = 0  # processes for the image checks; 0 = one per core
    max_quarantine_fraction: float = 0.2  # the stage fails above this share: something is badly wrong

    def __post_init__(self):
        for name in ("full_decode_fraction", "max_quarantine_fraction"):
            _require(0 <= getattr(self, name) <= 1, name, "in [0, 1]", getattr(self, name))
        _require(self.max_pixels >= 1, "max_pixels", ">= 1", self.max_pixels)
        _require(self.workers >= 0, "workers", ">= 0 (0 = one per core)", self.workers)


@dataclass(frozen=True)
class TrainTimeConfig:
    """The ECCV training code's image handling (components/slicing/train_time.py), training only: the layouts
    stage counts tokens with it and the training dataset makes pixels with it; evaluation never applies it."""

    textvqa_long_side: int = 0  # paths containing "textvqa": long side resized to this before slicing; 0 = off
    resize_as_grid_p: float = 0.0  # share of other images resized to area 6 x 336^2 unless they give 6 slices
    seed: int = 0  # the per-image draw of resize_as_grid is a hash of (seed, path)
    pretrain_overview_only: bool = False  # pretraining encodes the overview only (ECCV `--single True`)

    def __post_init__(self):
        _require(self.textvqa_long_side >= 0, "textvqa_long_side", ">= 0 (0 = off)", self.textvqa_long_side)
        _require(0 <= self.resize_as_grid_p <= 1, "resize_as_grid_p", "in [0, 1] (0 = off)", self.resize_as_grid_p)

    @property
    def resize(self) -> TrainTimeResize:
        return TrainTimeResize(self.textvqa_long_side, self.resize_as_grid_p, self.seed)

    @property
    def active(self) -> bool:
        return self.resize.active or self.pretrain_overview_only


@dataclass(frozen=True)
class SlicingConfig:
    """Each strategy keeps its own preset key, so `-S slicing.strategy=anyres` is a one-value switch."""

    strategy: str = "uhd"  # uhd | anyres | fixed2x2 | pad336
    preset: str = "uhd-arxiv"  # uhd-arxiv | uhd-eccv | uhd-eccv-eval | minicpm | uhd-v2 | paper
    anyres_preset: str = "onevision"  # onevision (HF arithmetic) | onevision-repo (LLaVA-NeXT's)
    train_time: TrainTimeConfig = field(default_factory=TrainTimeConfig)

    def __post_init__(self):
        _require(self.strategy in STRATEGIES, "strategy", f"one of {list(STRATEGIES)}", self.strategy)
        _require(self.preset in PRESETS, "preset", f"one of {sorted(PRESETS)}", self.preset)
        _require(self.anyres_preset in ANYRES_PRESETS, "anyres_preset", f"one of {sorted(ANYRES_PRESETS)}",
                 self.anyres_preset)
        if not self.train_time.active:
            return
        off = "turn it off (textvqa_long_side: 0, resize_as_grid_p: 0.0, pretrain_overview_only: false)"
        if self.strategy != "uhd":  # the reference's handling is defined on UHD slicing only
            raise FieldError(f"train_time: applies to strategy uhd only, got strategy {self.strategy!r}; {off}")
        if get_preset(self.preset).pre_resize_long_side is not None:  # it would undo the train-time resize
            raise FieldError(f"train_time: preset {self.preset!r} pre-resizes every image itself; use a training "
                             f"preset (e.g. uhd-eccv) or {off}")

    @property
    def active_preset(self) -> str:
        """The preset name that applies to the chosen strategy (baselines name their own)."""
        return {"uhd": self.preset, "anyres": self.anyres_preset}.get(self.strategy, self.strategy)

    def plan(self, width: int, height: int):
        return plan_layout(width, height, self.strategy, self.active_preset)


@dataclass(frozen=True)
class LayoutsConfig:
    batch_rows: int = 4096  # rows per record batch: bounds memory whatever the table size
    workers: int = 0  # processes; 0 = one per core

    def __post_init__(self):
        _require(self.batch_rows >= 1, "batch_rows", ">= 1", self.batch_rows)
        _require(self.workers >= 0, "workers", ">= 0 (0 = one per core)", self.workers)


@dataclass(frozen=True)
class ClusterConfig:
    # http(s)://head:8265: the job server; the training stages submit themselves as Ray jobs (training/submit.py).
    # ray://host:10001 or auto: ray.init there. Empty: local processes.
    address: str = ""


# tiny: model/tiny.py; smollm2-135m: model/build.py + model/smollm2.py; the others: model/architectures.py MODELS
ARCHITECTURES = ("tiny", "smollm2-135m", "llava-uhd-7b", "llava-uhd-13b", "llava-uhd-144-7b", "llava-uhd-144-13b")


@dataclass(frozen=True)
class ModelConfig:
    """The model the training stages build. `smollm2-135m` (the embedded default) is a random CLIP-architecture ViT
    of the sizes below + the real SmolLM2-135M-Instruct (components/model/smollm2.py); `tiny` (tests, the smoke
    profile) is random at the sizes below; a paper architecture takes CLIP ViT-L/14-336 + Vicuna from
    components/model/architectures.py and loads `vision_weights` / `llm_weights` (a local save_pretrained dir
    or a hub id, safetensors only) on each worker."""

    architecture: str = "smollm2-135m"  # smollm2-135m | tiny | llava-uhd-7b | llava-uhd-13b | llava-uhd-144-13b (ECCV)
    vision_weights: str = ""  # paper scale: e.g. openai/clip-vit-large-patch14-336; "" = random init
    llm_weights: str = ""  # paper scale: e.g. lmsys/vicuna-13b-v1.5; "" = random init
    tokenizer: str = "smollm2"  # llama | gpt2 | smollm2
    tokenizer_dir: str = "assets/tokenizers/smollm2"
    # instruction tuning's (and so answering's) conversation template; pretraining is always LLaVA's plain
    conversation: str = "chat_template"  # vicuna_v1 (LLaVA-1.5) | chat_template (the LLM's own)
    vision_hidden: int = 64  # the ViT of tiny and smollm2-135m
    vision_layers: int = 2
    llm_hidden: int = 64
    llm_layers: int = 2

    def __post_init__(self):
        _require(self.architecture in ARCHITECTURES, "architecture", f"one of {list(ARCHITECTURES)}",
                 self.architecture)
        _require(self.tokenizer in ("llama", "gpt2", "smollm2"), "tokenizer", "llama, gpt2 or smollm2", self.tokenizer)
        _require(self.conversation in ("vicuna_v1", "chat_template"), "conversation", "vicuna_v1 or chat_template",
                 self.conversation)
        for name in ("vision_hidden", "vision_layers", "llm_hidden", "llm_layers"):
            _require(getattr(self, name) >= 1, name, ">= 1", getattr(self, name))


# infra/deepspeed/<name>.json: the one source of the ZeRO settings (components/training/deepspeed_config.py)
DEEPSPEED_CONFIGS = ("zero2", "zero2_offload", "zero3", "zero3_offload")
BATCH_ORDERS = ("random", "modality_grouped", "length_grouped")  # components/training/sampler.py


@dataclass(frozen=True)
class TrainStageConfig:
    """One training stage (components/training/loop.py TrainConfig)."""

    epochs: float = 0.3  # passes over the validated set; steps = ceil(epochs x full global batches per epoch)
    global_batch: int = 4
    micro_batch: int = 2
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup_ratio: float = 0.03
    grad_clip: float = 1.0  # max gradient norm; 0 = no clipping (the reference: DeepSpeed's default, unclipped)
    # random (LLaVA pretraining) | modality_grouped (LLaVA fine-tuning) | length_grouped (pads least: the CPU default)
    batch_order: str = "length_grouped"
    deepspeed: str = "zero2"  # infra/deepspeed/<name>.json: zero2 | zero2_offload | zero3 | zero3_offload
    max_length: int = 2048
    save_every: int = 0  # optimizer steps between checkpoints; 0 = only at the end
    limit: int = 0  # first N samples of the set; 0 = all
    bf16: bool = False  # A100: true (the paper, DeepSpeed bf16)
    autocast: str = "auto"  # CPU: bf16 autocast where the CPU has AMX/AVX512-BF16 (auto) | bf16 | off (fp32)
    gradient_checkpointing: bool = False  # paper: true (activations are most of the memory at seq 2048)

    def __post_init__(self):
        for name in ("global_batch", "micro_batch", "max_length"):
            _require(getattr(self, name) >= 1, name, ">= 1", getattr(self, name))
        _require(self.epochs > 0, "epochs", "> 0 (fractions train part of an epoch)", self.epochs)
        _require(self.global_batch % self.micro_batch == 0, "global_batch",
                 f"a multiple of micro_batch ({self.micro_batch})", self.global_batch)
        _require(self.lr > 0, "lr", "> 0", self.lr)
        _require(self.weight_decay >= 0, "weight_decay", ">= 0", self.weight_decay)
        _require(0 <= self.warmup_ratio < 1, "warmup_ratio", "in [0, 1)", self.warmup_ratio)
        _require(self.grad_clip >= 0, "grad_clip", ">= 0 (0 = no clipping)", self.grad_clip)
        _require(self.batch_order in BATCH_ORDERS, "batch_order", f"one of {list(BATCH_ORDERS)}", self.batch_order)
        _require(self.deepspeed in DEEPSPEED_CONFIGS, "deepspeed", f"one of {list(DEEPSPEED_CONFIGS)}",
                 self.deepspeed)
        _require(self.autocast in ("auto", "bf16", "off"), "autocast", "auto, bf16 or off", self.autocast)
        _require(self.save_every >= 0, "save_every", ">= 0 (0 = only at the end)", self.save_every)
        _require(self.limit >= 0, "limit", ">= 0 (0 = all)", self.limit)


@dataclass(frozen=True)
class RayTrainConfig:
    num_workers: int = 1
    max_failures: int = 1  # worker-group restarts from the latest checkpoint
    storage_path: str = "ray_results"  # shared storage on a cluster (every worker and the job driver see it)
    use_gpu: bool = False  # one GPU per worker (NCCL) instead of CPU workers (gloo)
    # CPU workers: torch threads each; 0 = the node's cores / the workers on that node (Ray and `make` set
    # OMP_NUM_THREADS=1, which would leave a single training process on one core of two)
    threads_per_worker: int = 0

    def __post_init__(self):
        _require(self.num_workers >= 1, "num_workers", ">= 1", self.num_workers)
        _require(self.max_failures >= 0, "max_failures", ">= 0", self.max_failures)
        _require(self.threads_per_worker >= 0, "threads_per_worker", ">= 0 (0 = cores / workers)",
                 self.threads_per_worker)


@dataclass(frozen=True)
class TrainConfigs:
    pretrain: TrainStageConfig = field(default_factory=TrainStageConfig)
    # The embedded profile's rate (params.yaml); the paper's 2e-5 is in params/paper-*.yaml.
    finetune: TrainStageConfig = field(default_factory=lambda: TrainStageConfig(epochs=0.42, lr=2e-4))
    ray: RayTrainConfig = field(default_factory=RayTrainConfig)
    tune_vision: bool = False  # also train the ViT in finetune (paper Table 4; the authors: "we do not train the ViTs")
    # finetune trains the LLM's top N decoder layers (+ final norm) only; 0 = the whole LLM (LLaVA's recipe). On 2
    # CPU cores the whole SmolLM2 costs ~5x a step of the top layers (the backward reaches the compressor anyway).
    finetune_llm_layers: int = 6

    def __post_init__(self):
        _require(self.finetune_llm_layers >= 0, "finetune_llm_layers", ">= 0 (0 = the whole LLM)",
                 self.finetune_llm_layers)
        per_step = self.ray.num_workers
        for stage in ("pretrain", "finetune"):  # DeepSpeed needs global = micro x workers x accumulation exactly
            recipe = getattr(self, stage)
            _require(recipe.global_batch % (recipe.micro_batch * per_step) == 0, f"{stage}.global_batch",
                     f"a multiple of {stage}.micro_batch x ray.num_workers ({recipe.micro_batch} x {per_step})",
                     recipe.global_batch)


@dataclass(frozen=True)
class TrackingConfig:
    uri: str = ""  # MLflow tracking URI; empty = $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db in the repo root
    experiment_prefix: str = "llava-uhd"


BENCHMARKS = ("textvqa", "pope", "gqa", "mme", "scienceqa", "mmbench", "mmbench_cn", "vqav2", "vizwiz")


@dataclass(frozen=True)
class EvalConfig:
    """The evaluate stage (pipelines/evaluate.py, shared/reference/eval.md). `protocol` names a row of
    components/evaluation/protocols.py (decoding, pre-resize, batch size and image loading of one paper's scripts);
    the evaluation package checks the name, since this module sits below it."""

    benchmarks: tuple[str, ...] = BENCHMARKS[:7]
    protocol: str = "llava-1.5"  # llava-1.5 | uhd-eccv (components/evaluation/protocols.py)
    batch_size: int = 8  # 0 = the protocol's (the references run 1)
    num_beams: dict[str, int] = field(default_factory=dict)  # per-benchmark override of the protocol's beams
    max_new_tokens: int = 8  # 0 = each benchmark's own (LLaVA-1.5: 128); embedded answers: <= 7 (6 digits + end)
    extreme_aspect: tuple[str, ...] = ("textvqa",)  # also run with each image padded to twice its long side
    # A model this pipeline did not train (released/dvc.yaml; components/evaluation/model_source.py): '' = none (the
    # main DAG's evaluate stage scores the pipeline's own finetune output); a converted or save_pretrained directory;
    # a registry URI (models:/llava-uhd@champion); or FORMAT:DIR, a released checkpoint converted on the fly
    # (FORMAT: llava | llava-hf | llava-onevision-hf | llava-onevision).
    model: str = ""
    vision_tower: str = ""  # the CLIP directory `llava:` checkpoints need (their tower is not in the checkpoint)
    paper_row: str = ""  # the published row results.md puts the scores beside, with the difference ('' = none)
    device: str = "auto"  # auto (cuda when there is one, else cpu) | cpu | cuda | cuda:N
    dtype: str = "auto"  # auto (float16 on cuda, as the references; float32 on cpu) | float32 | bfloat16 | float16
    # an existing LLaVA playground/data/eval folder read as is by both evaluate stages; '' = by data.source (embedded:
    # data/raw/synthetic/eval; hub: the downloads linked into data/raw/eval_hub, components/data/eval_layout.py)
    root: str = ""

    # keys of older params files, with what replaced them (parse names the replacement instead of "unknown key")
    RETIRED = {"decoding": "eval.protocol (llava-1.5 = the old `llava`, uhd-eccv = `uhd-scripts` + pre_resize 1024)",
               "pre_resize": "eval.protocol (uhd-eccv pre-resizes to 1024, llava-1.5 does not)"}

    def __post_init__(self):
        _require(set(self.benchmarks) <= set(BENCHMARKS), "benchmarks", f"among {list(BENCHMARKS)}", self.benchmarks)
        _require(set(self.extreme_aspect) <= set(self.benchmarks), "extreme_aspect", "a subset of eval.benchmarks",
                 self.extreme_aspect)
        _require(set(self.num_beams) <= set(BENCHMARKS), "num_beams", f"keyed by {list(BENCHMARKS)}", self.num_beams)
        _require(all(b >= 1 for b in self.num_beams.values()), "num_beams", "beam counts >= 1", self.num_beams)
        _require(bool(self.protocol), "protocol", "a protocol name (llava-1.5 | uhd-eccv)", self.protocol)
        _require(self.batch_size >= 0, "batch_size", ">= 0 (0 = the protocol's)", self.batch_size)
        _require(self.max_new_tokens >= 0, "max_new_tokens", ">= 0 (0 = each benchmark's own)", self.max_new_tokens)
        _require(self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:"), "device",
                 "auto, cpu, cuda or cuda:N", self.device)
        _require(self.dtype in ("auto", "float32", "bfloat16", "float16"), "dtype",
                 "auto, float32, bfloat16 or float16", self.dtype)
        _require(self.root == self.root.strip(), "root", "a folder path without surrounding spaces ('' = by "
                 "data.source)", self.root)


@dataclass(frozen=True)
class RegistryConfig:
    """The register stage: MLflow Model Registry name, alias gates (components/tracking/registry.py)."""

    model_name: str = "llava-uhd"
    headline: tuple[str, ...] = ("textvqa", "pope", "gqa", "mme", "scienceqa", "mmbench", "mmbench_cn")
    tolerance: float = 0.5  # a headline score may fall this many points below the champion's and still promote
    max_quarantine_increase: float = 0.01  # validation regression gate: quarantined share vs the champion's

    def __post_init__(self):
        _require(bool(self.model_name), "model_name", "a non-empty name", self.model_name)
        _require(self.tolerance >= 0, "tolerance", ">= 0 (points)", self.tolerance)
        _require(self.max_quarantine_increase >= 0, "max_quarantine_increase", ">= 0 (a fraction)",
                 self.max_quarantine_increase)


@dataclass(frozen=True)
class Params:
    data: DataConfig = field(default_factory=DataConfig)
    validate: ValidateConfig = field(default_factory=ValidateConfig)
    slicing: SlicingConfig = field(default_factory=SlicingConfig)
    layouts: LayoutsConfig = field(default_factory=LayoutsConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfigs = field(default_factory=TrainConfigs)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    registry: RegistryConfig = field(default_factory=RegistryConfig)
    compressor: str = RESAMPLER  # one of components.compression.COMPRESSORS
    spatial_schema: bool = True

    def __post_init__(self):
        _require(self.compressor in COMPRESSORS, "compressor", f"one of {list(COMPRESSORS)}", self.compressor)


def parse(cls, data, path: str = ""):
    """Build dataclass `cls` from a mapping, recursively; reject unknown keys and wrong types."""
    if not isinstance(data, dict):
        raise ConfigError(f"{path or 'params'}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    retired = {k: v for k, v in getattr(cls, "RETIRED", {}).items() if k in data}
    if retired:
        raise ConfigError("; ".join(f"{path + '.' if path else ''}{k} was replaced by {v}: remove it"
                                    for k, v in retired.items()))
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{path or 'params'}: unknown key(s) {unknown}; allowed: {sorted(names)}")
    values = {}
    for f in dataclasses.fields(cls):
        key = f"{path}.{f.name}" if path else f.name
        if f.name not in data:
            raise ConfigError(f"{key}: missing (every key is explicit in params.yaml)")
        values[f.name] = _coerce(hints[f.name], data[f.name], key)
    try:
        return cls(**values)
    except FieldError as err:
        raise ConfigError(f"{path}.{err}" if path else str(err)) from None
    except ConfigError:
        raise
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{path or 'params'}: {err}") from None


def _coerce(hint, value, key):
    if dataclasses.is_dataclass(hint):
        return parse(hint, value, key)
    origin = typing.get_origin(hint)
    if origin is tuple:  # tuple[X, ...] from a YAML list
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key}: expected a list, got {type(value).__name__} {value!r}")
        return tuple(_coerce(typing.get_args(hint)[0], v, f"{key}[{i}]") for i, v in enumerate(value))
    if origin is dict:  # dict[K, V] from a YAML mapping (None = empty)
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {type(value).__name__} {value!r}")
        key_hint, value_hint = typing.get_args(hint)
        return {_coerce(key_hint, k, key): _coerce(value_hint, v, f"{key}.{k}") for k, v in value.items()}
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        for option in typing.get_args(hint):
            if option is type(None) and value is None:
                return None
            if option is not type(None):
                try:
                    return _coerce(option, value, key)
                except ConfigError:
                    continue
        raise ConfigError(f"{key}: {value!r} does not match {hint}")
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{key}: must be a finite number, got {value!r}")  # NaN compares False: gates would open
    if hint is bool and not isinstance(value, bool) or hint is not bool and isinstance(value, bool):
        raise ConfigError(f"{key}: expected {hint.__name__}, got {value!r}")
    if not isinstance(value, hint):
        raise ConfigError(f"{key}: expected {hint.__name__}, got {type(value).__name__} {value!r}")
    return value


def load_params(path: str | Path = "params.yaml") -> Params:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path} not found: run from the repository root or pass --params")
    try:
        data = yaml.load(path.read_text(), Loader=_StrictLoader) or {}
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{path}: not valid YAML{where}: {err.problem or err.context}") from None
    return parse(Params, data)


class _StrictLoader(yaml.SafeLoader):
    """safe_load, except that a key given twice in one mapping is an error (PyYAML keeps the last silently)."""


def _mapping_once(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_once)
