"""Secrets stay on this machine (#13): credentials in a tracking URI are never printed nor sent with a Ray job,
and the package a Ray job uploads holds no secret file."""

import zipfile

import pytest
from ray._private.runtime_env.packaging import create_package

from components.inference.sources import ModelNotFound, default_source
from components.tracking.credentials import redact_credentials, strip_credentials
from components.training.submit import SubmitSpec, runtime_env

URI = "http://alice:s3cret@mlflow.internal:5000"


def test_redact_and_strip():
    assert redact_credentials(URI) == "http://***@mlflow.internal:5000"
    assert redact_credentials(f"no run in {URI}/api and in https://bob@x.org/") == (
        "no run in http://***@mlflow.internal:5000/api and in https://***@x.org/")
    assert strip_credentials(URI + "/path?q=1") == "http://mlflow.internal:5000/path?q=1"
    assert strip_credentials("sqlite:///mlflow.db") == redact_credentials("sqlite:///mlflow.db") == "sqlite:///mlflow.db"


def test_missing_model_message_does_not_print_the_password(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # a closed loopback port: fail at once
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    with pytest.raises(ModelNotFound) as err:  # no registry there and no fallback folder: the message names both
        default_source("llava-uhd", "http://alice:s3cret@127.0.0.1:9", tmp_path / "absent")
    assert "s3cret" not in str(err.value) and "http://***@127.0.0.1:9" in str(err.value)


def test_a_job_gets_no_credentials_and_uploads_no_secret_file(tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    for rel, text in {"pipelines/train.py": "x", ".env": "TOKEN=1", ".env.prod": "TOKEN=2", "conf/.env": "T=3",
                      ".dvc/config.local": "[remote]\npassword = s3cret", ".dvc/config": "[core]", "keys/id.pem": "k",
                      "params.yaml": "a: 1"}.items():
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        (repo / rel).write_text(text)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", URI)
    env = runtime_env(SubmitSpec("http://head:8265", "pretrain", repo))
    assert env["env_vars"]["MLFLOW_TRACKING_URI"] == "http://mlflow.internal:5000"
    package = tmp_path / "pkg.zip"  # Ray's own packaging, as submit_job runs it (gitignore off, our excludes)
    create_package(str(repo), package, include_gitignore=False, excludes=env["excludes"])
    names = set(zipfile.ZipFile(package).namelist())
    assert {"pipelines/train.py", "params.yaml", ".dvc/config"} <= names
    assert not names & {".env", ".env.prod", "conf/.env", ".dvc/config.local", "keys/id.pem"}
