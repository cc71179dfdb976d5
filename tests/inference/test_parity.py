"""One model, every way of loading it (in memory, save_pretrained dir, logged model, registry version and alias,
run id, the pyfunc): identical greedy answers on images of several aspect ratios, batch 1 == batch 4."""

import pandas as pd
import pytest
import torch

from components.inference import ModelNotFound, UhdModel, load_model
from components.inference.pyfunc import LlavaUhdPyfunc
from components.model.processor import UhdProcessor

from .conftest import REGISTERED, SIZES, active_store

QUESTION = "What is in the picture?"
TOKENS = 6


@pytest.fixture(scope="module")
def reference(tiny, images):
    """The in-memory model's answers, one image per call."""
    model, tok = tiny
    uhd = UhdModel(model, tok, "memory")
    return [uhd.answer(path, QUESTION, max_new_tokens=TOKENS) for path in images]


def _items(images):
    return [(path, QUESTION) for path in images]


def test_reference_is_not_degenerate(reference, tiny, images):
    uhd = UhdModel(*tiny)
    assert any(reference), "the random model should emit some tokens"
    grids = {uhd.layout(path).grid for path in images}
    assert len(grids) >= 3  # the aspect ratios really exercise different slicings
    assert [uhd.layout(p).size for p in images] == SIZES


def test_batch_one_equals_batch_four(reference, tiny, images):
    uhd = UhdModel(*tiny)
    assert uhd.answer_batch(_items(images), batch_size=4, max_new_tokens=TOKENS) == reference
    assert uhd.answer_batch(_items(images), batch_size=1, max_new_tokens=TOKENS) == reference


def test_directory_reload_same_logits_and_answers(reference, tiny, logged, images, tokenizer_dir):
    model, tok = tiny
    loaded = load_model(logged["dir"], logged["uri"], tokenizer="llama", tokenizer_dir=tokenizer_dir)
    for key, value in loaded.model.state_dict().items():
        assert torch.equal(value, model.state_dict()[key]), key
    batch = UhdProcessor(tok, model)([f"USER: <image>\n{QUESTION} ASSISTANT:"] * 4, [[p] for p in images[:4]])
    with torch.no_grad():
        assert torch.equal(model(**batch).logits, loaded.model(**batch).logits)
    assert loaded.answer_batch(_items(images), batch_size=4, max_new_tokens=TOKENS) == reference


@pytest.mark.parametrize("kind", ["logged", "version", "alias", "run_id", "bare_model_id"])
def test_mlflow_sources_answer_the_same(kind, reference, logged, images):
    source = {"logged": logged["model_uri"], "version": f"models:/{REGISTERED}/{logged['version']}",
              "alias": f"models:/{REGISTERED}@champion", "run_id": logged["run_id"],
              "bare_model_id": logged["model_uri"].removeprefix("models:/")}[kind]
    assert source.startswith("models:/m-") or kind != "logged"
    uhd = load_model(source, logged["uri"])  # the tokenizer comes with the artifact
    assert uhd.source == source
    assert uhd.answer_batch(_items(images), batch_size=4, max_new_tokens=TOKENS) == reference
    assert uhd.answer_batch(_items(images), batch_size=1, max_new_tokens=TOKENS) == reference


@pytest.fixture(scope="module")
def pyfunc(logged):
    import mlflow

    with active_store(logged["uri"]):  # mlflow.pyfunc.load_model resolves models:/ with the global URI
        return mlflow.pyfunc.load_model(f"models:/{REGISTERED}@champion")


def test_pyfunc_predict_answers_the_same(pyfunc, tiny, images):
    """predict's defaults (32 new tokens, batches of 8) against the in-memory model one image at a time."""
    assert isinstance(pyfunc.unwrap_python_model(), LlavaUhdPyfunc)
    uhd = UhdModel(*tiny)
    expected = [uhd.answer(path, QUESTION) for path in images] + [uhd.answer(None, "Say hi")]
    frame = pd.DataFrame({"image_path": [str(p) for p in images] + [None], "question": [QUESTION] * 5 + ["Say hi"]})
    assert list(pyfunc.predict(frame)) == expected


def test_pyfunc_predict_params_are_honoured(pyfunc, reference, images):
    frame = pd.DataFrame({"image_path": [str(p) for p in images], "question": [QUESTION] * len(images)})
    assert list(pyfunc.predict(frame, params={"max_new_tokens": TOKENS, "batch_size": 1})) == reference


def test_text_only_and_pil_items(tiny, images):
    from PIL import Image

    uhd = UhdModel(*tiny)
    picture = Image.open(images[0])
    mixed = [(picture, QUESTION), {"image_path": None, "question": "Say hi"}, {"image": str(images[0]),
                                                                                "question": QUESTION}]
    one = [uhd.answer(*pair, max_new_tokens=TOKENS) for pair in [(picture, QUESTION), (None, "Say hi")]]
    assert uhd.answer_batch(mixed, batch_size=3, max_new_tokens=TOKENS) == [one[0], one[1], one[0]]


def test_unknown_sources_fail_clearly(logged, tmp_path):
    with pytest.raises(ModelNotFound, match="not a directory"):
        load_model("no-such-model", logged["uri"])
    with pytest.raises(ModelNotFound, match="not found"):
        load_model(f"models:/{REGISTERED}@nobody", logged["uri"])
    with pytest.raises(ModelNotFound, match="no MLflow run"):
        load_model("0" * 32, logged["uri"])
    with pytest.raises(ModelNotFound, match="config.json"):
        load_model(tmp_path, logged["uri"])
    with pytest.raises(ModelNotFound, match="tokenizer"):
        load_model(logged["dir"], logged["uri"])  # a bare directory needs the tokenizer from the caller


def test_wrong_tokenizer_is_refused(logged, repo_root):
    with pytest.raises(ValueError, match="not the tokenizer"):
        load_model(logged["dir"], logged["uri"], tokenizer="gpt2",
                   tokenizer_dir=repo_root / "assets/tokenizers/gpt2")
