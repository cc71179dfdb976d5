"""The logged pyfunc is code, not a pickle (#13): the registered artifact holds no pickle file, its MLmodel names
MLflow's models-from-code loader and our code file, it loads and answers with MLflow's pickle deserialization
switched off, and logging it prints neither MLflow's CloudPickle warning nor its input_example one."""

import logging
import warnings
from pathlib import Path

import pandas as pd
import pytest

from components.inference.pyfunc import MODEL_CODE, LlavaUhdPyfunc, log_pyfunc_model

from .conftest import REGISTERED, active_store


@pytest.fixture(scope="module")
def artifact(logged, tmp_path_factory) -> Path:
    """The files of models:/llava-uhd@champion, downloaded."""
    import mlflow

    with active_store(logged["uri"]):
        return Path(mlflow.artifacts.download_artifacts(f"models:/{REGISTERED}@champion",
                                                        dst_path=str(tmp_path_factory.mktemp("artifact"))))


def test_logged_model_is_code_not_a_pickle(artifact):
    from mlflow.models import Model

    files = sorted(p.relative_to(artifact).as_posix() for p in artifact.rglob("*") if p.is_file())
    assert "MLmodel" in files and not [f for f in files if f.endswith(".pkl")], files
    flavor = Model.load(artifact).flavors["python_function"]
    assert flavor["loader_module"] == "mlflow.pyfunc.loaders.code_model"
    assert "python_model" not in flavor  # the key that names python_model.pkl
    assert Path(flavor["model_code_path"]).name == MODEL_CODE.name
    assert (artifact / MODEL_CODE.name).read_text() == MODEL_CODE.read_text()


def test_pyfunc_loads_and_answers_with_pickles_refused(artifact, monkeypatch):
    import mlflow

    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false")  # MLflow then refuses python_model.pkl
    loaded = mlflow.pyfunc.load_model(str(artifact))
    assert isinstance(loaded.unwrap_python_model(), LlavaUhdPyfunc)
    answers = loaded.predict(pd.DataFrame({"image_path": [None], "question": ["Hi"]}), params={"max_new_tokens": 2})
    assert len(answers) == 1 and isinstance(answers[0], str)


def test_logging_warns_neither_cloudpickle_nor_input_example(logged, tokenizer_dir, tmp_path, caplog):
    import mlflow

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    experiment = mlflow.MlflowClient(uri).create_experiment("w", artifact_location=str(tmp_path / "artifacts"))
    mlflow_logger = logging.getLogger("mlflow")  # MLflow's loggers do not propagate to the root, where caplog is
    mlflow_logger.addHandler(caplog.handler)
    try:
        with warnings.catch_warnings(record=True) as caught, active_store(uri):
            warnings.simplefilter("always")
            with mlflow.start_run(experiment_id=experiment):
                log_pyfunc_model(logged["dir"], tokenizer_dir, "llama")
    finally:
        mlflow_logger.removeHandler(caplog.handler)
    said = [str(w.message) for w in caught] + [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    noise = [m for m in said if any(word in m.lower() for word in ("cloudpickle", "input example", "input_example"))]
    assert not noise, noise
