import pytest

from components.model.build import tiny_model
from components.model.processor import UhdProcessor


@pytest.fixture(scope="session")
def tokenizer(gpt2_tokenizer):
    return gpt2_tokenizer


@pytest.fixture
def build(tokenizer):
    """build(compressor=..., strategy=..., preset=..., spatial_schema=...) -> (model, processor)."""

    def make(**kw):
        model = tiny_model(tokenizer, **kw).eval()
        return model, UhdProcessor(tokenizer, model)

    return make
