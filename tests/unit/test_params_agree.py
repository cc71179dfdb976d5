"""One default per setting: params.yaml, the typed params (components/config.py) and the library configs built
from them (TrainConfig, RaySettings, EvalPlan, GateConfig, validate_annotations) agree, and each library config
built by its one function carries the params' values."""

import dataclasses
import inspect

import pytest

from components.config import ModelConfig, Params, TrainStageConfig, ValidateConfig, load_params
from components.data.synthetic import SyntheticSpec
from components.data.validation import validate_annotations
from components.evaluation.suite import EvalPlan
from components.tracking.registry import GateConfig
from components.training.loop import TrainConfig
from components.training.ray_trainer import RaySettings

PATHS = dict(validated_dir="v", layouts_path="l.parquet", raw_root="r", output_dir="o")


def test_params_yaml_is_the_typed_defaults(repo_root):
    """params.yaml is the embedded profile and so are the dataclass defaults: a fresh parse equals them."""
    parsed, defaults = load_params(repo_root / "params.yaml"), Params()
    for block in dataclasses.fields(Params):
        assert getattr(parsed, block.name) == getattr(defaults, block.name), block.name


@pytest.mark.parametrize("stage", ["pretrain", "finetune"])
def test_train_config_carries_every_params_value(repo_root, stage):
    params = load_params(repo_root / "params.yaml")
    cfg = TrainConfig.from_params(params, stage, **PATHS, root=repo_root)
    recipe = getattr(params.train, stage)
    for name in (f.name for f in dataclasses.fields(TrainStageConfig)):
        expected = recipe.limit or None if name == "limit" else getattr(recipe, name)
        assert getattr(cfg, name) == expected, name
    tokenizer_dir = str((repo_root / params.model.tokenizer_dir).resolve())
    for name in (f.name for f in dataclasses.fields(ModelConfig)):
        expected = tokenizer_dir if name == "tokenizer_dir" else getattr(params.model, name)
        assert getattr(cfg, name) == expected, name
    assert (cfg.stage, cfg.source, cfg.compressor, cfg.strategy, cfg.preset, cfg.spatial_schema, cfg.tune_vision) == (
        stage, params.data.source, params.compressor, params.slicing.strategy, params.slicing.active_preset,
        params.spatial_schema, params.train.tune_vision)
    # absolute: Ray workers do not run in the repository root
    assert cfg.validated_dir == str((repo_root / "v").resolve()) and cfg.init_from is None


def test_train_config_defaults_are_the_params_pretrain_defaults(repo_root):
    built = TrainConfig.from_params(Params(), "pretrain", **PATHS, root=repo_root)
    absolute = {name: getattr(built, name) for name in ("validated_dir", "layouts_path", "raw_root", "output_dir",
                                                        "tokenizer_dir")}
    assert TrainConfig(**absolute) == built


def test_train_config_differs_from_params_only_where_the_params_differ():
    """A changed params value reaches the config: nothing is silently left at a TrainConfig default."""
    recipe = {f.name: f for f in dataclasses.fields(TrainStageConfig)}
    changed = TrainStageConfig(epochs=3.0, global_batch=8, micro_batch=4, lr=0.5, weight_decay=0.1, warmup_ratio=0.5,
                               grad_clip=0.0, batch_order="random", deepspeed="zero3", max_length=99,
                               save_every=2, limit=7, bf16=True, autocast="off", gradient_checkpointing=True)
    assert all(getattr(changed, name) != getattr(TrainStageConfig(), name) for name in recipe)
    params = dataclasses.replace(Params(), train=dataclasses.replace(Params().train, pretrain=changed))
    cfg = TrainConfig.from_params(params, "pretrain", **PATHS)
    assert all(getattr(cfg, name) == getattr(changed, name) for name in recipe)


def test_ray_settings_from_params():
    params = Params()
    built, default = RaySettings.from_params(params, "pretrain"), RaySettings()
    ray = params.train.ray
    assert (built.num_workers, built.storage_path, built.max_failures, built.use_gpu) == (
        ray.num_workers, ray.storage_path, ray.max_failures, ray.use_gpu) == (
        default.num_workers, default.storage_path, default.max_failures, default.use_gpu)
    assert built.experiment_prefix == default.experiment_prefix == params.tracking.experiment_prefix
    assert built.tracking_uri == params.tracking.uri and built.name == "pretrain"
    assert RaySettings.from_params(params, "finetune", "/shared/ray").storage_path == "/shared/ray"


def test_eval_plan_and_gate_config_are_the_params_blocks():
    params = Params()
    plan = EvalPlan.from_params(params.eval)
    assert dataclasses.asdict(plan) == dataclasses.asdict(params.eval) == dataclasses.asdict(EvalPlan())
    gates = GateConfig.of(params.registry)
    assert dataclasses.asdict(gates) == {name: getattr(params.registry, name)
                                         for name in ("headline", "tolerance", "max_quarantine_increase")}


def test_validate_annotations_defaults_are_the_validate_block():
    signature = inspect.signature(validate_annotations).parameters
    for name in ("full_decode_fraction", "max_pixels", "seed", "workers"):
        assert signature[name].default == getattr(ValidateConfig(), name), name



def test_synthetic_spec_is_the_data_block():
    data = Params().data
    spec = SyntheticSpec.from_params(data)
    assert spec == SyntheticSpec()
    assert dataclasses.asdict(spec) == {"seed": data.seed, **dataclasses.asdict(data.synthetic)}
