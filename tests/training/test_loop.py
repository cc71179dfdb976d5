"""The DeepSpeed loop (ZeRO-2, CPU, fp32) on the tiny model and a tiny synthetic set: the loss falls, the
frozen modules are the paper's, and a run resumed from a mid-run checkpoint repeats the uninterrupted run's
later per-step losses exactly (model, optimizer, LR schedule, data position across an epoch end, RNG)."""

import os

import pytest
import torch

from components.model.build import build_model, load_tokenizer
from components.training.loop import TrainConfig, build_stage_model, train
from tests.conftest import TINY_MODEL
from tests.training.test_dataset import tiny_data  # noqa: F401  (session fixture)

os.environ.setdefault("DS_ACCELERATOR", "cpu")


def config(data, out, **kw):
    base = dict(TINY_MODEL, stage="finetune", tokenizer_dir=data.tokenizer_dir, steps=8, global_batch=4, micro_batch=2,
                lr=3e-3, warmup_ratio=0.0, save_every=4, deepspeed="zero2", bf16=False, grad_clip=1.0)
    return TrainConfig(data.validated, data.layouts, data.raw, str(out), **{**base, **kw})


@pytest.mark.parametrize("stage,trainable", [("pretrain", {"compressor"}),
                                             ("finetune", {"compressor", "language_model"})])
def test_trainable_modules_per_stage(tiny_data, stage, trainable):  # noqa: F811
    cfg = config(tiny_data, "unused", stage=stage)
    model = build_stage_model(cfg, load_tokenizer(cfg.tokenizer, cfg.tokenizer_dir))
    assert {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad} == trainable


def test_loss_falls_and_resume_repeats_the_uninterrupted_run(tiny_data, tmp_path):  # noqa: F811
    full = train(config(tiny_data, tmp_path / "full"))
    assert full["steps"] == 8 and full["checkpoints"] == ["step4", "step8"] and full["gradient_accumulation"] == 2
    # 18 = 4 global batches of 4 per epoch + 2 in none (one drop rule for every split, #15), counted
    assert full["data"] == {"samples": 18, "skipped": {}, "truncated": 0, "not_in_a_full_global_batch": 2}
    # throughput: 8 steps x global batch 4 samples; visual + text = all tokens; no MFU without a known peak (CPU)
    assert full["samples_per_s"] * full["seconds"] == pytest.approx(32, rel=0.05)
    assert full["visual_tokens_per_s"] + full["text_tokens_per_s"] == pytest.approx(full["tokens_per_s"])
    assert full["visual_tokens_per_s"] > 0 and full["tflops_per_s"] > 0 and full["peak_memory_mib"] > 100
    assert "mfu" not in full
    losses = full["losses"]
    assert sum(losses[-2:]) / 2 < sum(losses[:2]) / 2 - 0.2, losses

    first = train(config(tiny_data, tmp_path / "crash", stop_after=4))
    assert first["losses"] == losses[:4] and first["checkpoints"] == ["step4"]
    resumed = train(config(tiny_data, tmp_path / "crash", resume=True))
    assert "/step4/" in resumed["resumed_from"]
    assert resumed["losses"] == losses[4:]  # bit-identical
    assert resumed["lrs"] == full["lrs"][4:]


def test_steps_come_from_epochs_of_the_usable_set_and_clipping_reaches_deepspeed(tiny_data, tmp_path):  # noqa: F811
    """#15 items 2 and 4: the run is ceil(epochs x full global batches of the samples that survived), not a
    hard-coded count; grad_clip is DeepSpeed's clipping (0 = none, the reference's)."""
    plan = train(config(tiny_data, tmp_path / "a", steps=None, epochs=1.5, grad_clip=0.0, stop_after=0))
    # 18 samples, global batch 4: 4 steps an epoch (2 samples in none), 1.5 epochs = 6 steps
    assert (plan["steps_per_epoch"], plan["planned_steps"], plan["epochs"]) == (4, 6, 1.5)
    assert plan["gradient_clipping"] == 0.0
    fewer = train(config(tiny_data, tmp_path / "b", steps=None, epochs=0.3, limit=10, stop_after=0))
    assert (fewer["steps_per_epoch"], fewer["planned_steps"], fewer["gradient_clipping"]) == (2, 1, 1.0)
    with pytest.raises(ValueError, match="4 usable samples make no full global batch of 8"):
        train(config(tiny_data, tmp_path / "c", steps=None, limit=4, global_batch=8))


def test_client_state_holds_step_sampler_and_rng(tiny_data, tmp_path):  # noqa: F811
    import torch

    train(config(tiny_data, tmp_path, stage="pretrain", steps=2, save_every=1))
    state = torch.load(tmp_path / "checkpoints/step2/mp_rank_00_model_states.pt", weights_only=False)
    assert state["step"] == 2
    assert state["sampler"]["position"] == 4 and state["sampler"]["epoch"] == 0
    assert set(state["rng"]) == {"torch", "numpy", "python"}
    assert (tmp_path / "checkpoints/latest").read_text() == "step2"


def test_finished_pretrain_resumes_into_finetune(tiny_data, tmp_path):  # noqa: F811
    """Finetune starts from the pretrain export (strict load): the trained compressor and the untouched LLM carry
    over exactly, the finetune run trains from there, and an export of another compressor is refused."""
    from safetensors.torch import load_file

    from components.training.export import export_checkpoint

    pre_cfg = config(tiny_data, tmp_path / "pre", stage="pretrain", steps=4, save_every=0)
    assert any(lr > 0 for lr in train(pre_cfg)["lrs"])
    exported = export_checkpoint(pre_cfg, tmp_path / "pre/checkpoints", tmp_path / "pretrain_model")
    pretrained = load_file(str(exported / "model.safetensors"))
    fresh = build_model(config(tiny_data, "unused", stage="pretrain"), load_tokenizer("llama", tiny_data.tokenizer_dir))
    changed = {k.split(".")[0] for k, v in fresh.state_dict().items() if not torch.equal(v, pretrained[k])}
    assert changed == {"compressor"}  # pretraining moved the compressor only

    fine_cfg = config(tiny_data, tmp_path / "fine", steps=2, save_every=0, init_from=str(exported))
    start = build_model(fine_cfg, load_tokenizer("llama", tiny_data.tokenizer_dir)).state_dict()
    assert all(torch.equal(start[k], v) for k, v in pretrained.items())
    assert train(fine_cfg)["steps"] == 2
    with pytest.raises(ValueError, match="does not fit this model"):
        build_model(config(tiny_data, "unused", compressor="mlp", init_from=str(exported)),
                    load_tokenizer("llama", tiny_data.tokenizer_dir))
