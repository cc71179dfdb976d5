"""The MLflow Model Registry side of the `register` stage and of `uhd promote` / `uhd rollback`.

Aliases only (`candidate`, `champion`), never the deprecated stages API. Every registered version carries as
tags its provenance (model_sha256, mlflow_run_id, git commit, params hash, ...), its figures (gates.py: the
headline scores and validation quarantine fractions) and the last gate decision; every alias move and every
rejected promotion is written to the promotion log (promotion_log.py) in the registry and in a JSONL file.

    reg = Registry("llava-uhd", tracking_uri)
    decision = register_evaluated(reg, model_uri, run_id, figures, provenance, gate_cfg, log_path)
    promote(reg, version, reason, gate_cfg, log_path, force=False)
    rollback(reg, reason, log_path)
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import json
import os
import subprocess
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import mlflow
from mlflow.exceptions import MlflowException

from components.tracking import promotion_log as plog
from components.tracking.credentials import redact_credentials
from components.tracking.gates import (
    HEADLINE_PREFIX,
    SKIPPED_TAG,
    VALIDATION_PREFIX,
    Figures,
    check_gates,
    figures_from_tags,
    figures_to_tags,
)

EXPERIMENT_TAG = "dvc_experiment"  # the `dvc exp run` that registered a version
CANDIDATE, CHAMPION = "candidate", "champion"
FIGURE_TAG_PREFIXES = (HEADLINE_PREFIX, VALIDATION_PREFIX, SKIPPED_TAG)


@contextmanager
def use_tracking_uri(uri: str):
    """The global MLflow tracking URI set to `uri` for a block, then put back as it was (env var included).

    Needed around registering a `models:/m-...` source: MLflow's sqlalchemy registry store looks the logged
    model up through the *global* tracking URI, not the client's (a TODO in mlflow/store/model_registry).
    """
    env_before = os.environ.get("MLFLOW_TRACKING_URI")
    explicit_before = mlflow.get_tracking_uri() if mlflow.is_tracking_uri_set() else None
    mlflow.set_tracking_uri(uri)  # also exports MLFLOW_TRACKING_URI
    try:
        yield
    finally:
        mlflow.set_tracking_uri(explicit_before)  # None unsets the variable again
        if env_before is not None:
            os.environ["MLFLOW_TRACKING_URI"] = env_before


class RegistryError(RuntimeError):
    """A promotion request that cannot be carried out (unknown version, nothing to roll back to, ...)."""


def sha256_json(value) -> str:
    """A stable hash of a JSON-able value (the parsed params: comments and key order do not change it)."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def git_commit(root: str | Path = ".") -> str | None:
    """HEAD's commit, with `-dirty` when tracked files differ; None outside a git checkout."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


@dataclass(frozen=True)
class GateConfig:
    """The gate settings of params `registry` (RegistryConfig has the same fields; any object with them works)."""

    headline: tuple[str, ...]
    tolerance: float
    max_quarantine_increase: float

    @classmethod
    def of(cls, cfg) -> GateConfig:
        return cls(tuple(cfg.headline), float(cfg.tolerance), float(cfg.max_quarantine_increase))


class Registry:
    """One registered model in the registry at `tracking_uri` (the registry URI follows the tracking URI)."""

    def __init__(self, name: str, tracking_uri: str):
        self.name, self.tracking_uri = name, tracking_uri
        self.client = mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)

    def ensure_model(self) -> None:
        try:
            self.client.get_registered_model(self.name)
        except MlflowException:
            self.client.create_registered_model(self.name, description="LLaVA-UHD (register stage)")

    def aliases(self) -> dict[str, str]:
        try:
            return {k: str(v) for k, v in self.client.get_registered_model(self.name).aliases.items()}
        except MlflowException:
            return {}

    def champion(self) -> str | None:
        return self.aliases().get(CHAMPION)

    def version_tags(self, version: str) -> dict[str, str]:
        try:
            return dict(self.client.get_model_version(self.name, str(version)).tags)
        except MlflowException as err:
            raise RegistryError(f"{self.name} has no version {version}") from err

    def figures(self, version: str | None) -> Figures | None:
        return None if version is None else figures_from_tags(self.version_tags(version))

    def resolve_source(self, model_uri: str | None, run_id: str | None) -> tuple[str, str | None]:
        """(source, model_id): a `models:/m-...` URI as is; else the model logged as `model` in the run.

        MLflow 3 keeps a logged model outside the run's artifacts, so `runs:/<id>/model` is resolved to the
        LoggedModel here (mlflow.register_model does the same, but only against the global tracking URI).
        """
        if model_uri and model_uri.startswith("models:/m-"):
            return model_uri, model_uri.removeprefix("models:/")
        if model_uri:
            return model_uri, None
        if not run_id:
            raise RegistryError("the model pointer has neither model_uri nor mlflow_run_id")
        run = self.client.get_run(run_id)
        found = self.client.search_logged_models(
            [run.info.experiment_id], filter_string=f"source_run_id = '{run_id}' AND name = 'model'")
        if not found:
            raise RegistryError(f"run {run_id} has no logged model named 'model'")
        return f"models:/{found[-1].model_id}", found[-1].model_id

    def source_of(self, model_sha256: str) -> str | None:
        """The source of a version already registered for these weights (tag `model_sha256`), if any."""
        try:
            versions = self.client.search_model_versions(f"name = '{self.name}'")
        except MlflowException:
            return None
        return next((mv.source for mv in versions if mv.tags.get("model_sha256") == model_sha256), None)

    def register(self, model_uri: str | None, run_id: str | None, tags: dict[str, str]) -> str:
        """The version for this model: an existing one with the same source (a re-run), else a new one."""
        self.ensure_model()
        source, model_id = self.resolve_source(model_uri, run_id)
        for mv in self.client.search_model_versions(f"name = '{self.name}'"):
            if mv.source == source:
                for stale in set(mv.tags) - set(tags):  # figures of an earlier evaluation must not linger
                    if stale.startswith(FIGURE_TAG_PREFIXES):
                        self.client.delete_model_version_tag(self.name, mv.version, stale)
                self.set_tags(mv.version, tags)
                return str(mv.version)
        with use_tracking_uri(self.tracking_uri):
            mv = self.client.create_model_version(self.name, source, run_id=run_id, tags=tags, model_id=model_id)
        return str(mv.version)

    def set_tags(self, version: str, tags: dict[str, str]) -> None:
        for key, value in tags.items():
            self.client.set_model_version_tag(self.name, str(version), key, str(value))

    def set_alias(self, alias: str, version: str) -> None:
        self.client.set_registered_model_alias(self.name, alias, str(version))

    @contextmanager
    def exclusive(self):
        """Held around every read-decide-move-record of the aliases, so concurrent registers, promotions and
        rollbacks (two `dvc exp` workers, a user's `uhd promote`) run one after the other: an exclusive lock
        (flock) on a file beside a sqlite store, else in the temp folder keyed by store and model (that
        serializes the processes of one machine; a remote store shared by several machines needs them too)."""
        path = self._lock_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _lock_path(self) -> Path:
        if self.tracking_uri.startswith("sqlite:///"):
            db = Path(self.tracking_uri.removeprefix("sqlite:///"))
            return db.with_name(f"{db.name}.{self.name}.lock")
        key = hashlib.sha256(f"{self.tracking_uri}\n{self.name}".encode()).hexdigest()[:16]
        return Path(tempfile.gettempdir()) / "llava-uhd-registry-locks" / f"{key}.lock"

    def log(self, record: dict, log_path: str | Path | None, move: tuple[str, str] | None = None) -> dict:
        """Record `record` and, with `move` = (alias, version), move that alias: one unit. The registry's copy
        (the authoritative one) is written first, then the alias moves; if the move fails the record is taken
        back and the error raised, so no alias change goes unrecorded and no record claims one that did not
        happen. The JSONL copy follows. Callers hold `exclusive()`, which keeps the sequence numbers unique."""
        tags = self.client.get_registered_model(self.name).tags
        key = plog.tag_key(len(plog.records_from_tags(tags)) + 1)
        self.client.set_registered_model_tag(self.name, key, json.dumps(record, sort_keys=True))
        if move is not None:
            try:
                self.set_alias(*move)
            except BaseException:
                self.client.delete_registered_model_tag(self.name, key)
                raise
        if log_path:
            plog.append_jsonl(log_path, record)
        return record

    def log_records(self) -> list[dict]:
        try:
            return plog.records_from_tags(self.client.get_registered_model(self.name).tags)
        except MlflowException:
            return []


def _one_at_a_time(func):
    """Run `func(reg, ...)` holding `reg.exclusive()`: the alias read, the decision, the move and its record
    happen with no other register / promote / rollback of that model in between."""

    @functools.wraps(func)
    def locked(reg: Registry, *args, **kwargs):
        with reg.exclusive():
            return func(reg, *args, **kwargs)

    return locked


def _gates_for(reg: Registry, version: str, cfg: GateConfig) -> dict:
    """Both sides read from version tags, so `uhd promote` later decides exactly as the stage did."""
    return check_gates(reg.figures(version), reg.figures(reg.champion()), cfg.headline, cfg.tolerance,
                       cfg.max_quarantine_increase)


def _record_decision(reg: Registry, version: str, action: str, gates: dict, reason: str) -> None:
    reg.set_tags(version, {"gate.passed": str(gates["passed"]).lower(), "gate.action": action,
                           "gate.reason": reason, "gate.results": json.dumps(gates, sort_keys=True)})


def _move_champion(reg: Registry, version: str, gates: dict, reason: str, log_path, force: bool = False,
                   **extra) -> dict:
    """Move champion to `version` if the gates passed (or forced); log the move or the rejection."""
    champion = reg.champion()
    if version == champion:  # e.g. the register stage re-run on the same model: nothing moves, nothing to log
        _record_decision(reg, version, "keep", gates, "already the champion")
        return {"promoted": False, "action": "keep", "reasons": [f"version {version} is already the champion"],
                "gates": gates["gates"], "gates_passed": gates["passed"], "champion_before": champion}
    if gates["passed"] or force:
        action = "force-promote" if force and not gates["passed"] else "promote"
        why = reason or ("first candidate to pass the gates" if champion is None else "gates passed")
        reasons = [why] if gates["passed"] else [f"forced: {why}", *gates["reasons"]]
    else:
        action, reasons = "reject", gates["reasons"]
    _record_decision(reg, version, action, gates, reason or "; ".join(reasons))
    reg.log(plog.make_record(action, reg.name, version, reason or "; ".join(reasons), from_champion=champion,
                             to_champion=version if action != "reject" else champion, gates=gates,
                             tracking_uri=reg.tracking_uri, **extra), log_path,
            move=None if action == "reject" else (CHAMPION, version))
    return {"promoted": action != "reject", "action": action, "reasons": reasons, "gates": gates["gates"],
            "gates_passed": gates["passed"], "champion_before": champion}


@_one_at_a_time
def register_evaluated(reg: Registry, model_uri: str | None, run_id: str | None, figures: Figures,
                       provenance: dict[str, str], cfg: GateConfig, log_path: str | Path | None,
                       experiment: str | None = None) -> dict:
    """Register (or find) the version, set `candidate`, run the gates, and move `champion` if they pass. A
    `dvc exp run` (`experiment`: its name) registers a candidate tagged with it and never moves the champion:
    only the main line or an explicit `uhd promote` does."""
    tags = {**{k: str(v) for k, v in provenance.items() if v is not None}, **figures_to_tags(figures)}
    if experiment:
        tags[EXPERIMENT_TAG] = experiment
    version = reg.register(model_uri, run_id, tags)
    previous_candidate = reg.aliases().get(CANDIDATE)
    if previous_candidate != version:  # a re-run on the same model moves nothing, so logs nothing
        champion = reg.champion()
        reg.log(plog.make_record("candidate", reg.name, version, "register stage: evaluated model",
                                 from_champion=champion, to_champion=champion,
                                 previous_candidate=previous_candidate, tracking_uri=reg.tracking_uri), log_path,
                move=(CANDIDATE, version))
    gates = _gates_for(reg, version, cfg)
    if experiment:
        champion = reg.champion()
        why = (f"experiment {experiment!r}: the champion moves only on the main line or with `uhd promote "
               f"--version {version}` (gates {'passed' if gates['passed'] else 'failed'})")
        outcome = {"promoted": False, "action": "experiment", "reasons": [why, *gates["reasons"]],
                   "gates": gates["gates"], "gates_passed": gates["passed"], "champion_before": champion}
    else:
        outcome = _move_champion(reg, version, gates, "", log_path, source="register stage")
    return {"model_name": reg.name, "version": version, **outcome, "aliases_after": reg.aliases()}


@_one_at_a_time
def promote(reg: Registry, version: str, reason: str, cfg: GateConfig, log_path: str | Path | None,
            force: bool = False) -> dict:
    """`uhd promote`: move champion to `version` (gates checked against the champion unless forced)."""
    if not reason:
        raise RegistryError("a promotion needs a --reason")
    reg.version_tags(version)  # raises a clear error for an unknown version
    gates = _gates_for(reg, str(version), cfg)
    outcome = _move_champion(reg, str(version), gates, reason, log_path, force=force, source="uhd promote")
    return {"model_name": reg.name, "version": str(version), **outcome, "aliases_after": reg.aliases()}


@_one_at_a_time
def rollback(reg: Registry, reason: str, log_path: str | Path | None) -> dict:
    """`uhd rollback`: champion back to the previous champion of the promotion log (the registry's copy)."""
    if not reason:
        raise RegistryError("a rollback needs a --reason")
    current = reg.champion()
    target = plog.rollback_target(reg.log_records(), current)
    if target is None:
        raise RegistryError(f"nothing to roll back to: the promotion log of {reg.name!r} at "
                            f"{redact_credentials(reg.tracking_uri)} records no champion before "
                            f"{current or '(none)'}")
    reg.version_tags(target)  # the old champion may have been deleted since
    reg.log(plog.make_record("rollback", reg.name, target, reason, from_champion=current, to_champion=target,
                             tracking_uri=reg.tracking_uri, source="uhd rollback"), log_path, move=(CHAMPION, target))
    return {"model_name": reg.name, "version": target, "promoted": True, "action": "rollback",
            "reasons": [reason], "champion_before": current, "aliases_after": reg.aliases()}

