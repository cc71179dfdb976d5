"""The exported model as an MLflow pyfunc (`LlavaUhdPyfunc`), and `log_pyfunc_model` that logs it in the active run.

A pyfunc, not `mlflow.pytorch`: its default `pt2` serialization cannot export an HF model. It is logged from code
(MLflow's models-from-code, `MODEL_CODE`: a file that imports `LlavaUhdPyfunc` and calls `set_model`), not as a
pickled instance: `mlflow.pyfunc.load_model` runs that short, readable file from the artifact and unpickles
nothing (no `python_model.pkl`; it loads with MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false). The artifact holds the
`save_pretrained` directory (safetensors) and, when given, the tokenizer directory;
`components.inference.sources` reads both back without loading the pyfunc, so no code from the artifact runs.
The code file imports `components` from the environment that loads it (pass `code_paths` to bundle the package).

`predict` takes a DataFrame with columns `image_path` (may be empty/None for text-only) and `question` and returns
one greedy answer per row (vicuna_v1 prompt; `params={"max_new_tokens": n}`).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import mlflow
import mlflow.pyfunc
import pandas as pd

from .model import load_dir

PREDICT_DEFAULTS = {"max_new_tokens": 32, "num_beams": 1, "batch_size": 8}  # predict's params
MODEL_CODE = Path(__file__).with_name("pyfunc_model.py")  # what log_pyfunc_model logs as the model


class LlavaUhdPyfunc(mlflow.pyfunc.PythonModel):
    """Loads `artifacts["model"]` (+ the tokenizer) with `load_dir` and answers through `UhdModel`, i.e. the
    benchmark runner's prompt and generation."""

    def load_context(self, context) -> None:
        tok_dir = context.artifacts.get("tokenizer")
        kind = (context.model_config or {}).get("tokenizer", "llama")
        self.uhd = load_dir(context.artifacts["model"], kind, tok_dir)
        self.model, self.tokenizer = self.uhd.model, self.uhd.tokenizer

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> list[str]:
        """One answer per row of `image_path` (path, or None/"" for text-only) and `question`.
        params (PREDICT_DEFAULTS): max_new_tokens, num_beams, batch_size (batched answers equal batch size 1)."""
        if self.tokenizer is None:
            raise RuntimeError("this model was logged without a tokenizer directory: predict needs one")
        params = {**PREDICT_DEFAULTS, **(params or {})}
        rows = model_input.to_dict("records")
        return self.uhd.answer_batch(rows, batch_size=int(params["batch_size"]),
                                     max_new_tokens=int(params["max_new_tokens"]), num_beams=int(params["num_beams"]))


def pyfunc_signature():
    """Inputs (image_path optional, question), one string per row out, and predict's params: without a params
    schema MLflow drops the params a caller passes (it only warns 'Ignoring provided params')."""
    from mlflow.models.signature import ModelSignature
    from mlflow.types.schema import ColSpec, ParamSchema, ParamSpec, Schema

    inputs = Schema([ColSpec("string", "image_path", required=False), ColSpec("string", "question")])
    params = ParamSchema([ParamSpec(key, "long", value) for key, value in PREDICT_DEFAULTS.items()])
    return ModelSignature(inputs=inputs, outputs=Schema([ColSpec("string")]), params=params)


def log_pyfunc_model(model_dir: str | Path, tokenizer_dir: str | Path | None = None, tokenizer: str = "llama",
                     name: str = "model", registered_model_name: str | None = None,
                     code_paths: list[str] | None = None):
    """Log the save_pretrained directory as a pyfunc in the active run; returns MLflow's ModelInfo."""
    artifacts = {"model": str(model_dir)}
    if tokenizer_dir:
        artifacts["tokenizer"] = str(tokenizer_dir)
    with warnings.catch_warnings():
        # No input_example on purpose: the signature is given in full, and with an example MLflow validates it by
        # loading the logged model and generating (a second model load at the end of every training stage).
        # MLflow warns whenever a signature comes without an example; only that warning is dropped.
        warnings.filterwarnings("ignore", message=r".*An input example was not provided", category=UserWarning)
        return mlflow.pyfunc.log_model(name=name, python_model=str(MODEL_CODE), artifacts=artifacts,
                                       model_config={"tokenizer": tokenizer}, code_paths=code_paths,
                                       signature=pyfunc_signature(), registered_model_name=registered_model_name,
                                       pip_requirements=[])


def log_restored_weights(params, model_dir: str | Path, tracking_uri: str | None = None) -> str:
    """Weights this machine never trained (`dvc pull`, another clone's run cache) logged as this pyfunc into a run of
    `<prefix>-register`, so the register stage can register them; returns the model's URI."""
    from components.tracking.mlflow_logging import resolve_tracking_uri, sha256_file

    mlflow.set_tracking_uri(resolve_tracking_uri(tracking_uri or params.tracking.uri))
    mlflow.set_experiment(f"{params.tracking.experiment_prefix}-register")
    with mlflow.start_run(run_name="restored-weights"):
        mlflow.set_tag("model_sha256", sha256_file(Path(model_dir) / "model.safetensors"))
        return log_pyfunc_model(model_dir, params.model.tokenizer_dir, params.model.tokenizer).model_uri
