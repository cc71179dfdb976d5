"""deepspeed_config: batch arithmetic (exact or a loud error), torch Adam, bf16 auto, and the lr schedule."""

import json
import math

import pytest
import torch

from components.training import deepspeed_config


def test_accumulation_is_exact_and_config_is_complete():
    cfg = deepspeed_config.build("zero2", 256, 16, 8, 2e-5, 0.0, 1.0, False)
    assert cfg["gradient_accumulation_steps"] == 2
    assert cfg["train_batch_size"] == 256 == 16 * 8 * 2
    assert cfg["train_micro_batch_size_per_gpu"] == 16
    on_disk = json.loads(deepspeed_config.config_path("zero2").read_text())
    assert cfg["zero_optimization"] == on_disk["zero_optimization"]
    assert cfg["optimizer"]["params"]["torch_adam"] is True
    assert cfg["optimizer"]["params"]["lr"] == 2e-5
    assert cfg["gradient_clipping"] == 1.0
    assert cfg["bf16"] == {"enabled": False}
    assert "scheduler" not in cfg  # the schedule is deepspeed_config.schedule (DeepSpeed's gave 2 steps lr 0)


def _lrs(total_steps: int, warmup_ratio: float, peak: float = 1.0) -> list[float]:
    """The lr each optimizer step uses, through a real torch optimizer and the LambdaLR `schedule` builds."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=peak)
    scheduler = deepspeed_config.schedule(total_steps, warmup_ratio)(optimizer)
    lrs = []
    for _ in range(total_steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


def test_every_step_trains_warmup_then_cosine():
    lrs = _lrs(10, 0.1)  # the embedded pretraining: 1 warmup step
    assert lrs[:2] == [1.0, 1.0] and all(lr > 0 for lr in lrs)
    assert all(a > b for a, b in zip(lrs[1:-1], lrs[2:], strict=True))  # then strictly decreasing
    assert lrs[-1] == pytest.approx(0.5 * (1 + math.cos(math.pi * 8 / 9)))  # one step short of the floor
    paper = _lrs(5197, 0.03)  # LLaVA's finetuning: 156 warmup steps, linear from 1/156 of the peak
    assert deepspeed_config.warmup_steps(5197, 0.03) == 156
    assert paper[0] == pytest.approx(1 / 156) and paper[155] == paper[156] == 1.0 and paper[157] < 1.0
    assert paper[-1] > 0
    assert _lrs(3, 0.0) == pytest.approx([1.0, 0.75, 0.25])  # no warmup: the cosine from the first step
    assert _lrs(1, 0.5) == [1.0] and _lrs(2, 0.5) == [1.0, 1.0]  # all warmup, and a step past the end: no error


def test_bad_schedule_raises():
    with pytest.raises(ValueError, match="warmup_ratio"):
        deepspeed_config.schedule(10, 1.0)
    with pytest.raises(ValueError, match="total_steps"):
        deepspeed_config.schedule(0, 0.1)


@pytest.mark.parametrize("args", [(10, 4, 1), (256, 16, 3), (8, 3, 2)])
def test_indivisible_batch_raises_with_the_numbers(args):
    global_batch, micro, world = args
    with pytest.raises(ValueError, match=rf"global_batch {global_batch} .* micro_batch {micro} x world_size {world}"):
        deepspeed_config.build("zero2", global_batch, micro, world, 1e-3)


def test_bad_values_raise():
    with pytest.raises(ValueError, match=r"no DeepSpeed config 'zero1' .* \['zero2', 'zero2_offload'"):
        deepspeed_config.build("zero1", 8, 2, 1, 1e-3)
    with pytest.raises(ValueError, match="bf16"):
        deepspeed_config.build("zero2", 8, 2, 1, 1e-3, bf16="yes")
    with pytest.raises(ValueError, match="micro_batch"):
        deepspeed_config.build("zero2", 8, 0, 1, 1e-3)
    with pytest.raises(ValueError, match="grad_clip"):
        deepspeed_config.build("zero2", 8, 2, 1, 1e-3, grad_clip=-1.0)


def test_the_json_is_the_one_source_and_clipping_is_a_param():
    """#15: infra/deepspeed/<name>.json is what training runs (its ZeRO knobs unchanged), every "auto" filled from
    params; clipping 0 = DeepSpeed's unclipped default, the reference's (its zero2.json sets none)."""
    for name in ("zero2", "zero2_offload", "zero3", "zero3_offload"):
        on_disk = json.loads(deepspeed_config.config_path(name).read_text())
        built = deepspeed_config.build(name, 128, 4, 8, 2e-5, 0.0, 0.0, True)
        assert built["zero_optimization"] == on_disk["zero_optimization"]
        assert built["gradient_clipping"] == 0.0 and built["bf16"] == {"enabled": True}
        assert "auto" not in json.dumps(built)
        assert deepspeed_config.zero_stage(name) == on_disk["zero_optimization"]["stage"]
    assert deepspeed_config.build("zero2", 8, 2, 1, 1e-3, grad_clip=1.0)["gradient_clipping"] == 1.0


def test_bf16_auto_follows_the_accelerator(monkeypatch):
    monkeypatch.setattr(deepspeed_config, "bf16_supported", lambda: True)
    assert deepspeed_config.build("zero2", 8, 2, 1, 1e-3, bf16="auto")["bf16"]["enabled"] is True
    monkeypatch.setattr(deepspeed_config, "bf16_supported", lambda: False)
    assert deepspeed_config.build("zero2", 8, 2, 1, 1e-3, bf16="auto")["bf16"]["enabled"] is False
    assert deepspeed_config.build("zero2", 8, 2, 1, 1e-3, bf16=True)["bf16"]["enabled"] is True


def test_bf16_supported_answers_a_bool():
    assert isinstance(deepspeed_config.bf16_supported(), bool)
