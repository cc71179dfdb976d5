"""The register stage's work (components/tracking/stage_records.py) end to end on files in tmp: pointer +
eval/validate metrics + params -> a registered version with provenance tags, the decision, the promotion log and
the printed summary (real sqlite MLflow)."""

import json
from pathlib import Path

import pytest
import yaml

from components.config import load_params
from components.tracking import promotion_log as plog
from components.tracking.mlflow_logging import sha256_file
from components.tracking.registry import Registry
from components.tracking.stage_records import RegisterInputs, decision_summary, register_from_reports
from tests.tracking.test_registry import log_models

HEADLINE = {"textvqa": 12.5, "pope": 50.1, "gqa": 30.0, "mme": 812.0, "scienceqa": 40.0, "mmbench": 20.0,
            "mmbench_cn": 18.0}
VALIDATE = {"source": "synthetic", "rows_in": 216, "quarantined": 0, "images": 208,
            "sets": {"pretrain": {"rows_in": 104, "valid": 104, "quarantined": 0, "quarantined_fraction": 0.0},
                     "finetune": {"rows_in": 112, "valid": 112, "quarantined": 0, "quarantined_fraction": 0.0}}}


def write(path, value):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(value) if path.suffix in (".yaml", ".lock") else json.dumps(value))
    return str(path)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One database for the module (a new sqlite store spends seconds in migrations); a model name per test."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('stage') / 'mlflow.db'}"
    return uri, log_models(uri, 3)


def stage_files(tmp_path, repo_root, uri, model, headline, skipped=None, name="llava-uhd"):
    params = yaml.safe_load((repo_root / "params.yaml").read_text())
    params["tracking"]["uri"] = uri
    params["registry"]["model_name"] = name
    model_uri, run_id = model
    weights = tmp_path / "models" / run_id / "model.safetensors"  # stands for the weights: named by their sha256
    weights.parent.mkdir(parents=True, exist_ok=True)
    weights.write_text(f"the weights of {run_id}")
    pointer = {"mlflow_run_id": run_id, "model_uri": model_uri, "checkpoint_uri": "/ckpt",
               "model_sha256": sha256_file(weights)}
    lock = {"schema": "2.0", "stages": {"validate": {"outs": [{"path": "data/validated", "md5": "feed.dir"}]}}}
    inputs = RegisterInputs(pointer=write(tmp_path / "p.json", pointer),
                            eval_metrics=write(tmp_path / "eval.json", {"headline": headline, "benchmarks": {},
                                                                        "skipped": skipped or {}}),
                            validate_metrics=write(tmp_path / "validate.json", VALIDATE),
                            dvc_lock=write(tmp_path / "dvc.lock", lock), model_dir=str(weights.parent))
    return load_params(write(tmp_path / "params.yaml", params)), inputs, tmp_path / "reports/registry/promotions.jsonl"


def register(args) -> dict:
    decision = register_from_reports(*args)
    print(decision_summary(decision))
    return decision


def test_register_stage_end_to_end(tmp_path, repo_root, capsys, store):
    uri, models = store
    first = register(stage_files(tmp_path, repo_root, uri, models[0], HEADLINE))
    assert json.loads(json.dumps(first)) == first  # the stage writes it as decision.json
    assert first["promoted"] and first["aliases_after"] == {"candidate": "1", "champion": "1"}
    assert all(g["passed"] for g in first["gates"].values())
    assert first["model_sha256"] == sha256_file(tmp_path / "models" / models[0][1] / "model.safetensors")
    assert "llava-uhd version 1: candidate; PROMOTED to champion" in capsys.readouterr().out
    tags = Registry("llava-uhd", uri).version_tags("1")
    assert tags["data.validated_md5"] == "feed.dir" and len(tags["params_sha256"]) == 64
    assert tags["model_uri"] == models[0][0] and float(tags["headline.mme"]) == 812.0
    assert tags["validation.sets.finetune"] == "0.0" and tags["checkpoint_uri"] == "/ckpt"

    worse = {**HEADLINE, "pope": 40.0}
    del worse["gqa"]
    args = stage_files(tmp_path, repo_root, uri, models[1], worse, skipped={"gqa": "no images"})
    second = register(args)  # a rejected candidate is a decision, not an error
    assert not second["promoted"] and second["aliases_after"] == {"candidate": "2", "champion": "1"}
    assert second["reasons"] == ["gqa: no headline score (skipped: no images)",
                                 "pope: 40 is 10.1 points below the champion's 50.1 (tolerance 0.5)"]
    assert "not promoted (champion unchanged)" in capsys.readouterr().out

    records = plog.read_jsonl(tmp_path / "reports/registry/promotions.jsonl")
    assert [r["action"] for r in records] == ["candidate", "promote", "candidate", "reject"]
    assert records[3]["version"] == "2" and records[3]["to_champion"] == "1" and records[3]["gates"]["gates"]


def test_pointer_without_model_uri_registers_the_runs_logged_model(tmp_path, repo_root, store):
    uri, models = store
    model_uri, run_id = models[2]
    register(stage_files(tmp_path, repo_root, uri, (None, run_id), HEADLINE, name="by-run"))
    mv = Registry("by-run", uri).client.get_model_version("by-run", "1")
    assert mv.source == model_uri and mv.run_id == run_id


def test_weights_without_their_run_record_register_once(tmp_path, repo_root, store):
    """The weights came back through `dvc checkout` / the run cache / `dvc pull` and models/finetune.json (this
    machine's record) names another run, or is absent: the version already registered for those weights is found by
    their sha256 (no second version); weights never registered here are logged from the folder, then found (#13)."""
    uri, models = store
    params, inputs, log = stage_files(tmp_path, repo_root, uri, models[0], HEADLINE, name="restored")
    first = register_from_reports(params, inputs, log)
    rerun = json.loads(Path(inputs.pointer).read_text())  # a rerun: the same bytes from a new MLflow run
    _, new_run = models[1]
    Path(inputs.pointer).write_text(json.dumps({**rerun, "mlflow_run_id": new_run, "model_uri": models[1][0]}))
    assert register_from_reports(params, inputs, log)["version"] == first["version"]
    Path(inputs.pointer).write_text(json.dumps({"mlflow_run_id": "another", "model_sha256": "0" * 64}))
    again = register_from_reports(params, inputs, log)
    assert again["version"] == first["version"] == "1"

    unknown = Path(inputs.model_dir) / "model.safetensors"
    unknown.write_text("weights trained on another machine")
    Path(inputs.pointer).unlink()
    with pytest.raises(SystemExit, match="no MLflow model for weights"):
        register_from_reports(params, inputs, log)  # nothing to register them from, and no way to log them given
    from components.inference.pyfunc import log_restored_weights

    logged = []
    pulled = register_from_reports(params, inputs, log, log_weights=lambda: logged.append(1) or log_restored_weights(
        params, inputs.model_dir, None))
    assert logged == [1]
    assert pulled["version"] == "2" and pulled["model_sha256"] == sha256_file(unknown)
    registry = Registry("restored", uri)
    assert registry.version_tags("2")["model_sha256"] == sha256_file(unknown)
    assert register_from_reports(params, inputs, log)["version"] == "2"  # found by its sha, not logged again
