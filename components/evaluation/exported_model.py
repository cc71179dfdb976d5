"""Evaluating a model: the suite run, the reports, and the provenance of the scores (what the evaluate stages
report, byte-identical on a rerun) apart from this run's links (MLflow tags only).

    found = load_for_evaluation(spec, "models/finetune", params.model)   # model_source.py
    metrics = score_and_report(found, params, eval_root, "data/eval", "reports/eval", Path("models/finetune.json"))
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from components.compression import effective_compressor, effective_spatial_schema
from components.data.eval_layout import HUB_EVAL_DIR, build_hub_eval_root
from components.evaluation.report import write_reports
from components.evaluation.suite import EvalPlan, answer_template, run_suite
from components.tracking.registry import git_commit

# The benchmark folders of each data.source under data/raw (embedded: the synthetic set; hub: the downloads linked
# into LLaVA's playground/data/eval layout by components/data/eval_layout.py).
EVAL_ROOTS = {"synthetic": "data/raw/synthetic/eval", "hub": f"data/raw/{HUB_EVAL_DIR}"}


def given_eval_root(root: str) -> str:
    """`eval.root` as is: a LLaVA playground/data/eval folder the user already has (read, never changed)."""
    if not Path(root).is_dir():
        raise FileNotFoundError(f"eval.root={root!r} is not a folder: name an existing LLaVA playground/data/eval "
                                f"folder, or set eval.root '' to use the benchmarks of data.source")
    return root


def stage_eval_root(params, raw: str = "data/raw") -> str:
    """The main evaluate stage's benchmark root: `eval.root` when set, else data.source's. Hub: its links are built
    here, at the stage's start, from what the download left (this stage depends on the download's manifest, so the
    links always match the files it pins; building them is cheap)."""
    if params.eval.root:
        return given_eval_root(params.eval.root)
    if params.data.source == "hub":
        return str(build_hub_eval_root(raw).root)  # data/raw/eval_hub = EVAL_ROOTS["hub"]
    return EVAL_ROOTS[params.data.source]


def provenance(sha: str, model, data_source: str, plan: EvalPlan, eval_root: str, model_source: dict | None = None
               ) -> dict:
    """What the scores depend on: the weights, the answering settings and the data (provenance.json, tracked in
    git). Nothing of this machine or run (MLflow ids, the commit): a rerun writes the same bytes (run_links)."""
    cfg = model.config
    return {"model_sha256": sha, "template": answer_template(model), "protocol": plan.protocol,
            "protocol_reproduces": plan.rules.reproduces, "batch_size": plan.effective_batch_size,
            "num_beams_override": plan.num_beams, "max_new_tokens": plan.max_new_tokens,
            "image_loading": plan.rules.image_loading, "slicing": {"strategy": cfg.strategy, "preset": cfg.preset},
            "compressor": effective_compressor(cfg.compressor, cfg.strategy),
            "spatial_schema": effective_spatial_schema(cfg.spatial_schema, cfg.strategy), "eval_root": eval_root,
            "data_source": data_source, "model_source": model_source or {"kind": "pipeline", "spec": ""},
            "dtype": str(model.dtype).removeprefix("torch.")}


def run_links(pointer: dict, sha: str) -> dict:
    """This run's links for MLflow's tags: the training run and model (when the local run record is the one of these
    weights: after `dvc checkout` it may be another run's) and the commit."""
    same = pointer.get("model_sha256") == sha
    return {"model_run_id": pointer.get("mlflow_run_id") if same else None,
            "model_uri": pointer.get("model_uri") if same else None, "git_commit": git_commit()}


def answers_model_id(sha: str) -> str:
    """The answers files' `model_id`: the weights, not the run (an MLflow id would change data/eval on every rerun)."""
    return f"llava-uhd-{sha[:12]}"


def score_and_report(found, params, eval_root: str, out_dir: str | Path, reports_dir: str | Path,
                     pointer: Path | None = None, log_mlflow: bool = True) -> dict:
    """The evaluate stages' common work: answer and score every benchmark with `found` (a model_source
    EvaluatedModel), write the reports, log them to MLflow (linked to the training run of `pointer` when it recorded
    these weights), print the table. Returns metrics.json's content."""
    from components.tracking.stage_records import log_evaluation

    plan = EvalPlan.from_params(params.eval)
    shutil.rmtree(out_dir, ignore_errors=True)  # a DVC run starts fresh; `uhd evaluate --out` elsewhere resumes
    suite = run_suite(found.model, found.tokenizer, eval_root, out_dir, plan, model_id=answers_model_id(found.sha256),
                      flops_model=found.flops_model)
    prov = provenance(found.sha256, found.model, params.data.source, plan, eval_root, found.source)
    label = f"{found.source['spec'] or 'this run'} ({params.data.source}, {found.model.config.strategy})"
    metrics = write_reports(suite, prov, reports_dir, label=label, paper_row=params.eval.paper_row,
                            flops_model=getattr(found.flops_model, "name", found.flops_model))
    if log_mlflow:
        record = json.loads(pointer.read_text()) if pointer is not None and pointer.exists() else {}
        log_evaluation(params.tracking, metrics, prov, run_links(record, found.sha256), Path(reports_dir))
    print((Path(reports_dir) / "results.md").read_text())
    print(f"reports: {reports_dir}/results.md, metrics.json, provenance.json, benchmarks.png")
    return metrics
