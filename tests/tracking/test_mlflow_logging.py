"""MLflow tracking against a real sqlite store in tmp: params, per-step metrics, the exported model logged in the
stage's run as a pyfunc (components.inference.pyfunc: reloaded with the same weights, and answering a question),
the DVC pointer, and rank != 0 writing nothing."""

import json
import os

import pandas as pd
import pytest
import torch

from components.inference.pyfunc import log_pyfunc_model
from components.model.build import build_model, load_tokenizer
from components.tracking import mlflow_logging as ml
from components.training.loop import TrainConfig
from tests.conftest import TINY_MODEL

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


@pytest.fixture(scope="module")
def exported(tmp_path_factory, repo_root):
    out = tmp_path_factory.mktemp("export")
    cfg = TrainConfig("v", "l", "r", str(out), **TINY_MODEL)
    tok = load_tokenizer(cfg.tokenizer, cfg.tokenizer_dir)
    model = build_model(cfg, tok)
    model.save_pretrained(out / "model")
    return cfg, model, out / "model"


def test_resolve_tracking_uri(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert ml.resolve_tracking_uri(root=tmp_path) == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///env.db")
    assert ml.resolve_tracking_uri() == "sqlite:///env.db"
    assert ml.resolve_tracking_uri("sqlite:///arg.db") == "sqlite:///arg.db"


def test_flatten_nested_config():
    flat = ml.flatten({"train": {"lr": 1e-3, "stages": ["a", "b"], "bf16": False}, "name": "x", "empty": {}})
    assert flat == {"train.lr": "0.001", "train.stages": '["a", "b"]', "train.bf16": "false", "name": "x",
                    "empty": "{}"}


def test_stage_run_logs_params_metrics_and_a_reloadable_pyfunc(exported, tmp_path, monkeypatch):
    import mlflow
    from PIL import Image

    monkeypatch.setenv("RANK", "0")
    cfg, model, model_dir = exported
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    with ml.StageRun("pretrain", params=cfg, tracking_uri=uri, run_name="t") as run:
        for step, loss in enumerate([3.0, 2.5, 2.0], start=1):
            run.log_step(step, loss=loss, lr=1e-3 * step, tokens_per_s=100.0)
        model_uri = log_pyfunc_model(model_dir, cfg.tokenizer_dir, registered_model_name="llava-uhd-tiny").model_uri
    client = mlflow.MlflowClient(uri)
    data = client.get_run(run.run_id).data
    assert data.params["lr"] == str(cfg.lr) and data.params["stage"] == "pretrain" and data.tags["stage"] == "pretrain"
    assert [m.value for m in client.get_metric_history(run.run_id, "loss")] == [3.0, 2.5, 2.0]
    assert [m.step for m in client.get_metric_history(run.run_id, "lr")] == [1, 2, 3]
    assert client.get_experiment_by_name("llava-uhd-pretrain") is not None
    assert client.get_run(run.run_id).info.status == "FINISHED"

    mlflow.set_tracking_uri(uri)
    loaded = mlflow.pyfunc.load_model(model_uri)
    reloaded = loaded.unwrap_python_model().model
    ref = model.state_dict()
    for key, value in reloaded.state_dict().items():
        assert torch.equal(value, ref[key]), key
    image = tmp_path / "img.png"
    Image.new("RGB", (64, 48), (200, 30, 30)).save(image)
    answers = loaded.predict(pd.DataFrame({"image_path": [str(image), None], "question": ["Color?", "Hi"]}),
                             params={"max_new_tokens": 3})
    assert len(answers) == 2 and all(isinstance(a, str) for a in answers)
    assert client.get_registered_model("llava-uhd-tiny").name == "llava-uhd-tiny"

    pointer = ml.write_pointer(tmp_path / "out/pointer.json", run.run_id, model_uri, "file:///ckpt", model_dir)
    assert json.loads((tmp_path / "out/pointer.json").read_text()) == pointer
    assert pointer["model_sha256"] == ml.sha256_file(model_dir / "model.safetensors")
    assert len(pointer["model_sha256"]) == 64


def test_other_ranks_write_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    with ml.StageRun("finetune", params={"a": 1}, tracking_uri=f"sqlite:///{tmp_path}/mlflow.db") as run:
        run.log_step(1, loss=1.0)
    assert run.run_id is None and not (tmp_path / "mlflow.db").exists()
