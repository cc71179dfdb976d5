"""The cluster files under infra/ parse and keep their contract (infra/README.md). Fast: no cluster, no GPU."""

import json
import re
from pathlib import Path

import pytest
import yaml

from components.model.flops import training_memory_gb
from components.training import deepspeed_config

INFRA = Path(__file__).resolve().parents[2] / "infra"
DS_FILES = sorted((INFRA / "deepspeed").glob("*.json"))
YAML_FILES = sorted(INFRA.rglob("*.yaml"))
GLOBAL_BATCH = {"pretrain": 256, "finetune": 128}
# The only keys a DeepSpeed JSON may leave as "auto": the ones components.training.deepspeed_config.build computes.
AUTO_KEYS = {
    "train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps",
    "optimizer.params.lr", "optimizer.params.weight_decay", "optimizer.params.betas", "optimizer.params.eps",
    "gradient_clipping", "bf16.enabled",
}


def _load_docs(path: Path) -> list:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def _auto_paths(cfg: dict, prefix: str = "") -> set[str]:
    out = set()
    for key, value in cfg.items():
        if value == "auto":
            out.add(prefix + key)
        elif isinstance(value, dict):
            out |= _auto_paths(value, f"{prefix}{key}.")
    return out


def _lookup(cfg: dict, dotted: str):
    for part in dotted.split("."):
        cfg = cfg[part]
    return cfg


def test_the_expected_files_exist():
    names = {p.name for p in DS_FILES}
    assert names == {"zero2.json", "zero2_offload.json", "zero3.json", "zero3_offload.json"}
    for rel in ("ray/cluster-a100.yaml", "kuberay/rayjob-finetune.yaml", "Dockerfile", "README.md"):
        assert (INFRA / rel).is_file(), rel


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: str(p.relative_to(INFRA)))
def test_every_yaml_parses(path):
    docs = _load_docs(path)
    assert docs and all(isinstance(d, dict) for d in docs)


@pytest.mark.parametrize("path", DS_FILES, ids=lambda p: p.name)
def test_deepspeed_json_contract(path):
    cfg = json.loads(path.read_text())
    zero = cfg["zero_optimization"]
    assert zero["stage"] in (2, 3)
    assert cfg["bf16"] == {"enabled": "auto"}  # train.<stage>.bf16
    assert "fp16" not in cfg or not cfg["fp16"].get("enabled")
    assert cfg["optimizer"]["type"] == "AdamW" and cfg["optimizer"]["params"]["torch_adam"] is True
    assert cfg["gradient_clipping"] == "auto"  # train.<stage>.grad_clip
    assert "scheduler" not in cfg  # the project's schedule (deepspeed_config.schedule) is passed in code
    assert ("offload" in path.stem) == ("offload_optimizer" in zero)
    if zero["stage"] == 3:
        assert zero["stage3_gather_16bit_weights_on_model_save"] is True
    # every "auto" is one the project computes, and the project's builder produces each of them
    autos = _auto_paths(cfg)
    assert autos <= AUTO_KEYS, autos - AUTO_KEYS
    computed = deepspeed_config.build(path.stem, 128, 4, 8, 2e-5, bf16=True)
    for key in autos:
        value = _lookup(computed, key)
        assert value not in (None, "auto"), key
    assert computed["gradient_accumulation_steps"] == 4


def test_offload_configs_differ_from_their_base_only_by_offload():
    for stage in (2, 3):
        base = json.loads((INFRA / "deepspeed" / f"zero{stage}.json").read_text())
        off = json.loads((INFRA / "deepspeed" / f"zero{stage}_offload.json").read_text())
        zero = {k: v for k, v in off["zero_optimization"].items() if not k.startswith("offload_")}
        assert zero == base["zero_optimization"]
        assert {k: v for k, v in off.items() if k != "zero_optimization"} == {
            k: v for k, v in base.items() if k != "zero_optimization"}


def test_presets_fit_and_match_the_flops_module():
    presets = _load_docs(INFRA / "deepspeed" / "presets.yaml")[0]["presets"]
    seen = set()
    for p in presets:
        assert (INFRA / "deepspeed" / p["config"]).is_file()
        ds = json.loads((INFRA / "deepspeed" / p["config"]).read_text())
        offload = "offload_optimizer" in ds["zero_optimization"]
        est = training_memory_gb(p["model"], p["stage"], ds["zero_optimization"]["stage"], 8, p["micro_batch"],
                                 2048, offload)["total"]
        assert est == pytest.approx(p["est_gib"], abs=0.05), p
        assert est <= 0.95 * p["gpu_gb"], p
        assert deepspeed_config.gradient_accumulation(GLOBAL_BATCH[p["stage"]], p["micro_batch"], 8) >= 1
        if not p.get("fallback"):
            seen.add((p["model"], p["stage"], p["gpu_gb"]))
    assert seen == {(m, s, g) for m in ("llava-uhd-7b", "llava-uhd-13b") for s in GLOBAL_BATCH for g in (40, 80)}


def test_readme_memory_table_matches_the_presets():
    readme = (INFRA / "README.md").read_text()
    for p in _load_docs(INFRA / "deepspeed" / "presets.yaml")[0]["presets"]:
        row = re.compile(rf"\|\s*{p['model'].removeprefix('llava-uhd-')}\s*\|\s*{p['stage']}\s*\|\s*{p['gpu_gb']} GB"
                         rf"\s*\|\s*`{re.escape(p['config'])}`\s*\|\s*{p['micro_batch']}\s*\|.*\|\s*{p['est_gib']}\s*\|")
        assert row.search(readme), p
    assert "flops --memory" in readme


def test_rayjob_has_a_gpu_worker_group_and_mounts_the_shared_volume():
    docs = _load_docs(INFRA / "kuberay" / "rayjob-finetune.yaml")
    job = next(d for d in docs if d["kind"] == "RayJob")
    pvc = next(d for d in docs if d["kind"] == "PersistentVolumeClaim")
    assert job["apiVersion"] == "ray.io/v1" and "ReadWriteMany" in pvc["spec"]["accessModes"]
    spec = job["spec"]
    assert spec["entrypoint"] == "python -m pipelines.train --stage finetune"
    runtime_env = yaml.safe_load(spec["runtimeEnvYAML"])
    assert runtime_env["working_dir"] and runtime_env["pip"].endswith("requirements.lock")
    cluster = spec["rayClusterSpec"]
    groups = cluster["workerGroupSpecs"]
    pods = [cluster["headGroupSpec"]["template"]["spec"]] + [g["template"]["spec"] for g in groups]
    gpus = [c["resources"]["limits"].get("nvidia.com/gpu") for g in groups for c in g["template"]["spec"]["containers"]]
    assert 8 in gpus
    for pod in pods:  # head and every worker mount the shared PVC at /mnt/shared
        claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"]
                  if "persistentVolumeClaim" in v}
        assert pvc["metadata"]["name"] in claims.values()
        mounts = {m["mountPath"]: m["name"] for c in pod["containers"] for m in c["volumeMounts"]}
        assert claims.get(mounts.get("/mnt/shared")) == pvc["metadata"]["name"]
        assert pod["securityContext"]["runAsUser"] != 0


def test_ray_cluster_yaml_has_a_head_and_8_gpu_workers():
    cfg = _load_docs(INFRA / "ray" / "cluster-a100.yaml")[0]
    types = cfg["available_node_types"]
    head = cfg["head_node_type"]
    assert head in types and types[head]["resources"].get("GPU", 0) == 0
    workers = {name: t for name, t in types.items() if name != head}
    assert workers and all(t["resources"]["GPU"] == 8 and t["max_workers"] > t["min_workers"] for t in workers.values())
    assert {t["node_config"]["InstanceType"] for t in workers.values()} == {"p4d.24xlarge", "p4de.24xlarge"}
    run_options = " ".join(cfg["docker"]["run_options"])
    assert "/mnt/shared:/mnt/shared" in run_options and "OMP_NUM_THREADS" in run_options and "NCCL_" in run_options
    assert any("requirements.lock" in c and ".[cluster]" in c for c in cfg["setup_commands"])
    assert any("ray start --head" in c for c in cfg["head_start_ray_commands"])


def test_ray_cluster_yaml_passes_the_launchers_schema():
    pytest.importorskip("jsonschema")
    from ray.autoscaler._private.util import validate_config

    validate_config(_load_docs(INFRA / "ray" / "cluster-a100.yaml")[0])


def test_dockerfile_installs_with_the_lock_as_non_root():
    text = (INFRA / "Dockerfile").read_text()
    assert re.search(r"^FROM .*cuda", text, re.M | re.I)
    assert "python${PYTHON_VERSION}" in text and "PYTHON_VERSION=3.11" in text
    installs = [line for line in text.splitlines() if "pip install" in line]
    assert any("--constraint requirements.lock" in line and ".[cluster]" in line for line in installs)
    assert "COPY" in text and "requirements.lock" in text
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert users and users[-1] not in ("root", "0")
