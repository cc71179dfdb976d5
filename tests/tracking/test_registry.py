"""The model registry gates, aliases and promotion log against a real sqlite MLflow in tmp (no mocks).

The models are trivial pyfuncs: what is tested is registration, the gates, the alias moves and the log, which
do not depend on what the model computes. Each test uses its own registered-model name in one module-wide
database (a fresh sqlite store costs ~2 s of migrations); the env-var test makes a second one.
"""

import json
import os
from pathlib import Path

import mlflow
import mlflow.pyfunc
import pytest
import yaml

from cli import promote as promote_cli
from cli import rollback as rollback_cli
from components.tracking import gates as g
from components.tracking import promotion_log as plog
from components.tracking.registry import (
    GateConfig,
    Registry,
    RegistryError,
    promote,
    register_evaluated,
    rollback,
    use_tracking_uri,
)

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

HEADLINE = ("textvqa", "pope", "mme")
CFG = GateConfig(HEADLINE, tolerance=0.5, max_quarantine_increase=0.01)
BASE = {"textvqa": 20.0, "pope": 60.0, "mme": 800.0}
VALID = {"rows_in": 200, "quarantined": 2, "sets": {"pretrain": {"quarantined_fraction": 0.01},
                                                    "finetune": {"quarantined_fraction": 0.01}}}


class Constant(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        return [0] * len(model_input)


def log_models(uri: str, n: int) -> list[tuple[str, str]]:
    """n distinct logged models: [(model_uri, run_id)], as the training stage's pointer would name them."""
    out = []
    client = mlflow.MlflowClient(uri)
    found = client.get_experiment_by_name("registry-tests")
    # explicit: the fluent API may still hold an experiment id of another test's database; and the artifacts
    # beside the database (the default, ./mlruns, is the working directory)
    artifacts = Path(uri.removeprefix("sqlite:///")).parent / "artifacts"
    experiment_id = found.experiment_id if found else client.create_experiment("registry-tests",
                                                                               artifact_location=artifacts.as_uri())
    with use_tracking_uri(uri):  # logging a model needs the fluent API
        for _ in range(n):
            with mlflow.start_run(experiment_id=experiment_id) as run:
                info = mlflow.pyfunc.log_model(name="model", python_model=Constant(), pip_requirements=[])
            out.append((info.model_uri, run.info.run_id))
    return out


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    uri = f"sqlite:///{tmp_path_factory.mktemp('registry') / 'mlflow.db'}"
    return uri, log_models(uri, 4)


@pytest.fixture
def reg(store, request):
    return Registry(f"m-{request.node.name}"[:60], store[0])


def figures(headline=None, skipped=None, validate=None):
    return g.figures_from_reports({"headline": BASE if headline is None else headline, "skipped": skipped or {}},
                                  VALID if validate is None else validate)


def register(reg, models, i, fig, log):
    uri, run_id = models[i]
    return register_evaluated(reg, uri, run_id, fig, {"model_sha256": f"sha{i}", "mlflow_run_id": run_id}, CFG, log)


# -- pure gates ------------------------------------------------------------------------------------------------
def test_figures_round_trip_through_tags():
    fig = figures(skipped={"gqa": "no data"})
    assert fig.validation == {"overall": 0.01, "sets.pretrain": 0.01, "sets.finetune": 0.01}
    assert g.figures_from_tags(g.figures_to_tags(fig)) == fig
    assert g.figures_from_reports({"headline": {"pope": None, "mme": float("nan")}}, None).headline == {}


def test_gates_tolerance_and_validation_reasons():
    champ = figures()
    slightly_worse = figures({**BASE, "pope": 59.6})
    assert g.check_gates(slightly_worse, champ, HEADLINE, 0.5, 0.01)["passed"]
    result = g.check_gates(figures({**BASE, "mme": 790.0}), champ, HEADLINE, 0.5, 0.01)
    assert not result["passed"] and result["reasons"] == [
        "mme: 790 is 10 points below the champion's 800 (tolerance 0.5)"]
    worse_data = figures(validate={**VALID, "sets": {"finetune": {"quarantined_fraction": 0.05}}})
    result = g.check_gates(worse_data, champ, HEADLINE, 0.5, 0.01)
    assert not result["gates"]["validation"]["passed"] and "validation.sets.finetune" in result["reasons"][0]


def test_gates_fail_closed_on_nan():
    """The audit's case: a candidate scoring 5 against a champion's 80, 90% quarantined, NaN limits. Every
    comparison with NaN is False, so the gates are written to pass only when the comparison holds."""
    champ, nan = figures(), float("nan")
    bad = figures({**BASE, "pope": 5.0}, validate={**VALID, "sets": {"finetune": {"quarantined_fraction": 0.9}}})
    for tolerance, increase in ((nan, 0.01), (0.5, nan), (nan, nan), (float("inf"), 0.01)):
        result = g.check_gates(bad, champ, HEADLINE, tolerance, increase)
        assert not result["passed"] and all("must be a finite number >= 0" in r for r in result["reasons"])
    assert not g.check_gates(figures(), champ, HEADLINE, nan, 0.01)["passed"]  # even a candidate equal to it
    nan_scores = g.Figures({**champ.headline, "pope": nan}, {}, champ.validation)
    assert not g.gate_headline_tolerance(nan_scores, champ, HEADLINE, 0.5)["passed"]
    nan_quarantine = g.Figures(champ.headline, {}, {**champ.validation, "overall": nan})
    assert not g.gate_validation(nan_quarantine, champ, 0.01)["passed"]


# -- the registry ----------------------------------------------------------------------------------------------
def test_an_experiment_registers_a_tagged_candidate_and_never_moves_the_champion(reg, store, tmp_path):
    """`dvc exp run -S ...` (DVC_EXP_NAME set) must not promote an ablation, however well it scores."""
    log = tmp_path / "promotions.jsonl"
    uri, run_id = store[1][0]
    decision = register_evaluated(reg, uri, run_id, figures(), {"mlflow_run_id": run_id}, CFG, log,
                                  experiment="exp-mlp")
    assert decision["action"] == "experiment" and not decision["promoted"] and decision["gates_passed"]
    assert decision["aliases_after"] == {"candidate": decision["version"]}  # no champion at all yet
    assert reg.version_tags(decision["version"])["dvc_experiment"] == "exp-mlp"
    assert "uhd promote --version" in decision["reasons"][0]
    main_line = register(reg, store[1], 1, figures(), log)  # the main line's run promotes as before
    assert main_line["promoted"] and main_line["aliases_after"]["champion"] == main_line["version"]


def test_first_candidate_becomes_champion_with_provenance_tags(reg, store, tmp_path):
    log = tmp_path / "promotions.jsonl"
    decision = register(reg, store[1], 0, figures(), log)
    assert decision["promoted"] and decision["champion_before"] is None
    assert decision["aliases_after"] == {"candidate": decision["version"], "champion": decision["version"]}
    tags = reg.version_tags(decision["version"])
    assert tags["model_sha256"] == "sha0" and tags["mlflow_run_id"] == store[1][0][1]
    assert float(tags["headline.mme"]) == 800.0 and tags["gate.passed"] == "true"
    mv = reg.client.get_model_version(reg.name, decision["version"])
    assert mv.source == store[1][0][0] and mv.run_id == store[1][0][1]
    records = plog.read_jsonl(log)
    assert [r["action"] for r in records] == ["candidate", "promote"] == [r["action"] for r in reg.log_records()]
    assert records[1]["to_champion"] == decision["version"] and records[1]["user"]


def test_better_promotes_worse_stays_candidate_with_reason(reg, store, tmp_path):
    log = tmp_path / "promotions.jsonl"
    first = register(reg, store[1], 0, figures(), log)
    plus_one = {k: v + 1 for k, v in BASE.items()}
    better = register(reg, store[1], 1, figures(plus_one), log)
    assert better["promoted"] and better["champion_before"] == first["version"]
    within = register(reg, store[1], 2, figures({**plus_one, "pope": 60.6}), log)  # 0.4 below: tolerated
    assert within["promoted"] and within["champion_before"] == better["version"]
    worse = register(reg, store[1], 3, figures({**plus_one, "textvqa": 19.0}), log)
    assert not worse["promoted"]
    assert worse["aliases_after"] == {"candidate": worse["version"], "champion": within["version"]}
    assert worse["reasons"] == ["textvqa: 19 is 2 points below the champion's 21 (tolerance 0.5)"]
    assert reg.version_tags(worse["version"])["gate.passed"] == "false"
    assert plog.read_jsonl(log)[-1]["action"] == "reject"


def test_missing_headline_blocks_even_the_first_champion(reg, store, tmp_path):
    fig = figures({"textvqa": 20.0, "pope": 60.0}, skipped={"mme": "benchmark files not downloaded"})
    decision = register(reg, store[1], 0, fig, tmp_path / "log.jsonl")
    assert not decision["promoted"] and "champion" not in decision["aliases_after"]
    assert decision["reasons"] == ["mme: no headline score (skipped: benchmark files not downloaded)"]


def test_validation_regression_blocks(reg, store, tmp_path):
    register(reg, store[1], 0, figures(), tmp_path / "log.jsonl")
    dirtier = {**VALID, "quarantined": 20}  # 10% quarantined overall vs the champion's 1%
    decision = register(reg, store[1], 1, figures({k: v + 5 for k, v in BASE.items()}, validate=dirtier),
                        tmp_path / "log.jsonl")
    assert not decision["promoted"] and decision["reasons"][0].startswith("validation.overall")


def test_rerun_reuses_the_version_and_drops_stale_figures(reg, store, tmp_path):
    first = register(reg, store[1], 0, figures(skipped={"gqa": "x"}), tmp_path / "log.jsonl")
    again = register(reg, store[1], 0, figures(), tmp_path / "log.jsonl")
    assert again["version"] == first["version"] and "eval.skipped" not in reg.version_tags(first["version"])
    assert again["reasons"] == [f"version {first['version']} is already the champion"]
    assert [r["action"] for r in reg.log_records()] == ["candidate", "promote"]  # nothing moved the second time


def test_force_promote_and_rollback_are_logged(reg, store, tmp_path):
    log = tmp_path / "log.jsonl"
    champ = register(reg, store[1], 0, figures(), log)["version"]
    worse = register(reg, store[1], 1, figures({**BASE, "pope": 10.0}), log)["version"]
    with pytest.raises(RegistryError, match="reason"):
        promote(reg, worse, "", CFG, log)
    assert not promote(reg, worse, "try", CFG, log)["promoted"]
    forced = promote(reg, worse, "hotfix for the demo", CFG, log, force=True)
    assert forced["action"] == "force-promote" and reg.champion() == worse
    assert forced["reasons"][0] == "forced: hotfix for the demo" and "pope" in forced["reasons"][1]
    back = rollback(reg, "demo over", log)
    assert back["version"] == champ and reg.champion() == champ
    actions = [r["action"] for r in plog.read_jsonl(log)]
    assert actions == ["candidate", "promote", "candidate", "reject", "reject", "force-promote", "rollback"]
    assert plog.read_jsonl(log)[-1]["from_champion"] == worse and plog.read_jsonl(log)[-1]["reason"] == "demo over"
    with pytest.raises(RegistryError, match="nothing to roll back to"):
        rollback(reg, "again", log)  # the log holds no champion before the first one
    with pytest.raises(RegistryError, match="no version 99"):
        promote(reg, "99", "typo", CFG, log)


def test_rollback_with_no_history_errors_clearly(reg, capsys, tmp_path, repo_root):
    params = params_file(tmp_path, repo_root, reg.name)
    code = rollback_cli.main(["--reason", "x", "--params", str(params), "--tracking-uri", reg.tracking_uri,
                              "--log", str(tmp_path / "log.jsonl")])
    assert code == 2 and "nothing to roll back to" in capsys.readouterr().err
    assert not (tmp_path / "log.jsonl").exists()


def params_file(tmp_path, repo_root, model_name, headline=HEADLINE):
    data = yaml.safe_load((repo_root / "params.yaml").read_text())
    data["registry"].update(model_name=model_name, headline=list(headline))
    data["tracking"]["uri"] = ""
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_cli_with_tracking_uri_from_the_environment(tmp_path, repo_root, monkeypatch, capsys):
    uri = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    reg = Registry("env-model", uri)
    models = log_models(uri, 2)
    log = tmp_path / "log.jsonl"
    first = register(reg, models, 0, figures(), log)["version"]
    second = register(reg, models, 1, figures({**BASE, "pope": 1.0}), log)["version"]
    common = ["--params", str(params_file(tmp_path, repo_root, "env-model")), "--log", str(log)]
    assert promote_cli.main(["--reason", "gated", *common]) == 1  # candidate = second; gates fail
    assert "not promoted: version 2" in capsys.readouterr().out
    assert promote_cli.main(["--alias", "candidate", "--reason", "ship it", "--force", "--json", *common]) == 0
    assert json.loads(capsys.readouterr().out)["action"] == "force-promote"
    assert Registry("env-model", uri).champion() == second
    assert rollback_cli.main(["--reason", "bad in prod", *common]) == 0
    assert Registry("env-model", uri).champion() == first
    assert "rolled back to version" in capsys.readouterr().out
    assert promote_cli.main(["--version", "7", "--reason", "x", *common]) == 2
    assert "has no version 7" in capsys.readouterr().err
    actions = [r["action"] for r in reg.log_records()]
    assert actions == ["candidate", "promote", "candidate", "reject", "reject", "force-promote", "rollback"]
    assert all(r["tracking_uri"] == uri for r in plog.read_jsonl(log)[-3:])


def _promote_many(uri: str, name: str, versions: list[str], log: str) -> list[str]:
    """One of several processes moving the champion back and forth (forced: the gates are not the point)."""
    reg = Registry(name, uri)
    return [promote(reg, v, f"pid {os.getpid()} #{i}", CFG, log, force=True)["action"]
            for i, v in enumerate(versions)]


def test_concurrent_promotions_keep_one_consistent_log(reg, store, tmp_path):
    """The audit's race (#13): 4 processes x 6 promotions at once. Every alias move has exactly one record, in
    both copies of the log, and the records chain (each one starts from the champion the previous one left)."""
    import multiprocessing

    log = tmp_path / "promotions.jsonl"
    first = register(reg, store[1], 0, figures(), log)["version"]
    second = register(reg, store[1], 1, figures(), log)["version"]
    before = len(reg.log_records())
    plans = [[first, second] * 3, [second, first] * 3, [first, second] * 3, [second, first] * 3]
    with multiprocessing.get_context("fork").Pool(4) as pool:
        results = pool.starmap(_promote_many, [(store[0], reg.name, plan, str(log)) for plan in plans])
    moves = sum(action != "keep" for actions in results for action in actions)
    records = reg.log_records()[before:]
    assert len(records) == moves > 0
    assert plog.read_jsonl(log)[-moves:] == records  # the JSONL copy: the same records, the same order
    for earlier, later in zip(records, records[1:], strict=False):
        assert later["from_champion"] == earlier["to_champion"]
    assert reg.champion() == records[-1]["to_champion"]
