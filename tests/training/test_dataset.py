"""TrainingSet + Collate on a tiny synthetic set built, validated and laid out in tmp (the real stage code)."""

import types

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import torch

from components.data.conversation import IGNORE_INDEX
from components.model.build import build_model, load_tokenizer
from components.slicing.layout import visual_token_count
from components.training.collate import Collate
from components.training.dataset import TrainingSet
from components.training.loop import TrainConfig
from tests.conftest import TINY_MODEL


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory, repo_root):
    """data/{raw,validated,layouts} for a synthetic source of a few dozen samples (~5 s)."""
    from components.data.synthetic import SyntheticSpec, build_synthetic
    from components.data.training_sets import validate_training_sets
    from components.slicing.runner import write_layouts

    root = tmp_path_factory.mktemp("tiny_data")
    build_synthetic(root / "raw/synthetic", SyntheticSpec(seed=0, train_scenes=4, eval_scenes=1, easy_vqa_images=4))
    settings = types.SimpleNamespace(full_decode_fraction=0.0, max_pixels=89478485, seed=0, workers=1)
    validate_training_sets(root / "raw", "synthetic", root / "validated", root / "quarantine", root / "reports",
                           settings, progress=False)
    write_layouts(root / "validated/images.parquet", root / "raw", root / "layouts/layouts.parquet", "uhd",
                  "uhd-arxiv", workers=1, progress=False)
    tok_dir = str(repo_root / "assets/tokenizers/llama")
    return types.SimpleNamespace(root=root, validated=str(root / "validated"), raw=str(root / "raw"),
                                 layouts=str(root / "layouts/layouts.parquet"), tokenizer_dir=tok_dir)


@pytest.fixture(scope="module")
def parts(tiny_data):
    cfg = TrainConfig(tiny_data.validated, tiny_data.layouts, tiny_data.raw, "unused", **TINY_MODEL)
    tok = load_tokenizer(cfg.tokenizer, cfg.tokenizer_dir)
    return tok, build_model(cfg, tok)


def make(tiny_data, parts, stage, layouts=None, **kw):
    tok, model = parts
    return TrainingSet(tiny_data.validated, layouts or tiny_data.layouts, tiny_data.raw, stage, tok, model.config, **kw)


@pytest.mark.parametrize("stage", ["pretrain", "finetune"])
def test_items_expand_the_layouts_token_count_and_mask_it(tiny_data, parts, stage):
    ds = make(tiny_data, parts, stage)
    _, model = parts
    rows = pq.read_table(f"{tiny_data.validated}/{stage}/valid.parquet")
    assert len(ds) + sum(ds.skipped.values()) == rows.num_rows and not ds.skipped
    image_id = model.config.image_token_id
    cfg = model.config
    layouts = {r["path"]: visual_token_count(r, cfg.compressor, cfg.spatial_schema)
               for r in pq.read_table(tiny_data.layouts).to_pylist()}
    root = "synthetic/llava_pretrain/images" if stage == "pretrain" else "synthetic"
    seen_text_only = False
    for i in range(len(ds)):
        item, (_, image, n_visual, _, _) = ds[i], ds.samples[i]
        visual = item["input_ids"] == image_id
        assert int(visual.sum()) == n_visual
        assert (item["labels"][visual] == IGNORE_INDEX).all() and (item["labels"] != IGNORE_INDEX).any()
        assert len(item["input_ids"]) == len(item["labels"]) <= ds.max_length
        if image is None:
            seen_text_only = True
            assert ds.lengths[i] < 0 and item["pixel_values"] == []
            continue
        assert n_visual == layouts[f"{root}/{image}"]  # read from the table
        (w, h), = item["image_sizes"]
        assert model.plan(w, h).num_tokens == n_visual  # the model agrees
        assert ds.lengths[i] == len(item["input_ids"])
        assert visual.nonzero().flatten().diff().eq(1).all()  # one contiguous run
    assert seen_text_only == (stage == "finetune")
    assert ds.template == ("plain" if stage == "pretrain" else "vicuna_v1")


def test_layouts_count_is_read_not_recomputed(tiny_data, parts, tmp_path):
    table = pq.read_table(tiny_data.layouts)
    column = f"tokens_{parts[1].config.compressor}"
    bumped = table.set_column(table.schema.get_field_index(column), column, pc.add(table.column(column), 1))
    pq.write_table(bumped, tmp_path / "layouts.parquet")
    ds = make(tiny_data, parts, "pretrain", layouts=tmp_path / "layouts.parquet")
    assert ds.samples[0][2] == make(tiny_data, parts, "pretrain").samples[0][2] + 1
    with pytest.raises(ValueError, match="layouts table says"):
        ds[0]


def test_wrong_slicing_preset_in_layouts_fails_loudly(tiny_data, parts, tmp_path):
    table = pq.read_table(tiny_data.layouts)
    other = table.set_column(table.schema.get_field_index("preset"), "preset",
                             pc.replace_substring(table.column("preset"), "uhd-arxiv", "uhd-eccv"))
    pq.write_table(other, tmp_path / "layouts.parquet")
    with pytest.raises(ValueError, match="no layout for strategy 'uhd' preset 'uhd-arxiv'"):
        make(tiny_data, parts, "pretrain", layouts=tmp_path / "layouts.parquet")


def test_too_long_samples_are_counted_never_silently_dropped(tiny_data, parts):
    full = make(tiny_data, parts, "finetune")
    short = make(tiny_data, parts, "finetune", max_length=200)
    assert short.skipped["too_long"] > 0
    assert len(short) + sum(short.skipped.values()) == len(full)
    assert all(len(short[i]["input_ids"]) <= 200 for i in range(len(short)))


def test_collate_right_pads_and_the_model_accepts_the_batch(tiny_data, parts):
    tok, model = parts
    ds = make(tiny_data, parts, "finetune")
    picks = [next(i for i, n in enumerate(ds.lengths) if n < 0), *[i for i, n in enumerate(ds.lengths) if n > 0][:2]]
    items = [ds[i] for i in picks]
    batch = Collate(pad_token_id=0)(items)
    width = max(len(it["input_ids"]) for it in items)
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape == (3, width)
    for row, it in enumerate(items):
        n = len(it["input_ids"])
        assert batch["attention_mask"][row].tolist() == [1] * n + [0] * (width - n)
        assert (batch["labels"][row, n:] == IGNORE_INDEX).all() and (batch["input_ids"][row, n:] == 0).all()
    assert len(batch["pixel_values"]) == sum(len(it["pixel_values"]) for it in items)
    assert batch["image_sizes"].shape == (2, 2)
    with torch.no_grad():
        out = model(**{k: v for k, v in batch.items() if k != "ids"})
    assert torch.isfinite(out.loss)
    assert "pixel_values" not in Collate(0)([items[0]])  # text-only batch: no pixels at all
