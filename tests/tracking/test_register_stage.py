"""The register stage's work (components/tracking/stage_records.py) end to end on files in tmp: pointer +
eval/validate metrics + params -> a registered version with provenance tags, the decision, the promotion log and
the printed summary (real sqlite MLflow)."""

import json

import pytest
import yaml

from components.config import load_params
from components.tracking import promotion_log as plog
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
    pointer = {"mlflow_run_id": run_id, "model_uri": model_uri, "checkpoint_uri": "/ckpt", "model_sha256": "ab" * 32}
    lock = {"schema": "2.0", "stages": {"validate": {"outs": [{"path": "data/validated", "md5": "feed.dir"}]}}}
    inputs = RegisterInputs(pointer=write(tmp_path / "p.json", pointer),
                            eval_metrics=write(tmp_path / "eval.json", {"headline": headline, "benchmarks": {},
                                                                        "skipped": skipped or {}}),
                            validate_metrics=write(tmp_path / "validate.json", VALIDATE),
                            dvc_lock=write(tmp_path / "dvc.lock", lock))
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
    assert all(g["passed"] for g in first["gates"].values()) and first["model_sha256"] == "ab" * 32
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
