"""The paper-scale profiles (params/paper-*.yaml) parse, and their model builds on the meta device (no weights,
no memory, no network) with exactly the paper architecture's vision tower and LLM; gradient checkpointing and
`tune_vision` work on the tiny model."""

import dataclasses

import pytest
import torch

from components.config import load_params
from components.model.architectures import meta_parameter_counts
from components.model.build import load_tokenizer, model_config
from components.model.modeling import LlavaUhdForConditionalGeneration
from components.training.loop import TrainConfig, build_stage_model


def _train_config(params, stage: str, repo_root) -> TrainConfig:
    """The stage's own mapping (TrainConfig.from_params); no data is read here."""
    return TrainConfig.from_params(params, stage, validated_dir="unused", layouts_path="unused", raw_root="unused",
                                   output_dir="unused", root=repo_root)


@pytest.mark.parametrize("size", ["7b", "13b"])
def test_paper_profile_parses_and_builds_on_meta(repo_root, size):
    params = load_params(repo_root / f"params/paper-{size}.yaml")
    assert params.model.architecture == f"llava-uhd-{size}" and params.data.source == "hub"
    assert params.cluster.address.startswith("http")
    pre, fine, ray = params.train.pretrain, params.train.finetune, params.train.ray
    assert (pre.lr, pre.global_batch, fine.lr, fine.global_batch) == (1e-3, 256, 2e-5, 128)
    assert pre.max_length == fine.max_length == 2048 and pre.weight_decay == fine.weight_decay == 0
    assert pre.bf16 and fine.gradient_checkpointing and ray.use_gpu
    for recipe in (pre, fine):  # exact division: deepspeed_config.gradient_accumulation would fail loudly
        assert recipe.global_batch % (recipe.micro_batch * ray.num_workers) == 0
    # every key of the default params is present (load_params would reject a missing one): same blocks, except
    # that the paper decodes up to each benchmark's own length (LLaVA-1.5: 128) where the embedded default stops
    # at 8 tokens (its answers are at most 7: a six-digit code and the end of turn), and runs the protocol's batch
    # size (1, as LLaVA-1.5's scripts) where the float32 embedded default batches 8; the 13B profile's results.md
    # adds the arXiv paper's row with the difference (its Table 1 reports 13B only)
    default = load_params(repo_root / "params.yaml")
    assert params.eval.max_new_tokens == 0 and default.eval.max_new_tokens == 8
    paper_row = {"7b": "", "13b": "llava-uhd-13b"}[size]
    assert params.eval == dataclasses.replace(default.eval, max_new_tokens=0, batch_size=0, paper_row=paper_row)
    assert params.registry == default.registry

    cfg = _train_config(params, "finetune", repo_root)
    tokenizer = load_tokenizer(cfg.tokenizer, cfg.tokenizer_dir)
    config = model_config(cfg, tokenizer)
    with torch.device("meta"):
        model = LlavaUhdForConditionalGeneration(config)
    paper = meta_parameter_counts(f"llava-uhd-{size}")
    llm = sum(p.numel() for p in model.language_model.parameters())
    hidden = config.text_config.hidden_size
    assert llm == paper.llm + 2 * hidden * (len(tokenizer) - 32000)  # + <image> in embeddings and head
    tower = model.vision_tower.model
    kept_layers = len(getattr(tower, "vision_model", tower).encoder.layers)
    assert kept_layers == 23  # CLIP-L's 24 layers cut after the penultimate (feature layer -2)
    assert config.vision_config.image_size == 336 and config.compressor == "resampler"
    assert all(p.device.type == "meta" for p in model.parameters())


def test_gradient_checkpointing_and_tune_vision_on_the_tiny_model(repo_root):
    params = load_params(repo_root / "params/smoke.yaml")  # the tiny model
    cfg = dataclasses.replace(_train_config(params, "finetune", repo_root), gradient_checkpointing=True,
                              tune_vision=True)
    tokenizer = load_tokenizer(cfg.tokenizer, cfg.tokenizer_dir)
    model = build_stage_model(cfg, tokenizer)
    assert model.language_model.model.gradient_checkpointing
    assert all(p.requires_grad for p in model.vision_tower.parameters())
    frozen = build_stage_model(dataclasses.replace(cfg, stage="pretrain"), tokenizer)
    assert not any(p.requires_grad for p in frozen.vision_tower.parameters())  # tune_vision: finetune only
    model.train()
    ids = torch.tensor([[1, 15043, 3186, 2]])
    loss = model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=ids).loss
    loss.backward()
    assert torch.isfinite(loss) and model.language_model.lm_head.weight.grad is not None
