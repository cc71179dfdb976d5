"""A half-written model is never used (#13): export swaps a complete folder in by renames, and every loader
refuses a folder that lacks its weights (an interrupted export or copy), with a message that says what to do."""

import json

import pytest

from components.inference.sources import ModelNotFound, default_source, local_dir
from components.model.build import check_model_dir, load_saved_model, missing_model_files


def _folder(path, files):
    path.mkdir(parents=True)
    for name, text in files.items():
        (path / name).write_text(text)
    return path


def test_partial_folders_are_refused_everywhere(tmp_path):
    config_only = _folder(tmp_path / "config_only", {"config.json": "{}"})
    shards = ("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors")
    index = json.dumps({"weight_map": {"a": shards[0], "b": shards[1]}})
    one_shard = _folder(tmp_path / "one_shard", {"config.json": "{}", "model.safetensors.index.json": index,
                                                 "model-00001-of-00002.safetensors": ""})
    whole = _folder(tmp_path / "whole", {"config.json": "{}", "model.safetensors": ""})
    assert missing_model_files(config_only) == ["model.safetensors"]
    assert missing_model_files(one_shard) == ["model-00002-of-00002.safetensors"]
    assert missing_model_files(whole) == [] and missing_model_files(tmp_path / "absent") == ["config.json",
                                                                                              "model.safetensors"]
    with pytest.raises(FileNotFoundError, match=r"not a complete save_pretrained model \(missing model.safetensors\)"):
        load_saved_model(config_only)
    with pytest.raises(ModelNotFound, match="missing model-00002-of-00002.safetensors"):
        local_dir(one_shard)
    assert check_model_dir(whole) == whole
    # the registry has nothing and models/finetune is half-written: no fallback, a clear error instead
    with pytest.raises(ModelNotFound, match=r"config_only/ is incomplete \(missing model.safetensors\)"):
        default_source("llava-uhd", f"sqlite:///{tmp_path}/m.db", config_only)
