"""loop.py on a local Ray Train V2 TorchTrainer (gloo, CPU, DeepSpeed ZeRO-2 inside the workers): checkpoints
reported by every rank and merged by Ray, finite losses, rank 0 writing into the driver's MLflow run, and a
worker failure (FailureConfig) resumed from Ray's latest checkpoint repeating the uninterrupted losses."""

import math
import os

import pytest

from components.training.loop import TrainConfig
from components.training.ray_trainer import FAIL_FLAG_ENV, RaySettings, fit, read_steps
from tests.conftest import TINY_MODEL
from tests.training.test_dataset import tiny_data  # noqa: F401  (session fixture)

pytestmark = pytest.mark.slow

for key, value in (("DS_ACCELERATOR", "cpu"), ("RAY_USAGE_STATS_ENABLED", "0"), ("MLFLOW_DISABLE_TELEMETRY", "true"),
                   ("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")):
    os.environ.setdefault(key, value)


@pytest.fixture(scope="module")
def local_ray():
    import ray

    ray.init(address="local", num_cpus=2, object_store_memory=256 * 1024**2, include_dashboard=False,
             log_to_driver=False)
    yield
    ray.shutdown()


def config(data, out, **kw):
    base = dict(TINY_MODEL, stage="finetune", tokenizer_dir=data.tokenizer_dir, steps=4, global_batch=4, micro_batch=2,
                lr=3e-3, warmup_ratio=0.0, save_every=2, zero_stage=2, bf16=False)
    return TrainConfig(data.validated, data.layouts, data.raw, str(out), **{**base, **kw})


def test_fit_one_worker_reports_checkpoints_and_logs_mlflow(tiny_data, local_ray, tmp_path):  # noqa: F811
    import mlflow

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    settings = RaySettings(num_workers=1, storage_path=str(tmp_path / "ray"), name="one", tracking_uri=uri)
    result = fit(config(tiny_data, tmp_path / "out"), settings=settings)
    assert result.error is None
    assert result.metrics["step"] == 4 and math.isfinite(result.metrics["loss"])
    with result.checkpoint.as_directory() as d:
        names = set(os.listdir(d))
        assert "latest" in names and "step4" in names, names
        assert "mp_rank_00_model_states.pt" in os.listdir(os.path.join(d, "step4"))
    steps = read_steps(settings.storage_path, "one")
    assert [s["step"] for s in steps] == [1, 2, 3, 4] and all(math.isfinite(s["loss"]) for s in steps)
    client = mlflow.MlflowClient(uri)
    run = client.get_run(result.mlflow_run_id)
    assert run.info.status == "FINISHED" and run.data.params["stage"] == "finetune"
    assert [m.value for m in client.get_metric_history(run.info.run_id, "loss")] == [s["loss"] for s in steps]


def test_worker_failure_resumes_from_the_reported_checkpoint(tiny_data, local_ray, tmp_path):  # noqa: F811
    """Rank 0's process is SIGKILLed at step 3 (a dead worker, no exception): Ray restarts the group from the
    step-2 checkpoint and the run ends with the uninterrupted run's losses."""
    cfg = config(tiny_data, tmp_path / "out", steps=6)
    clean = fit(cfg, settings=RaySettings(num_workers=1, storage_path=str(tmp_path / "ray"), name="clean"))
    assert clean.error is None
    flag = tmp_path / "fail_once"
    flag.touch()
    faulty = fit(cfg, settings=RaySettings(num_workers=1, storage_path=str(tmp_path / "ray"), name="faulty",
                                           max_failures=1, worker_env=((FAIL_FLAG_ENV, f"{flag}:3:kill"),)))
    assert faulty.error is None and not flag.exists()
    reference = {s["step"]: s["loss"] for s in read_steps(str(tmp_path / "ray"), "clean")}
    steps = read_steps(str(tmp_path / "ray"), "faulty")
    assert [s["step"] for s in steps] == [1, 2, 3, 3, 4, 5, 6]  # step 3 ran, failed, reran after resume from 2
    resumed = [s for s in steps if s["resumed"]]
    assert [s["step"] for s in resumed] == [3, 4, 5, 6]
    assert [s["loss"] for s in resumed] == [reference[s["step"]] for s in resumed]  # bit-identical
    assert faulty.metrics["loss"] == clean.metrics["loss"]


def test_fit_two_workers_merges_both_ranks_shards(tiny_data, local_ray, tmp_path):  # noqa: F811
    result = fit(config(tiny_data, tmp_path / "out", steps=2, save_every=2),
                 settings=RaySettings(num_workers=2, storage_path=str(tmp_path / "ray"), name="two"))
    assert result.error is None and result.metrics["step"] == 2 and math.isfinite(result.metrics["loss"])
    with result.checkpoint.as_directory() as d:
        files = set(os.listdir(os.path.join(d, "step2")))
    assert {f"zero_pp_rank_{r}_mp_rank_00_optim_states.pt" for r in (0, 1)} <= files, files
    assert [s["step"] for s in read_steps(str(tmp_path / "ray"), "two")] == [1, 2]  # rank 0 only
