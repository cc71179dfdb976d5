"""Where a model comes from: an MLflow model URI, an MLflow run id, or a local `save_pretrained` directory.

`resolve(source, tracking_uri, dst_path)` -> `ModelSource(model_dir, tokenizer_dir, tokenizer, uri)`:

- `models:/llava-uhd@champion`, `models:/llava-uhd/3`, `models:/m-<id>`, `runs:/<run>/<path>`: the pyfunc
  artifact (logged by `components.inference.pyfunc.log_pyfunc_model`) is downloaded into dst_path; its
  MLmodel names the model and tokenizer directories (`artifacts/<dir name>`) and the tokenizer kind
  (`model_config.tokenizer`), so the transformers directory is read as is, without unpickling the PythonModel.
- a run id (32 hex digits): the newest model logged in that run; a bare `m-<id>`: that logged model.
- a complete `save_pretrained` directory (config.json + weights; a partial one is refused): itself (the tokenizer
  comes from the caller, or the directory when it holds one; a saved one, tokenizer_config.json included, is
  loaded with AutoTokenizer: kind `saved`).

MLflow is imported lazily: a local directory needs no tracking store.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from components.model.build import SAVED_TOKENIZER, has_saved_tokenizer, missing_model_files
from components.tracking.credentials import redact_credentials

RUN_ID = re.compile(r"[0-9a-f]{32}")
LOGGED_MODEL_ID = re.compile(r"m-[0-9a-f]{32}")
MODEL_URI_SCHEMES = ("models:/", "runs:/")


class ModelNotFound(LookupError):
    """The source names no model that exists; the message says what was tried."""


@dataclass(frozen=True)
class ModelSource:
    model_dir: Path
    tokenizer_dir: Path | None
    tokenizer: str | None  # tokenizer kind recorded with the model (llama | gpt2 | smollm2), None if unknown
    uri: str | None  # the MLflow model URI it was downloaded from; None for a local directory


def resolve(source: str, tracking_uri: str, dst_path: str | Path) -> ModelSource:
    """The local model + tokenizer directories of `source` (MLflow artifacts are downloaded into dst_path)."""
    path = Path(source)
    if path.is_dir():
        return local_dir(path)
    if source.startswith(MODEL_URI_SCHEMES):
        return download(source, tracking_uri, dst_path)
    if LOGGED_MODEL_ID.fullmatch(source):
        return download(f"models:/{source}", tracking_uri, dst_path)
    if RUN_ID.fullmatch(source):
        return download(run_model_uri(source, tracking_uri), tracking_uri, dst_path)
    raise ModelNotFound(f"{source!r} is not a directory, an MLflow model URI (models:/NAME@ALIAS, models:/NAME/N, "
                        "models:/m-ID) or an MLflow run id")


def local_dir(path: Path) -> ModelSource:
    missing = missing_model_files(path)
    if missing:
        raise ModelNotFound(f"{path} is not a complete save_pretrained model directory (missing {', '.join(missing)})")
    if has_saved_tokenizer(path):  # e.g. a converted checkpoint (`uhd convert`): its own tokenizer, `<image>` included
        return ModelSource(path, path, SAVED_TOKENIZER, None)
    has_tokenizer = (path / "tokenizer.json").is_file()
    return ModelSource(path, path if has_tokenizer else None, None, None)


def run_model_uri(run_id: str, tracking_uri: str) -> str:
    """`models:/<id>` of the newest model logged in the run (MLflow 3 logged models record their source run)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient(tracking_uri)
    try:
        run = client.get_run(run_id)
    except MlflowException as err:
        raise ModelNotFound(f"no MLflow run {run_id} in {redact_credentials(tracking_uri)}") from err
    models = client.search_logged_models([run.info.experiment_id], filter_string=f"source_run_id = '{run_id}'",
                                         order_by=[{"field_name": "creation_timestamp", "ascending": False}])
    if not models:
        raise ModelNotFound(f"MLflow run {run_id} logged no model")
    return f"models:/{models[0].model_id}"


def artifact_location(uri: str, tracking_uri: str) -> str:
    """Where a models:/ URI's files live, looked up in *this* store: MLflow's own models:/ resolution reads the
    process-wide registry URI, not the tracking_uri given to download_artifacts."""
    import mlflow
    from mlflow.store.artifact.utils.models import get_model_name_and_version

    if not uri.startswith("models:/"):
        return uri  # runs:/ URIs honour tracking_uri
    client = mlflow.MlflowClient(tracking_uri, registry_uri=tracking_uri)
    found = get_model_name_and_version(client, uri)
    if len(found) == 1:  # a logged model id
        return client.get_logged_model(found[0]).artifact_location
    return client.get_model_version_download_uri(*found)


def download(uri: str, tracking_uri: str, dst_path: str | Path) -> ModelSource:
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.models import Model

    try:
        location = artifact_location(uri, tracking_uri)
        local = mlflow.artifacts.download_artifacts(artifact_uri=location, dst_path=str(dst_path),
                                                    tracking_uri=tracking_uri)
    except MlflowException as err:
        where = redact_credentials(f"{tracking_uri}: {err.message}")
        raise ModelNotFound(f"{uri} not found in {where}") from err
    flavor = Model.load(local).flavors.get("python_function", {})
    artifacts = flavor.get("artifacts") or {}
    if "model" not in artifacts:
        raise ModelNotFound(f"{uri} is not a LLaVA-UHD pyfunc (no 'model' artifact); log it with log_pyfunc_model")
    tokenizer = artifacts.get("tokenizer")
    return ModelSource(Path(local) / artifacts["model"]["path"],
                       Path(local) / tokenizer["path"] if tokenizer else None,
                       (flavor.get("config") or {}).get("tokenizer"), uri)


def store_exists(tracking_uri: str) -> bool:
    """False for a sqlite store whose file is missing: querying it would create an empty database."""
    parsed = urlparse(tracking_uri)
    if parsed.scheme != "sqlite":
        return True
    return Path(tracking_uri[len("sqlite:///"):]).is_file()


def alias_exists(name: str, alias: str, tracking_uri: str) -> bool:
    """Whether the registry holds `name@alias` (a missing store or model counts as no)."""
    if not store_exists(tracking_uri):
        return False
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        mlflow.MlflowClient(tracking_uri, registry_uri=tracking_uri).get_model_version_by_alias(name, alias)
    except MlflowException:
        return False
    return True


def default_source(model_name: str, tracking_uri: str, fallback_dir: str | Path = "models/finetune",
                   alias: str = "champion") -> tuple[str, str]:
    """(source, why) when the user names no model: the registry's `model_name@alias` when it exists, else the
    finetune stage's output directory, else ModelNotFound saying how to get one."""
    if alias_exists(model_name, alias, tracking_uri):
        return f"models:/{model_name}@{alias}", f"registry alias {alias} in {redact_credentials(tracking_uri)}"
    missing = missing_model_files(fallback_dir)
    if not missing:  # a half-written folder is no fallback
        return str(fallback_dir), (f"no models:/{model_name}@{alias} in {redact_credentials(tracking_uri)}; "
                                   "using the finetune stage's output")
    state = f"is incomplete (missing {', '.join(missing)})" if Path(fallback_dir).exists() else "does not exist"
    raise ModelNotFound(f"no model to use: models:/{model_name}@{alias} is not in the registry at "
                        f"{redact_credentials(tracking_uri)} and {fallback_dir}/ {state}. Run "
                        "`dvc repro finetune` (then `dvc repro` to evaluate and register a champion), "
                        "or pass --model SOURCE")
