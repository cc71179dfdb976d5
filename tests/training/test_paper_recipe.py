"""#15: the paper profiles run the reference code's training recipe (shared/reference/uhd.md §2-3): what each
stage's DeepSpeed config, split, order and length become once the profile is parsed, as training builds them."""

from pathlib import Path

import pytest

from components.config import load_params
from components.training import deepspeed_config
from components.training.loop import TrainConfig

REPO = Path(__file__).resolve().parents[2]
PATHS = {"validated_dir": "v", "layouts_path": "l", "raw_root": "r", "output_dir": "o"}

# (profile, stage): micro-batch, accumulation, ZeRO stage on 8 GPUs, from the reference scripts
REFERENCE = {
    # arXiv v1 code (= LLaVA-1.5's scripts): pretrain 32/GPU ZeRO-2, finetune 16/GPU ZeRO-3
    ("paper-7b", "pretrain"): (32, 1, 2), ("paper-7b", "finetune"): (16, 1, 3),
    ("paper-13b", "pretrain"): (32, 1, 2), ("paper-13b", "finetune"): (16, 1, 3),
    # ECCV train.sh (LLaVA-UHD-v1): pretrain 32 x 1, finetune 4 x 4 accumulation, both ZeRO-2
    ("paper-eccv-13b", "pretrain"): (32, 1, 2), ("paper-eccv-13b", "finetune"): (4, 4, 2),
}


@pytest.mark.parametrize(("profile", "stage"), sorted(REFERENCE))
def test_paper_profiles_train_as_the_reference_scripts(profile, stage):
    params = load_params(REPO / "params" / f"{profile}.yaml")
    cfg = TrainConfig.from_params(params, stage, **PATHS)
    workers = params.train.ray.num_workers
    ds = deepspeed_config.build(cfg.deepspeed, cfg.global_batch, cfg.micro_batch, workers, cfg.lr, cfg.weight_decay,
                                cfg.grad_clip, cfg.bf16)
    micro, accumulation, zero = REFERENCE[profile, stage]
    assert workers == 8 and cfg.global_batch == {"pretrain": 256, "finetune": 128}[stage]
    assert (ds["train_micro_batch_size_per_gpu"], ds["gradient_accumulation_steps"]) == (micro, accumulation)
    assert ds["zero_optimization"]["stage"] == zero
    assert ds["gradient_clipping"] == 0.0  # zero2.json of the reference sets none; DeepSpeed's default is 0
    assert ds["bf16"] == {"enabled": True} and cfg.gradient_checkpointing and cfg.max_length == 2048
    assert cfg.batch_order == {"pretrain": "random", "finetune": "modality_grouped"}[stage]
    assert cfg.epochs == 1.0 and cfg.steps is None  # steps come from the validated set
    assert (cfg.lr, cfg.weight_decay, cfg.warmup_ratio) == ({"pretrain": 1e-3, "finetune": 2e-5}[stage], 0.0, 0.03)


def test_the_embedded_default_keeps_its_named_deviations():
    """The README lists these two as the embedded default's own (2 CPU cores); the paper profiles do not have them."""
    params = load_params(REPO / "params.yaml")
    for stage in ("pretrain", "finetune"):
        recipe = getattr(params.train, stage)
        assert (recipe.grad_clip, recipe.batch_order) == (1.0, "length_grouped")
