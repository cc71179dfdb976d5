"""A tiny random LLaVA-UHD saved with save_pretrained, logged as a pyfunc into a real sqlite MLflow store in tmp,
registered as `llava-uhd` with the alias `champion`; and images of several aspect ratios."""

import os
from contextlib import contextmanager

import pytest
import torch
from PIL import Image

from components.model.modeling import LlavaUhdForConditionalGeneration, separator_token_ids
from components.model.tiny import tiny_llava_uhd_config
from components.training.loop import load_tokenizer

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

REGISTERED = "llava-uhd"
# (width, height): wide, tall, square, small, very wide: different grids and token counts
SIZES = [(640, 240), (180, 520), (300, 300), (64, 48), (900, 160)]


@contextmanager
def active_store(uri: str):
    """MLflow's fluent API (log_model, register_model, pyfunc.load_model of models:/) on `uri` for the block.
    set_tracking_uri also exports $MLFLOW_TRACKING_URI, which resolve_tracking_uri and later tests would pick up:
    the MonkeyPatch context restores the environment on exit."""
    import mlflow

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        previous = mlflow.get_tracking_uri()
        mlflow.set_tracking_uri(uri)
        try:
            yield
        finally:
            mlflow.set_tracking_uri(previous)


@pytest.fixture(scope="session")
def tokenizer_dir(repo_root):
    return repo_root / "assets/tokenizers/llama"


@pytest.fixture(scope="session")
def tiny(tokenizer_dir):
    tok = load_tokenizer("llama", str(tokenizer_dir))
    torch.manual_seed(0)
    config = tiny_llava_uhd_config(len(tok), tok.convert_tokens_to_ids("<image>"), separator_token_ids(tok))
    return LlavaUhdForConditionalGeneration(config).eval(), tok


@pytest.fixture(scope="session")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    paths = []
    for i, (w, h) in enumerate(SIZES):
        image = Image.linear_gradient("L").resize((w, h)).convert("RGB")
        image.paste((40 * i % 255, 200 - 30 * i, 90), (w // 4, h // 4, w // 2, h // 2))  # a patch that differs
        paths.append(root / f"img{i}.{'png' if i % 2 else 'jpg'}")
        image.save(paths[-1])
    return paths


@pytest.fixture(scope="session")
def logged(tiny, tokenizer_dir, tmp_path_factory):
    """{dir, uri, run_id, model_uri, version}: the model as a directory and in MLflow (logged + registered)."""
    import mlflow

    from components.tracking.mlflow_logging import log_pyfunc_model

    model, _ = tiny
    root = tmp_path_factory.mktemp("mlflow")
    model_dir = root / "finetune"
    model.save_pretrained(model_dir)
    uri = f"sqlite:///{root}/mlflow.db"
    with active_store(uri), mlflow.start_run() as run:
        info = log_pyfunc_model(model_dir, tokenizer_dir, "llama")
    with active_store(uri):
        version = mlflow.register_model(info.model_uri, REGISTERED)
    mlflow.MlflowClient(uri).set_registered_model_alias(REGISTERED, "champion", version.version)
    return {"dir": model_dir, "uri": uri, "run_id": run.info.run_id, "model_uri": info.model_uri,
            "version": version.version}
