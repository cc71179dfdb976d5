import copy

import pytest
import yaml

from components.config import ConfigError, Params, load_params, parse


@pytest.fixture
def raw(repo_root):
    return yaml.safe_load((repo_root / "params.yaml").read_text())


def test_repository_params_parse(repo_root):
    params = load_params(repo_root / "params.yaml")
    assert isinstance(params, Params)
    assert params.slicing.plan(1008, 672).grid == (3, 2)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d["slicing"].update(prset="x"), "unknown key"),
        (lambda d: d.update(extra=1), "unknown key"),
        (lambda d: d.pop("cluster"), "missing"),
        (lambda d: d.update(spatial_schema="yes"), "expected bool"),
        (lambda d: d["layouts"].update(batch_rows=True), "expected int"),
        (lambda d: d["layouts"].update(batch_rows=0), "batch_rows"),
        (lambda d: d["slicing"].update(strategy="tiles"), "slicing.strategy"),
        (lambda d: d["slicing"].update(preset="onevision"), r"^slicing\.preset: must be one of \[.*'uhd-arxiv'"),
        (lambda d: d["slicing"].update(anyres_preset="x"), r"^slicing\.anyres_preset: must be one of"),
        (lambda d: d.update(compressor="qformer"), "compressor"),
        (lambda d: d["train"]["pretrain"].update(global_batch=3), r"^train\.pretrain\.global_batch: must be a mult"),
        (lambda d: d["train"]["finetune"].update(epochs=0), r"^train\.finetune\.epochs: must be > 0 .*, got 0\.0$"),
        (lambda d: d["train"]["finetune"].update(grad_clip=-1), r"^train\.finetune\.grad_clip: must be >= 0"),
        (lambda d: d["train"]["pretrain"].update(batch_order="sorted"), r"^train\.pretrain\.batch_order: must be one"),
        (lambda d: d["train"]["pretrain"].update(deepspeed="zero1"), r"^train\.pretrain\.deepspeed: must be one of"),
        (lambda d: d["train"]["ray"].update(num_workers=3), r"^train\.pretrain\.global_batch: .* \(2 x 3\), got 4$"),
        (lambda d: d["train"]["finetune"].update(lr=float("nan")), r"^train\.finetune\.lr: must be a finite number"),
        (lambda d: d["train"]["finetune"].update(weight_decay=float("inf")), r"finetune\.weight_decay: .*finite"),
        (lambda d: d["registry"].update(tolerance=float("nan")), r"^registry\.tolerance: must be a finite number"),
        (lambda d: d["registry"].update(max_quarantine_increase=float("nan")), r"max_quarantine_increase: .*finite"),
        (lambda d: d["registry"].update(tolerance=-1.0), r"^registry\.tolerance: must be >= 0"),
        (lambda d: d["train"]["ray"].update(workers=2), "unknown key"),
        (lambda d: d["train"].pop("finetune"), "missing"),
        (lambda d: d["model"].update(tokenizer="bert"), r"^model\.tokenizer: must be llama, gpt2 or smollm2, got"),
        (lambda d: d["tracking"].update(uri=None), "expected str"),
    ],
)
def test_bad_params_are_rejected_with_the_key(raw, mutate, message):
    data = copy.deepcopy(raw)
    mutate(data)
    with pytest.raises(ConfigError, match=message):
        parse(Params, data)


def test_strategy_switch_is_one_value(raw):
    """`-S slicing.strategy=anyres` must work without touching the UHD preset."""
    for strategy in ("anyres", "pad336", "fixed2x2", "uhd"):
        data = copy.deepcopy(raw)
        data["slicing"]["strategy"] = strategy
        params = parse(Params, data)
        assert params.slicing.plan(640, 480).num_tokens > 0


def test_missing_file_says_what_to_do(tmp_path):
    with pytest.raises(ConfigError, match="repository root"):
        load_params(tmp_path / "params.yaml")


def test_yaml_errors_are_one_line_with_the_place(tmp_path, repo_root):
    text = (repo_root / "params.yaml").read_text()
    broken = tmp_path / "params.yaml"
    broken.write_text(text.replace("  seed: 0\n", "  seed: [0\n", 1))
    with pytest.raises(ConfigError, match=r"params\.yaml: not valid YAML at line \d+, column \d+"):
        load_params(broken)
    twice = tmp_path / "twice.yaml"
    twice.write_text(text.replace("  seed: 0\n", "  seed: 0\n  seed: 1\n", 1))  # PyYAML alone keeps the 1
    with pytest.raises(ConfigError, match=r"twice\.yaml: not valid YAML at line 7, column 3: duplicate key 'seed'"):
        load_params(twice)
