import pytest
import torch

from components.data.tokenizers import add_image_token, load_gpt2_tokenizer
from components.model.modeling import LlavaUhdForConditionalGeneration, separator_token_ids
from components.model.processor import UhdProcessor
from components.model.tiny import tiny_llava_uhd_config


@pytest.fixture(scope="session")
def tokenizer(repo_root):
    tok = load_gpt2_tokenizer(repo_root / "assets/tokenizers/gpt2")
    add_image_token(tok)
    return tok


@pytest.fixture
def build(tokenizer):
    """build(compressor=..., strategy=..., preset=..., spatial_schema=...) -> (model, processor)."""

    def make(**kw):
        torch.manual_seed(0)
        image_id = tokenizer.convert_tokens_to_ids("<image>")
        config = tiny_llava_uhd_config(len(tokenizer), image_id, separator_token_ids(tokenizer), **kw)
        model = LlavaUhdForConditionalGeneration(config).eval()
        return model, UhdProcessor(tokenizer, model)

    return make
