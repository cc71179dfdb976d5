"""`uhd submit` and the self-submitting train stage against a real Ray head on loopback (dashboard + job server).

One head per module (`ray start --head` in its own --temp-dir, ~15 s; stopped by killing exactly the processes
started under that dir: `ray stop` would stop every Ray instance of this machine). The real test submits
`pipelines.train --stage pretrain` on a tiny profile from a copy of the project (the checkout is never written),
the others submit stand-in entrypoints to check failure reporting and --no-wait / --attach.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from tests.training.test_dataset import tiny_data  # noqa: F401  (session fixture)

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pids_under(temp_dir: str) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and temp_dir.encode() in (proc / "cmdline").read_bytes():
                pids.append(int(proc.name))
        except OSError:
            continue
    return pids


def _kill_head(temp_dir: str) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in _pids_under(temp_dir):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.time() + 4  # gcs_server can ignore SIGTERM for a while: SIGKILL follows
        while _pids_under(temp_dir) and time.time() < deadline:
            time.sleep(0.5)


@pytest.fixture(scope="module")
def head(tmp_path_factory):
    """http:// address of a fresh loopback head with token auth (stack.md §4).

    Auth mode, loopback and the token file are the test process's own (tests/conftest.py: a fresh machine has no
    ~/.ray/auth_token and `ray start` does not create one); Ray caches them in-process, so they are never changed
    here."""
    temp_dir = tempfile.mkdtemp(prefix="rayt")  # short: Ray's unix socket paths must stay under ~107 bytes
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu",
           "HF_HUB_OFFLINE": "1", "MLFLOW_DISABLE_TELEMETRY": "true",
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    env.pop("RAY_ADDRESS", None)
    dashboard = _free_port()
    cmd = [str(Path(sys.executable).parent / "ray"), "start", "--head", f"--port={_free_port()}", "--num-cpus=2",
           "--object-store-memory=268435456", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}",
           "--include-dashboard=true", f"--ray-client-server-port={_free_port()}",
           f"--dashboard-agent-listen-port={_free_port()}", "--disable-usage-stats", f"--temp-dir={temp_dir}"]
    try:
        t0 = time.perf_counter()
        subprocess.run(cmd, env=env, check=True, capture_output=True, timeout=120)
        print(f"ray start: {time.perf_counter() - t0:.1f} s")
        yield f"http://127.0.0.1:{dashboard}"
    finally:
        _kill_head(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def project(tmp_path_factory, tiny_data, head):  # noqa: F811
    """A minimal checkout: code, tokenizer, tiny data and a tiny params.yaml whose cluster.address is the head."""
    root = tmp_path_factory.mktemp("project")
    ignore = shutil.ignore_patterns("__pycache__")
    for part in ("components", "pipelines", "assets/tokenizers/llama", "infra/deepspeed"):  # infra: the ZeRO JSONs
        shutil.copytree(REPO / part, root / part, ignore=ignore)
    for part in ("raw", "validated", "layouts"):
        shutil.copytree(tiny_data.root / part, root / "data" / part)
    params = yaml.safe_load((REPO / "params/smoke.yaml").read_text())  # the random tiny model
    params["cluster"]["address"] = head
    params["train"]["pretrain"].update(epochs=0.5, global_batch=2, micro_batch=2, limit=8, max_length=1024)
    params["tracking"]["uri"] = f"sqlite:///{root}/mlflow.db"
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return root


def _in(path: Path):
    class _Cwd:
        def __enter__(self):
            self.before = Path.cwd()
            os.chdir(path)

        def __exit__(self, *exc):
            os.chdir(self.before)

    return _Cwd()


def test_train_stage_submits_itself_and_fetches_the_outputs(project):
    """`dvc repro`'s command with cluster.address = http://...: a real pretrain job, outputs copied back."""
    from components.tracking.mlflow_logging import sha256_file

    t0 = time.perf_counter()  # the stage's own command line, as dvc.yaml runs it (tests never import stage modules)
    done = subprocess.run([sys.executable, "-m", "pipelines.train", "--stage", "pretrain"], cwd=project,
                          capture_output=True, text=True)
    wall = time.perf_counter() - t0
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "Running entrypoint for job" in out and "--local" in out  # the job log was streamed
    result = json.loads(out[out.rindex('{\n  "job_id"'):])
    assert result["status"] == "SUCCEEDED", result
    pointer = json.loads((project / "models/pretrain.json").read_text())
    assert pointer == result["pointer"]
    assert pointer["model_sha256"] == sha256_file(project / "models/pretrain/model.safetensors")
    shared = Path(result["output_dir"])
    assert shared == project / "ray_results/outputs/pretrain" / result["job_id"]  # this job's own folder
    assert (shared / "models/pretrain.json").exists()
    checkpoint = Path(pointer["checkpoint_uri"])  # in the run's own folder on shared storage, not the temp copy
    assert checkpoint.parent.parent == project / "ray_results/pretrain" and checkpoint.parent.name.startswith(
        "pretrain-") and (checkpoint.parent / "steps.jsonl").exists()
    metrics = json.loads((project / "reports/train/pretrain_metrics.json").read_text())
    assert metrics["steps"] == 2 and (project / "reports/train/pretrain_loss.csv").exists()
    import mlflow

    run = mlflow.MlflowClient(f"sqlite:///{project}/mlflow.db").get_run(pointer["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    print(f"submitted pretrain end to end: {wall:.1f} s, job {result['wall_seconds']} s")


def test_failed_job_is_a_clear_error_and_nonzero_exit(project, head, capsys):
    from cli import submit

    entry = "python -c \"import sys; print('boom: bad shard'); sys.exit(3)\""
    with _in(project):
        rc = submit.main(["--address", head, "--stage", "finetune", "--entrypoint", entry])
    err = capsys.readouterr().err
    assert rc == 1
    assert "ended FAILED" in err and "exit code 3" in err and "boom: bad shard" in err


def test_no_wait_then_attach_fetches_a_pointer(project, head, capsys, tmp_path):
    """A stand-in job writes the outputs contract (OUT/models/<stage>.json, reports) into --output-dir."""
    from cli import submit

    out = tmp_path / "shared"
    script = (f"import json, pathlib; o = pathlib.Path({str(out)!r}); (o / 'models').mkdir(parents=True); "
              "(o / 'reports/train').mkdir(parents=True); (o / 'reports/train/finetune_metrics.json').write_text('{}');"
              " (o / 'models/finetune.json').write_text(json.dumps({'mlflow_run_id': 'r1'}))")
    base = ["--address", head, "--stage", "finetune", "--output-dir", str(out)]
    with _in(project):
        assert submit.main([*base, "--no-wait", "--entrypoint", f"python -c {json.dumps(script)}"]) == 0
        job_id = json.loads(capsys.readouterr().out)["job_id"]
        assert submit.main([*base, "--attach", job_id]) == 0
    out_text = capsys.readouterr().out
    result = json.loads(out_text[out_text.rindex('{\n  "job_id"'):])
    assert result["job_id"] == job_id and result["status"] == "SUCCEEDED"
    assert result["pointer"] == {"mlflow_run_id": "r1"}
    assert json.loads((project / "models/finetune.json").read_text()) == {"mlflow_run_id": "r1"}
    assert (project / "reports/train/finetune_metrics.json").exists()
