"""Runs that share storage own their folders (#13): two checkouts or queued DVC experiments training (or
submitting) the same stage on one cluster never delete, overwrite, resume from or fetch each other's files.
No Ray here (a stand-in job client, a stand-in fit); the concurrent Ray Train runs are in test_ray_trainer.py."""

import json
import shlex
from pathlib import Path

import pytest

from components.config import Params
from components.training import stage as stage_module
from components.training.ray_trainer import check_resume_source, read_steps
from components.training.stage import StageFiles, run_training_stage
from components.training.submit import SubmitSpec, entrypoint, fetch_outputs, run


class Stop(Exception):
    pass


def test_a_stage_run_gets_a_fresh_folder_and_deletes_no_other_run(tmp_path, monkeypatch):
    """run_training_stage used to rmtree <storage>/<stage> (every run of the stage, running or not)."""
    storage = tmp_path / "shared"
    other = storage / "pretrain" / "pretrain-20000101T000000Z-0123abcd"  # another checkout's run, maybe training
    (other / "checkpoint_step000002").mkdir(parents=True)
    (other / "steps.jsonl").write_text('{"step": 1, "loss": 1.0, "lr": 0.0, "resumed": false}\n')
    seen = []

    def fake_fit_on_ray(cfg, settings, address):
        assert (other / "checkpoint_step000002").is_dir() and len(read_steps(other)) == 1
        seen.append((cfg, settings))
        raise Stop  # the rest of the stage (export, MLflow) is not what this test is about

    monkeypatch.setattr(stage_module, "fit_on_ray", fake_fit_on_ray)
    files = StageFiles(*(str(tmp_path / name) for name in ("validated", "layouts", "raw", "models", "reports")))
    for _ in range(2):
        with pytest.raises(Stop):
            run_training_stage(Params(), "pretrain", files, str(storage))
    (cfg_a, a), (cfg_b, b) = seen
    assert a.run_id != b.run_id and a.run_id.startswith("pretrain-") and a.name == b.name == "pretrain"
    for cfg, settings in seen:
        assert settings.run_dir.parent == storage / "pretrain" and settings.run_dir != other
        assert cfg.output_dir == str(settings.run_dir)
    assert (other / "checkpoint_step000002").is_dir()


def test_resume_reads_only_the_runs_folder_or_the_explicit_one(tmp_path):
    """DeepSpeed unpickles the checkpoint it resumes from: anything outside the run's folder (or the caller's
    explicit resume_from) is refused, including a sibling whose name merely starts like it."""
    run_dir, explicit = tmp_path / "pretrain/run-a", tmp_path / "elsewhere/step2"
    check_resume_source(str(run_dir / "checkpoint_step000002"), str(run_dir), None)
    check_resume_source(str(explicit), str(run_dir), str(explicit))
    for other in ("pretrain/run-b/checkpoint_step000002", "pretrain/run-ab/checkpoint_step000002", "pretrain",
                  "elsewhere/step2"):
        with pytest.raises(RuntimeError, match="refusing to resume"):
            check_resume_source(str(tmp_path / other), str(run_dir), None)


class FakeJobs:
    """A job server whose jobs run at submission: the entrypoint's --models / --reports get a pointer, weights
    and a report that name the job, as pipelines.train --local would write them."""

    submitted: list = []

    def __init__(self, address):
        pass

    def submit_job(self, entrypoint, submission_id, metadata, **_):
        args = shlex.split(entrypoint)
        models, reports = Path(args[args.index("--models") + 1]), Path(args[args.index("--reports") + 1])
        (models / "pretrain").mkdir(parents=True, exist_ok=True)
        reports.mkdir(parents=True, exist_ok=True)
        (models / "pretrain/model.safetensors").write_text(submission_id)
        (models / "pretrain.json").write_text(json.dumps({"job": submission_id}))
        (reports / "pretrain_metrics.json").write_text(json.dumps({"job": submission_id}))
        FakeJobs.submitted.append({"id": submission_id, "models": models, "metadata": metadata})
        return submission_id

    def get_job_status(self, job_id):
        return "SUCCEEDED"


def test_two_submitted_jobs_of_one_stage_write_and_fetch_their_own_outputs(tmp_path, monkeypatch):
    """Two checkouts submit pretrain to one cluster, the second job finishing last; each fetches its own job's
    pointer, weights and reports (the default OUT was <storage>/outputs/<stage> for both: the last job won)."""
    import ray.job_submission

    monkeypatch.setattr(ray.job_submission, "JobSubmissionClient", FakeJobs)
    monkeypatch.setattr(FakeJobs, "submitted", [])
    shared = tmp_path / "shared"
    spec = {key: SubmitSpec("http://head:8265", "pretrain", tmp_path / key, storage_path=str(shared)) for key in "ab"}
    assert spec["a"].job_id != spec["b"].job_id and spec["a"].out != spec["b"].out
    for key in "ab":
        assert spec[key].out == shared / "outputs/pretrain" / spec[key].job_id
        assert f"--models {spec[key].out / 'models'}" in entrypoint(spec[key])
    ids = {key: run(spec[key], wait_for_it=False, sink=None)["job_id"] for key in "ab"}  # both jobs done, b last
    assert [job["id"] for job in FakeJobs.submitted] == [spec["a"].job_id, spec["b"].job_id] == [ids["a"], ids["b"]]
    assert [job["metadata"]["output_dir"] for job in FakeJobs.submitted] == [str(spec[k].out) for k in "ab"]
    # a: attached later from a fresh spec, as `uhd submit --attach ID` builds it; b: fetched with its own spec
    result = run(SubmitSpec("http://head:8265", "pretrain", tmp_path / "a", storage_path=str(shared)),
                 attach=ids["a"], sink=None)
    assert result["pointer"] == {"job": ids["a"]} and result["output_dir"] == str(spec["a"].out)
    assert fetch_outputs(spec["b"]) == {"job": ids["b"]}
    for key in "ab":
        repo = tmp_path / key
        assert json.loads((repo / "models/pretrain.json").read_text()) == {"job": ids[key]}
        assert (repo / "models/pretrain/model.safetensors").read_text() == ids[key]
        assert json.loads((repo / "reports/train/pretrain_metrics.json").read_text()) == {"job": ids[key]}
    explicit = SubmitSpec("http://head:8265", "pretrain", tmp_path / "a", output_dir=str(tmp_path / "mine"))
    assert explicit.out == tmp_path / "mine"  # --output-dir still wins
