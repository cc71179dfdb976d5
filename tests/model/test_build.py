"""The model factory (components/model/build.py): one construction order, so the same seed gives the same weights
whichever entry point builds the model; saved models reload exactly; a tokenizer that does not fit is refused."""

from types import SimpleNamespace

import pytest
import torch

from components.model.build import build_model, load_saved_model, load_tokenizer, load_tokenizer_for, tiny_model
from tests.conftest import tokenizer_assets


def tiny_spec(**overrides) -> SimpleNamespace:
    """Every attribute the factory reads, and nothing else: the duck-typed interface TrainConfig satisfies."""
    spec = dict(architecture="tiny", compressor="resampler", strategy="uhd", preset="uhd-arxiv", spatial_schema=True,
                tune_vision=False, vision_hidden=32, vision_layers=2, llm_hidden=64, llm_layers=2, seed=0,
                init_from=None, vision_weights="", llm_weights="")
    return SimpleNamespace(**(spec | overrides))


def assert_same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key, value in sa.items():
        assert torch.equal(value, sb[key]), key


@pytest.mark.parametrize("options", [{}, {"compressor": "spatial_resampler", "preset": "uhd-eccv"},
                                     {"compressor": "mlp"}, {"strategy": "anyres", "preset": "onevision"}])
def test_tiny_model_is_build_model_of_a_tiny_spec(gpt2_tokenizer, options):
    assert_same_weights(tiny_model(gpt2_tokenizer, seed=3, **options),
                        build_model(tiny_spec(seed=3, **options), gpt2_tokenizer))


def test_the_seed_decides_the_weights(gpt2_tokenizer):
    assert_same_weights(build_model(tiny_spec(seed=1), gpt2_tokenizer), build_model(tiny_spec(seed=1), gpt2_tokenizer))
    a, b = build_model(tiny_spec(seed=1), gpt2_tokenizer), build_model(tiny_spec(seed=2), gpt2_tokenizer)
    assert not torch.equal(a.compressor.query, b.compressor.query)


@pytest.mark.parametrize("tune_vision", [False, True])
def test_the_factory_leaves_stage_trainability_to_training(gpt2_tokenizer, tune_vision):
    """Only the model config's own switch (tune_vision: the tower) freezes anything; which of the other modules
    a stage trains is set by components.training.loop.build_stage_model."""
    model = build_model(tiny_spec(tune_vision=tune_vision), gpt2_tokenizer)
    trainable = {name.split(".")[0] for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"compressor", "language_model"} | ({"vision_tower"} if tune_vision else set())


def test_init_from_and_saved_model_round_trip(gpt2_tokenizer, tmp_path):
    trained = tiny_model(gpt2_tokenizer, seed=5)
    trained.save_pretrained(tmp_path / "model")
    assert_same_weights(build_model(tiny_spec(init_from=str(tmp_path / "model")), gpt2_tokenizer), trained)
    reloaded = load_saved_model(tmp_path / "model")
    assert not reloaded.training
    assert_same_weights(reloaded, trained)
    with pytest.raises(ValueError, match="does not fit this model"):  # another compressor: an error, not a partial load
        build_model(tiny_spec(compressor="mlp", init_from=str(tmp_path / "model")), gpt2_tokenizer)


def test_a_tokenizer_that_does_not_fit_the_model_is_refused(gpt2_tokenizer):
    model = tiny_model(gpt2_tokenizer)
    assert load_tokenizer_for(model, "gpt2", tokenizer_assets("gpt2")).convert_tokens_to_ids("<image>") == \
        model.config.image_token_id
    with pytest.raises(ValueError, match="not the tokenizer this model was trained with"):
        load_tokenizer_for(model, "llama", tokenizer_assets("llama"))


def test_load_tokenizer_adds_the_image_token():
    tok = load_tokenizer("llama", tokenizer_assets("llama"))
    assert tok.convert_tokens_to_ids("<image>") == 32000 and len(tok) == 32001
