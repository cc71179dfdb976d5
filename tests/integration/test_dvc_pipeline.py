"""`dvc repro` on a scratch copy of the repository (the smoke-sized profile): the whole DAG runs, download to
register, is idempotent, a forced rerun writes the same bytes (git sees no change, #13), params are scoped
(`dvc exp run -S compressor=mlp` re-runs training onwards only), the experiment runs from a fresh shell with the
venv's dvc (bin/python finds the interpreter) and the README's way back restores the baseline exactly."""

import csv
import io
import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

# four DAG runs (repro, no-op repro, forced rerun, a param-scoped exp run) and the way back: ~10 min on 2 cores
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

COPY = ["bin", "components", "pipelines", "params", "dvc.yaml", "released", ".dvcignore", ".gitignore",
        "pyproject.toml", "assets/tokenizers", "infra/deepspeed"]
TRAINING = ("pretrain", "finetune")
DATA = ("download", "validate", "layouts")
AFTER_TRAINING = (*TRAINING, "evaluate", "register")


def sh(cmd, cwd, env):
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, shell=True)
    assert result.returncode == 0, f"{cmd}\n{result.stdout}\n{result.stderr}"
    return result.stdout + result.stderr


@pytest.fixture
def project(repo_root, tmp_path):
    for name in COPY:
        src = repo_root / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, tmp_path / name)
    for cache in tmp_path.rglob("__pycache__"):
        shutil.rmtree(cache)
    # the smoke profile: the whole DAG with the random tiny model (the default's SmolLM2 takes minutes a stage)
    params = yaml.safe_load((tmp_path / "params/smoke.yaml").read_text())
    params["data"]["synthetic"] = {"train_scenes": 4, "eval_scenes": 2, "easy_vqa_images": 2, "fine_line_scenes": 0}
    for stage in TRAINING:  # the tiniest run: a quarter epoch at global batch 2 (14 and 16 samples: 2 steps each)
        params["train"][stage].update(epochs=0.25, global_batch=2, micro_batch=2)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS")}
    env = dict(env, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}", DVC_NO_ANALYTICS="1",
               PYTHONPATH=str(tmp_path), GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t",
               GIT_COMMITTER_EMAIL="t@t")
    sh("git init -q && dvc init -q && git add -A && git commit -qm init", tmp_path, env)
    return tmp_path, env


def _pointers(root):
    from components.tracking.mlflow_logging import sha256_file

    pointers = {}
    for stage in TRAINING:
        pointer = json.loads((root / f"models/{stage}.json").read_text())
        assert pointer["mlflow_run_id"] and pointer["model_uri"], pointer
        assert pointer["model_sha256"] == sha256_file(root / f"models/{stage}/model.safetensors")
        metrics = json.loads((root / f"reports/train/{stage}_metrics.json").read_text())
        # steps from the usable set: ceil(0.25 x full global batches of 2), recorded with the counts they came from
        # (the default's 14 / 16 samples give 2 steps each; an ablation with fewer usable samples, fewer)
        assert metrics["steps_per_epoch"] == metrics["data"]["samples"] // 2 and metrics["epochs"] == 0.25
        assert metrics["steps"] == metrics["planned_steps"] == math.ceil(0.25 * metrics["steps_per_epoch"]) >= 1
        assert metrics["final_loss"] > 0
        lines = (root / f"reports/train/{stage}_loss.csv").read_text().splitlines()
        assert len(lines) == 1 + metrics["steps"]  # header + one row a step
        pointers[stage] = pointer
    return pointers


def _evaluated_and_registered(root, version: str) -> dict:
    metrics = json.loads((root / "reports/eval/metrics.json").read_text())
    assert set(metrics["headline"]) == {"textvqa", "pope", "gqa", "mme", "scienceqa", "mmbench", "mmbench_cn"}
    assert "| this run (synthetic" in (root / "reports/eval/results.md").read_text()
    decision = json.loads((root / "reports/registry/decision.json").read_text())
    assert decision["version"] == version and decision["aliases_after"]["candidate"] == version
    return decision


def test_repro_is_complete_idempotent_and_param_scoped(project):
    root, env = project
    first = sh("dvc repro", root, env)
    for stage in (*DATA, *AFTER_TRAINING):
        assert f"Running stage '{stage}'" in first
    assert "released/dvc.yaml" not in first  # the root dvc.yaml only: released/ runs when named
    assert "Running stage 'released/dvc.yaml:evaluate'" in sh("dvc repro released/dvc.yaml", root, env)
    assert (root / "reports/released/results.md").read_text().startswith("Nothing evaluated: `eval.model` is empty")
    images = pq.read_table(root / "data/validated/images.parquet")
    table = pq.read_table(root / "data/layouts/layouts.parquet")
    # pretrain: 4 scenes + 2 easy-VQA + 8 photos; finetune: 4 scenes + 2 easy-VQA + 8 photos
    assert images.num_rows == table.num_rows == 28 and table.column("error").null_count == 28
    assert (root / "reports/layouts/metrics.json").exists() and (root / "reports/layouts/distributions.png").exists()
    assert (root / "reports/validate/metrics.json").exists()

    pointers = _pointers(root)
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    for pointer in pointers.values():
        assert client.get_run(pointer["mlflow_run_id"]).info.status == "FINISHED"
    first_decision = _evaluated_and_registered(root, "1")
    assert first_decision["promoted"] and first_decision["aliases_after"]["champion"] == "1"  # no champion before

    assert "up to date" in sh("dvc repro", root, env)
    assert "up to date" in sh("dvc repro released/dvc.yaml", root, env)

    sh("git add -A && git commit -qm 'baseline run'", root, env)  # dvc exp needs the baseline committed
    rerun = sh("dvc repro --force --no-run-cache", root, env)  # every stage again, from scratch
    assert all(f"Running stage '{stage}'" in rerun for stage in (*DATA, *AFTER_TRAINING))
    assert sh("git status --porcelain", root, env) == "", "a rerun changed tracked files (dvc.lock, metrics, ...)"

    # The README's experiment command from a fresh shell: no venv on PATH, the venv's dvc by its path.
    (root / ".venv").symlink_to(sys.prefix)
    fresh = dict(env, PATH="/usr/bin:/bin")
    fresh.pop("VIRTUAL_ENV", None)
    retrain = sh(".venv/bin/dvc exp run -S compressor=mlp", root, fresh)  # training onwards, not the data
    for stage in AFTER_TRAINING:
        assert f"Running stage '{stage}'" in retrain
    for stage in DATA:
        assert f"Running stage '{stage}'" not in retrain
    assert all(_pointers(root)[s]["mlflow_run_id"] != pointers[s]["mlflow_run_id"] for s in TRAINING)
    _evaluated_and_registered(root, "2")
    rows = list(csv.DictReader(io.StringIO(sh("dvc exp show --csv", root, env))))
    assert {r["compressor"] for r in rows} >= {"resampler", "mlp"}  # the baseline and the experiment side by side
    assert all(r["headline.textvqa"] not in ("", None) for r in rows if r["compressor"] == "mlp")

    assert "compressor: mlp" in (root / "params.yaml").read_text()
    back = sh("git checkout params.yaml && dvc repro", root, env)  # README: back to the committed baseline
    assert all(f"Running stage '{stage}'" not in back for stage in (*DATA, *TRAINING))  # restored, not retrained
    assert sh("git status --porcelain", root, env) == "", "the way back did not restore the baseline's bytes"

    # A model the pipeline did not train, scored without training anything (README "Released checkpoints"): here
    # the pipeline's own export stands in for a released directory; only released/dvc.yaml's stage runs.
    scored = sh(".venv/bin/dvc exp run released/dvc.yaml -S eval.model=models/finetune -S eval.paper_row=llava-1.5-13b",
                root, fresh)
    assert "Running stage 'released/dvc.yaml:evaluate'" in scored
    assert all(f"Running stage '{stage}'" not in scored for stage in (*DATA, *AFTER_TRAINING))
    released = json.loads((root / "reports/released/metrics.json").read_text())
    assert released["headline"] == json.loads((root / "reports/eval/metrics.json").read_text())["headline"]
    assert "| difference (this run - LLaVA-1.5-13B (paper)) |" in (root / "reports/released/results.md").read_text()
    sh("git checkout -- . && dvc checkout", root, env)

    params = yaml.safe_load((root / "params.yaml").read_text())
    params["slicing"]["preset"] = "uhd-eccv"
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    second = sh("dvc repro layouts", root, env)  # the target only: the training stages are checked above
    assert "Running stage 'layouts'" in second
    assert "Running stage 'download'" not in second and "Running stage 'validate'" not in second
    assert set(pq.read_table(root / "data/layouts/layouts.parquet").column("preset").to_pylist()) == {"uhd-eccv"}
    metrics = sh("dvc metrics show --json", root, env)
    assert re.search(r'"images":\s*28\b', metrics), metrics
