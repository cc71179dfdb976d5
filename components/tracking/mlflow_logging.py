"""MLflow tracking for the training stages: one run per stage, written by rank 0 only.

- `resolve_tracking_uri(uri)`: the argument, else `$MLFLOW_TRACKING_URI`, else `sqlite:///<abs cwd>/mlflow.db`
  (sqlite, never the file store, which MLflow 3 keeps in maintenance mode; shared/reference/stack.md §5).
- `StageRun`: a context manager that starts a run in the experiment `<prefix>-<stage>`, logs the flattened
  config as params and per-step metrics (`loss`, `lr`, `tokens_per_s`, anything else numeric); on ranks other
  than 0 every method is a no-op, so callers need no `if rank == 0`.
- `write_pointer(...)`: this machine's record of a training run (`models/<stage>.json`, gitignored, not a DVC
  out: its ids change on every rerun): run id, model URI, checkpoint URI and the sha256 of the exported
  `model.safetensors`.

The exported model itself is logged as an MLflow pyfunc by `components.inference.pyfunc.log_pyfunc_model` (in the
active run): the pyfunc answers questions, which is inference's job, and tracking stays below inference in the
import graph (tracking never imports the model code).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import mlflow

PARAM_VALUE_LIMIT = 6000  # MLflow rejects longer param values


def resolve_tracking_uri(uri: str | None = None, root: str | Path | None = None) -> str:
    """The argument, else $MLFLOW_TRACKING_URI, else sqlite:///<abs root or cwd>/mlflow.db."""
    if uri:
        return uri
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    return f"sqlite:///{(Path(root) if root else Path.cwd()).resolve() / 'mlflow.db'}"


def is_rank_zero() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def flatten(config: Any, prefix: str = "") -> dict[str, str]:
    """Nested dicts / dataclasses as dotted keys with string values (lists and other leaves as JSON)."""
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        config = dataclasses.asdict(config)
    out: dict[str, str] = {}
    if isinstance(config, Mapping):
        for key, value in config.items():
            out.update(flatten(value, f"{prefix}{key}."))
        if not config and prefix:
            out[prefix[:-1]] = "{}"
        return out
    if isinstance(config, str):
        text = config
    else:
        try:
            text = json.dumps(config)
        except TypeError:
            text = str(config)
    out[prefix[:-1] if prefix else "value"] = text[:PARAM_VALUE_LIMIT]
    return out


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


# -- one run per stage -----------------------------------------------------------------------------------
class StageRun:
    """`with StageRun("pretrain", params=cfg) as run: run.log_step(step, loss=..., lr=...)`; rank 0 only.

    With `run_id`, the run is *attached*: metrics and params go to that existing run through an MlflowClient
    (no fluent active run, nothing ended on exit), which is how a Ray worker writes into the run the driver owns.
    """

    def __init__(self, stage: str, params: Any = None, tracking_uri: str | None = None,
                 experiment_prefix: str = "llava-uhd", run_name: str | None = None, tags: dict | None = None,
                 enabled: bool | None = None, run_id: str | None = None):
        self.attached = run_id is not None
        self.stage, self.params, self.run_name, self.tags = stage, params, run_name, tags or {}
        self.experiment = f"{experiment_prefix}-{stage}"
        self.enabled = is_rank_zero() if enabled is None else enabled
        self.tracking_uri = resolve_tracking_uri(tracking_uri) if self.enabled else None
        self.run_id: str | None = run_id if self.enabled else None

    def __enter__(self) -> StageRun:
        if not self.enabled:
            return self
        if self.attached:
            self._client = mlflow.MlflowClient(self.tracking_uri)
            if self.params is not None:
                self.log_params(self.params)
            return self
        mlflow.set_tracking_uri(self.tracking_uri)
        experiment = mlflow.set_experiment(self.experiment)
        run = mlflow.start_run(experiment_id=experiment.experiment_id, run_name=self.run_name,
                               tags={"stage": self.stage, **self.tags})
        self.run_id = run.info.run_id
        if self.params is not None:
            self.log_params(self.params)
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self.enabled and self.run_id and not self.attached:
            mlflow.end_run(status="FAILED" if exc_type else "FINISHED")

    def log_params(self, params: Any) -> None:
        if not self.enabled:
            return
        flat = flatten(params)
        items = list(flat.items())
        for i in range(0, len(items), 100):  # MLflow's batch limit
            if self.attached:
                from mlflow.entities import Param

                self._client.log_batch(self.run_id, params=[Param(k, v) for k, v in items[i:i + 100]])
            else:
                mlflow.log_params(dict(items[i:i + 100]))

    def log_step(self, step: int, loss: float | None = None, lr: float | None = None,
                 tokens_per_s: float | None = None, **more: float) -> None:
        if not self.enabled:
            return
        values = {"loss": loss, "lr": lr, "tokens_per_s": tokens_per_s, **more}
        metrics = {k: float(v) for k, v in values.items() if isinstance(v, int | float) and not isinstance(v, bool)}
        if metrics and self.attached:
            import time

            from mlflow.entities import Metric

            now = int(time.time() * 1000)
            self._client.log_batch(self.run_id, metrics=[Metric(k, v, now, int(step)) for k, v in metrics.items()])
        elif metrics:
            mlflow.log_metrics(metrics, step=int(step))


def write_pointer(path: str | Path, mlflow_run_id: str | None, model_uri: str | None,
                  checkpoint_uri: str | None, model_dir: str | Path | None = None) -> dict:
    """The run record a training stage writes: {mlflow_run_id, model_uri, checkpoint_uri, model_sha256}."""
    weights = Path(model_dir) / "model.safetensors" if model_dir else None
    pointer = {"mlflow_run_id": mlflow_run_id, "model_uri": model_uri, "checkpoint_uri": checkpoint_uri,
               "model_sha256": sha256_file(weights) if weights and weights.exists() else None}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(pointer, indent=2, sort_keys=True) + "\n")
    return pointer
