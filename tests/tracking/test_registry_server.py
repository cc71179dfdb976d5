"""The registry against a real MLflow tracking server over HTTP (`mlflow server` on loopback, sqlite behind it,
artifacts proxied by the server): the register stage's path and loading the champion by alias work with any
MLFLOW_TRACKING_URI, not only a local sqlite file."""

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import mlflow
import mlflow.pyfunc
import pytest

from components.tracking.registry import CHAMPION, Registry, promote, register_evaluated, use_tracking_uri
from tests.integration.test_submit import _free_port
from tests.tracking.test_registry import BASE, CFG, Constant, figures

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow_server")
    port = _free_port()
    cmd = [str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
           "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}", "--artifacts-destination",
           (root / "artifacts").as_uri(), "--workers", "1"]
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    env.pop("MLFLOW_TRACKING_URI", None)
    log = root / "server.log"  # a file, not a pipe: an unread pipe would block a chatty server
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=log.open("w"))
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                if urllib.request.urlopen(f"{uri}/health", timeout=2).status == 200:
                    break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError(f"mlflow server did not start: {log.read_text()[-2000:]}") from None
                time.sleep(0.5)
        yield uri
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_register_promote_and_load_the_champion_over_http(server, tmp_path):
    client = mlflow.MlflowClient(server)
    experiment_id = client.create_experiment("server-tests")
    models = []
    with use_tracking_uri(server):
        for _ in range(2):
            with mlflow.start_run(experiment_id=experiment_id) as run:
                info = mlflow.pyfunc.log_model(name="model", python_model=Constant(), pip_requirements=[])
            models.append((info.model_uri, run.info.run_id))
    reg, log = Registry("served-model", server), tmp_path / "log.jsonl"
    first = register_evaluated(reg, *models[0], figures(), {"model_sha256": "a"}, CFG, log)
    assert first["promoted"] and reg.aliases() == {"candidate": "1", CHAMPION: "1"}
    second = register_evaluated(reg, *models[1], figures({**BASE, "pope": 10.0}), {"model_sha256": "b"}, CFG, log)
    assert not second["promoted"] and reg.aliases() == {"candidate": "2", CHAMPION: "1"}
    assert promote(reg, "2", "accepted regression", CFG, log, force=True)["action"] == "force-promote"
    assert reg.champion() == "2" and [r["action"] for r in reg.log_records()][-1] == "force-promote"
    with use_tracking_uri(server):  # the artifacts come back through the server's proxy
        loaded = mlflow.pyfunc.load_model(f"models:/served-model@{CHAMPION}")
    assert list(loaded.predict([[1], [2], [3]])) == [0, 0, 0]
