"""Run a training stage as a Ray job on a running cluster (`uhd submit`; `dvc repro` when cluster.address is http).

The contract, end to end:

1. Submitter (this module, in the checkout): uploads the checkout as the job's `working_dir` (minus caches and
   the stage's own outputs, `EXCLUDES`; Ray caps the zip at 512 MiB, so at paper scale the images and weights are
   read from shared storage, see infra/README.md) and submits
   `python -m pipelines.train --stage S --params P --local --storage-path ST --models OUT/models
   --reports OUT/reports/train [extra args]` with `entrypoint_num_cpus=0` (the driver only waits on Ray Train).
2. The job: `--local` means "train here, never submit again" (no recursion, whatever `cluster.address` says);
   it connects with the job supervisor's RAY_ADDRESS, keeps checkpoints under ST and writes
   `models/<stage>/`, `models/<stage>.json` and `reports/train/<stage>_*` under OUT. Both are absolute paths on
   shared storage: the job's working_dir is a temporary copy that Ray deletes afterwards.
   ST = `train.ray.storage_path` resolved on the submitter; OUT = `--output-dir`, default
   `ST/outputs/<stage>/<job id>`. The job id (`SubmitSpec.job_id`, `llava-uhd-<stage>-<UTC time>-<6 hex>`) is
   chosen before submitting, so the entrypoint and the fetch name the same folder, and each job has its own:
   two checkouts (or queued experiments) submitting the same stage never share or overwrite outputs. Its
   checkpoints go to its own run folder `ST/<stage>/<run id>/` (ray_trainer.py). Nothing here deletes either.
3. Submitter: follows the job's log until it ends; a job that does not end SUCCEEDED raises `JobFailed` with
   Ray's message and the log tail. On success it copies its own job's OUT (never another job's) back into the
   checkout (the DVC outs) and returns the pointer JSON. That copy needs OUT visible at the same path on the
   submitting machine (the head itself, a host with the shared volume mounted, or a loopback head); otherwise
   pass `fetch=False` and read OUT there.

MLflow: the job logs wherever `tracking.uri` / the cluster's $MLFLOW_TRACKING_URI point. A submitter's own
$MLFLOW_TRACKING_URI is forwarded; on a loopback head the submitter's resolved URI is forwarded too (same disk),
so the run lands in the checkout's mlflow.db rather than in the deleted temp copy. Forwarded URIs lose any
user:password (the dashboard shows a job's environment): the cluster sets MLFLOW_TRACKING_USERNAME/_PASSWORD.
Secret files (SECRETS: .dvc/config.local, .env, keys) are never in the uploaded package.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import shutil
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import urlparse

from components.tracking.credentials import strip_credentials

JOB_SCHEMES = ("http://", "https://")
# Secrets never travel: DVC remote passwords, dotenv files, keys and credentials files, wherever they sit.
SECRETS = (".dvc/config.local", "**/.env", "**/.env.*", "**/.netrc", "**/*.pem", "**/*.key", "**/.aws", "**/.ssh",
           "**/credentials.json")
# Caches and local state never travel; the stage outputs are written on shared storage instead.
# Ray would also drop everything .gitignore lists, which includes the DVC-tracked data the job needs
# (data/validated, data/layouts, data/raw, models/pretrain), so .gitignore is switched off and this list rules.
EXCLUDES = (".git", ".venv", ".dvc/cache", ".dvc/tmp", "ray_results", "mlruns", "mlflow.db", "**/__pycache__",
            ".pytest_cache", ".hypothesis", ".ruff_cache", "*.egg-info", "dvc_plots", "scratch", "models/finetune",
            *SECRETS)
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")


class JobFailed(RuntimeError):
    def __init__(self, job_id: str, status: str, message: str, log_tail: str):
        super().__init__(f"Ray job {job_id} ended {status}: {message or 'no message'}\n--- last log lines ---\n"
                         f"{log_tail}")
        self.job_id, self.status = job_id, status


def is_job_address(address: str) -> bool:
    """A Ray dashboard / job-server address (submit a job); `ray://` and `auto` are ray.init addresses."""
    return address.startswith(JOB_SCHEMES)


def is_loopback(address: str) -> bool:
    return (urlparse(address).hostname or "") in ("127.0.0.1", "localhost", "::1")


def new_job_id(stage: str) -> str:
    """Unique without coordination between submitters (the random part), sortable by submission (UTC time)."""
    return f"llava-uhd-{stage}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:6]}"


@dataclass(frozen=True)
class SubmitSpec:
    address: str
    stage: str
    repo: Path  # the checkout to upload and to copy the outputs into
    params: str = "params.yaml"  # relative to repo (it travels in the working_dir)
    storage_path: str = "ray_results"  # train.ray.storage_path
    output_dir: str | None = None  # default: <storage>/outputs/<stage>/<job_id>
    runtime_pip: bool = False  # install requirements.lock into the job env (image without the pins)
    excludes: tuple[str, ...] = ()
    train_args: tuple[str, ...] = ()  # passed through to pipelines.train (e.g. --raw /mnt/shared/data/raw)
    env: dict = field(default_factory=dict)
    entrypoint: str | None = None  # override (tests); default: the train stage
    job_id: str | None = None  # the Ray submission id; None: a fresh new_job_id(stage) (attach: the job's id)

    def __post_init__(self):
        # Fixed at construction, not at submit: OUT (below) is named after it and must be the same folder for the
        # entrypoint's --models/--reports, the job metadata and fetch_outputs.
        if self.job_id is None:
            object.__setattr__(self, "job_id", new_job_id(self.stage))

    @property
    def storage(self) -> Path:
        return (self.repo / self.storage_path).resolve()  # an absolute storage_path stays as it is

    @property
    def out(self) -> Path:
        """This job's outputs: `--output-dir` if given, else its own `<storage>/outputs/<stage>/<job_id>`."""
        if self.output_dir:
            return Path(self.output_dir).resolve()
        return self.storage / "outputs" / self.stage / self.job_id


def entrypoint(spec: SubmitSpec) -> str:
    if spec.entrypoint:
        return spec.entrypoint
    args = ["python", "-m", "pipelines.train", "--stage", spec.stage, "--params", spec.params, "--local",
            "--storage-path", str(spec.storage), "--models", str(spec.out / "models"),
            "--reports", str(spec.out / "reports" / "train"), *spec.train_args]
    if spec.stage == "finetune" and "--init-from" not in spec.train_args:
        args += ["--init-from", "models/pretrain"]  # the checkout's pretrain export, uploaded with the working_dir
    return shlex.join(args)


def runtime_env(spec: SubmitSpec, tracking_uri: str | None = None) -> dict:
    env_vars = {k: str(v) for k, v in spec.env.items()}
    forwarded = os.environ.get("MLFLOW_TRACKING_URI") or (tracking_uri if is_loopback(spec.address) else None)
    if forwarded:  # without user:password: the job's environment is readable on the dashboard
        env_vars.setdefault("MLFLOW_TRACKING_URI", strip_credentials(forwarded))
    env = {"working_dir": str(spec.repo), "excludes": [*EXCLUDES, *spec.excludes], "env_vars": env_vars}
    if spec.runtime_pip:
        lock = (spec.repo / "requirements.lock").read_text().splitlines()
        env["pip"] = {"packages": [x for x in lock if x.strip() and not x.startswith("#")], "pip_check": False}
    return env


@contextlib.contextmanager
def _gitignore_off():
    """Ray's documented switch, read by the uploading process; restored afterwards."""
    key, before = "RAY_RUNTIME_ENV_IGNORE_GITIGNORE", os.environ.get("RAY_RUNTIME_ENV_IGNORE_GITIGNORE")
    os.environ[key] = "1"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = before


def submit(client, spec: SubmitSpec, tracking_uri: str | None = None) -> str:
    with _gitignore_off():
        return client.submit_job(entrypoint=entrypoint(spec), runtime_env=runtime_env(spec, tracking_uri),
                                 submission_id=spec.job_id, entrypoint_num_cpus=0,
                                 metadata={"stage": spec.stage, "output_dir": str(spec.out)})


def follow_logs(client, job_id: str, sink: Callable[[str], object]) -> None:
    """Stream the job's stdout/stderr as it runs; returns when the job server closes the stream (job ended)."""

    async def _tail():
        async for chunk in client.tail_job_logs(job_id):
            sink(chunk)

    asyncio.run(_tail())


def wait(client, job_id: str, sink: Callable[[str], object] | None = None, poll_s: float = 1.0) -> str:
    """Follow logs (if `sink`), then poll until a terminal status; raise JobFailed unless SUCCEEDED."""
    if sink is not None:
        try:
            follow_logs(client, job_id, sink)
        except RuntimeError as err:  # a dropped stream is not a failed job: fall back to polling the status
            sink(f"[uhd submit] log stream ended early ({err}); waiting for the job status\n")
    while (status := str(client.get_job_status(job_id)).rsplit(".", 1)[-1]) not in TERMINAL:
        time.sleep(poll_s)
    if status != "SUCCEEDED":
        message = (client.get_job_info(job_id).message or "").split(", last available logs")[0]  # logs: below
        tail = "\n".join(client.get_job_logs(job_id).splitlines()[-30:])
        raise JobFailed(job_id, status, message, tail)
    return status


def fetch_outputs(spec: SubmitSpec) -> dict:
    """Copy this job's outputs (spec.out, nothing else) from shared storage into the checkout; return the stage's
    pointer JSON."""
    import json

    out, stage = spec.out, spec.stage
    pointer = out / "models" / f"{stage}.json"
    if not pointer.exists():
        raise FileNotFoundError(f"the job succeeded but {pointer} is not visible here: mount the shared storage at "
                                "the same path on this machine, or read the outputs on the cluster (--no-fetch)")
    models, reports = spec.repo / "models", spec.repo / "reports" / "train"
    models.mkdir(parents=True, exist_ok=True)
    reports.mkdir(parents=True, exist_ok=True)
    if (out / "models" / stage).is_dir():
        shutil.rmtree(models / stage, ignore_errors=True)
        shutil.copytree(out / "models" / stage, models / stage)
    shutil.copy2(pointer, models / f"{stage}.json")
    for report in (out / "reports" / "train").glob(f"{stage}_*"):
        shutil.copy2(report, reports / report.name)
    return json.loads(pointer.read_text())


def _stdout(chunk: str) -> None:
    sys.stdout.write(chunk)  # looked up per call: whatever stdout is now (a pytest capture, a DVC pipe)
    sys.stdout.flush()


def run(spec: SubmitSpec, wait_for_it: bool = True, fetch: bool = True, attach: str | None = None,
        tracking_uri: str | None = None, sink: Callable[[str], object] | None = _stdout) -> dict:
    """Submit (or attach to `attach`), follow (logs to `sink`; None = silent), fetch.
    Returns {"job_id", "status", "output_dir", "pointer", "wall_seconds"}."""
    from ray.job_submission import JobSubmissionClient

    client = JobSubmissionClient(spec.address)
    t0 = time.perf_counter()
    if attach:  # that job's outputs, not a fresh id's (an explicit output_dir still wins)
        spec = replace(spec, job_id=attach)
    job_id = attach or submit(client, spec, tracking_uri)
    result = {"job_id": job_id, "status": "SUBMITTED", "output_dir": str(spec.out), "pointer": None}
    if not wait_for_it:
        return result
    try:
        result["status"] = wait(client, job_id, sink)
    except KeyboardInterrupt:  # an interrupted `dvc repro` must not leave a paper-scale job running unseen
        client.stop_job(job_id)
        raise
    result["wall_seconds"] = round(time.perf_counter() - t0, 2)
    if fetch:
        result["pointer"] = fetch_outputs(spec)
    return result
