"""deepspeed_config.build: batch arithmetic (exact or a loud error), torch Adam, schedule, bf16 auto."""

import pytest

from components.training import deepspeed_config


def test_accumulation_is_exact_and_config_is_complete():
    cfg = deepspeed_config.build(2, 256, 16, 8, 2e-5, 0.0, 1.0, False, 0.03, 5197)
    assert cfg["gradient_accumulation_steps"] == 2
    assert cfg["train_batch_size"] == 256 == 16 * 8 * 2
    assert cfg["train_micro_batch_size_per_gpu"] == 16
    assert cfg["zero_optimization"] == {"stage": 2}
    assert cfg["optimizer"]["params"]["torch_adam"] is True
    assert cfg["optimizer"]["params"]["lr"] == 2e-5
    assert cfg["gradient_clipping"] == 1.0
    assert cfg["bf16"] == {"enabled": False}
    sched = cfg["scheduler"]
    assert sched["type"] == "WarmupCosineLR"
    assert sched["params"]["total_num_steps"] == 5197 and sched["params"]["warmup_num_steps"] == 156


@pytest.mark.parametrize("args", [(10, 4, 1), (256, 16, 3), (8, 3, 2)])
def test_indivisible_batch_raises_with_the_numbers(args):
    global_batch, micro, world = args
    with pytest.raises(ValueError, match=rf"global_batch {global_batch} .* micro_batch {micro} x world_size {world}"):
        deepspeed_config.build(2, global_batch, micro, world, 1e-3)


def test_bad_values_raise():
    with pytest.raises(ValueError, match="zero_stage"):
        deepspeed_config.build(4, 8, 2, 1, 1e-3)
    with pytest.raises(ValueError, match="bf16"):
        deepspeed_config.build(2, 8, 2, 1, 1e-3, bf16="yes")
    with pytest.raises(ValueError, match="micro_batch"):
        deepspeed_config.build(2, 8, 0, 1, 1e-3)


def test_bf16_auto_follows_the_accelerator(monkeypatch):
    monkeypatch.setattr(deepspeed_config, "bf16_supported", lambda: True)
    assert deepspeed_config.build(2, 8, 2, 1, 1e-3, bf16="auto")["bf16"]["enabled"] is True
    monkeypatch.setattr(deepspeed_config, "bf16_supported", lambda: False)
    assert deepspeed_config.build(2, 8, 2, 1, 1e-3, bf16="auto")["bf16"]["enabled"] is False
    assert deepspeed_config.build(2, 8, 2, 1, 1e-3, bf16=True)["bf16"]["enabled"] is True


def test_bf16_supported_answers_a_bool():
    assert isinstance(deepspeed_config.bf16_supported(), bool)
