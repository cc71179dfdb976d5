"""TrainingSet under slicing.train_time on the embedded synthetic set (uhd-eccv, spatial resampler): the dataset
takes the layouts stage's seeded decisions on its own, its pixels follow them, its counts come from the table, and
pretraining with overview-only feeds one image / 144 tokens per sample where fine-tuning slices."""

import types

import pyarrow.parquet as pq
import pytest
import torch

from components.model.build import build_model, load_tokenizer
from components.slicing.train_time import TrainTimeResize
from components.slicing.uhd import eval_pre_resize
from components.training.collate import Collate
from components.training.dataset import TrainingSet
from components.training.loop import TrainConfig
from tests.conftest import TINY_MODEL

# p = 0.5 instead of the reference's 0.1, so a set of a few dozen images has both outcomes
TRAIN_TIME = TrainTimeResize(textvqa_long_side=1024, resize_as_grid_p=0.5, seed=0)
ECCV_MODEL = {**TINY_MODEL, "preset": "uhd-eccv", "compressor": "spatial_resampler"}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from components.data.synthetic import SyntheticSpec, build_synthetic
    from components.data.training_sets import validate_training_sets
    from components.slicing.runner import write_layouts

    root = tmp_path_factory.mktemp("train_time_data")
    build_synthetic(root / "raw/synthetic", SyntheticSpec(seed=0, train_scenes=10, eval_scenes=1, easy_vqa_images=2))
    settings = types.SimpleNamespace(full_decode_fraction=0.0, max_pixels=89478485, seed=0, workers=1)
    validate_training_sets(root / "raw", "synthetic", root / "validated", root / "quarantine", root / "reports",
                           settings, progress=False)
    for name, kw in (("on", {"train_time": TRAIN_TIME, "overview_only": True}), ("off", {})):
        write_layouts(root / "validated/images.parquet", root / "raw", root / f"{name}.parquet", "uhd", "uhd-eccv",
                      workers=1, progress=False, **kw)
    return types.SimpleNamespace(validated=str(root / "validated"), raw=str(root / "raw"),
                                 on=str(root / "on.parquet"), off=str(root / "off.parquet"))


@pytest.fixture(scope="module")
def models(data):
    """The tiny ECCV model as fine-tuning builds it, and as pretraining with overview_only builds it."""
    out = {}
    for name, overview_only in (("sliced", False), ("overview", True)):
        cfg = TrainConfig(data.validated, data.on, data.raw, "unused", **ECCV_MODEL, overview_only=overview_only)
        tok = load_tokenizer(cfg.tokenizer, cfg.tokenizer_dir)
        out[name] = (tok, build_model(cfg, tok))
    return out


def dataset(data, models, stage, model="sliced", layouts=None, train_time=TRAIN_TIME):
    tok, net = models[model]
    return TrainingSet(data.validated, layouts or data.on, data.raw, stage, tok, net.config, train_time=train_time)


def table_rows(path):
    return {r["path"]: r for r in pq.read_table(path).to_pylist()}


def test_finetuning_pixels_take_the_layouts_stages_resizes(data, models):
    ds = dataset(data, models, "finetune")
    rows, net = table_rows(data.on), models["sliced"][1]
    seen = {"textvqa": 0, "grid": 0, "as_is": 0}
    for i, (_, image, n_visual, _, _) in enumerate(ds.samples):
        if image is None:
            continue
        item, row = ds[i], rows[f"synthetic/{image}"]  # ds[i] also passes the dataset's own count check
        (size,) = item["image_sizes"]
        original = (row["width"], row["height"])
        if "textvqa" in image:
            assert tuple(size) == eval_pre_resize(*original, 1024) and max(size) == 1024
            seen["textvqa"] += 1
        elif row["pre_resized_w"] is not None:
            seen["grid"] += 1
        else:
            seen["as_is"] += 1
        # the same decision as the layouts stage, taken independently: the table's training size is the item's
        assert tuple(size) == ((row["pre_resized_w"], row["pre_resized_h"]) if row["pre_resized_w"] else original)
        assert n_visual == row["num_tokens"] == net.plan(*size).num_tokens  # read from the table; the model agrees
        assert len(item["pixel_values"]) == net.plan(*size).n_slices + 1
        assert int((item["input_ids"] == net.config.image_token_id).sum()) == n_visual
    assert all(seen.values()), seen


def test_pretraining_overview_only_is_one_image_of_144_tokens(data, models):
    only = dataset(data, models, "pretrain", model="overview")
    sliced = dataset(data, models, "pretrain", model="sliced")  # the same images as fine-tuning would see them
    rows = table_rows(data.on)
    assert [s[1] for s in only.samples] == [s[1] for s in sliced.samples]
    more = 0
    for i, (_, image, n_visual, _, _) in enumerate(only.samples):
        item = only[i]
        assert n_visual == 144 and len(item["pixel_values"]) == 1
        assert int((item["input_ids"] == models["overview"][1].config.image_token_id).sum()) == 144
        row = rows[f"synthetic/llava_pretrain/images/{image}"]
        assert sliced.samples[i][2] == row["num_tokens"] == 144 * (row["n_slices"] + 1) + row["n_slices"]
        assert len(sliced[i]["pixel_values"]) == row["n_slices"] + 1
        more += row["n_slices"] > 0
    assert more  # the synthetic scenes are high-resolution: fine-tuning would slice them


def test_the_overview_only_model_trains_on_its_items(data, models):
    _, net = models["overview"]
    ds = dataset(data, models, "pretrain", model="overview")
    batch = Collate(0)([ds[0], ds[1]])
    batch.pop("ids")
    with torch.no_grad():
        loss = net(**batch).loss
    assert torch.isfinite(loss)


def test_the_count_check_guards_a_table_laid_out_without_the_train_time_handling(data, models):
    ds = dataset(data, models, "finetune", layouts=data.off)  # table: as-is sizes; dataset: resizes
    on, off = table_rows(data.on), table_rows(data.off)
    # a resize that changes the count (the check compares counts: a resize to the same grid passes unseen)
    changed = next(i for i, s in enumerate(ds.samples)
                   if s[1] and on[f"synthetic/{s[1]}"]["num_tokens"] != off[f"synthetic/{s[1]}"]["num_tokens"])
    with pytest.raises(ValueError, match="the layouts table says"):
        ds[changed]
    with pytest.raises(ValueError, match="no overview-only counts"):
        dataset(data, models, "pretrain", model="overview", layouts=data.off)
