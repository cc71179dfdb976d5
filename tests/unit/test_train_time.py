"""slicing.train_time (components/slicing/train_time.py): the ECCV training code's resizes and overview-only encoding,
as sizes and layouts planned by the one slicing engine; the params that switch them on and their validation."""

import math

import pytest

from components.config import ConfigError, Params, SlicingConfig, TrainTimeConfig, load_params, parse
from components.slicing import plan_layout, plan_slices
from components.slicing.layout import visual_token_count
from components.slicing.presets import get_preset
from components.slicing.train_time import GRID_SLICES, TrainTimeResize, draw, plan_training_layout, resize_as_grid
from components.slicing.uhd import find_best_resize
from components.training.loop import TrainConfig
from tests.conftest import REPO

ECCV = TrainTimeResize(textvqa_long_side=1024, resize_as_grid_p=0.1, seed=0)
R = get_preset("uhd-eccv").resolution


@pytest.mark.parametrize("size, expected", [((500, 375), (1024, 768)), ((3000, 1000), (1024, 341)),
                                            ((300, 600), (512, 1024))])
def test_a_textvqa_path_gets_the_long_side_resize_and_its_layout_follows(size, expected):
    path = "synthetic/textvqa/train_images/0001.jpg"
    assert ECCV.size(path, *size, "uhd-eccv") == expected  # up or down, aspect kept
    lay = plan_training_layout(path, *size, "uhd", "uhd-eccv", ECCV)
    planned = plan_layout(*expected, "uhd", "uhd-eccv")
    assert lay.size == size and lay.pre_resized == expected
    assert (lay.grid, lay.slices, lay.overview, lay.num_tokens) == (
        planned.grid, planned.slices, planned.overview, planned.num_tokens)
    assert lay.to_record()["pre_resized_w"] == expected[0]
    # the same image elsewhere is not a TextVQA image: planned as it is unless its coin says otherwise
    other = "synthetic/coco/train2017/0001.jpg"
    assert plan_training_layout(other, *size, "uhd", "uhd-eccv", TrainTimeResize(textvqa_long_side=1024)) == \
        plan_layout(*size, "uhd", "uhd-eccv")


def test_textvqa_images_never_take_the_grid_resize():
    always = TrainTimeResize(textvqa_long_side=1024, resize_as_grid_p=1.0)
    assert always.size("textvqa/a.jpg", 2048, 512, "uhd-eccv") == (1024, 256)  # long side only, as the reference


def test_resize_as_grid_matches_the_reference_arithmetic():
    # train.py: r = sqrt(6*336*336/h/w); (int(w*r), int(h*r))
    for w, h in ((640, 480), (50, 2000), (1, 1), (4032, 3024), (1344, 336)):
        r = math.sqrt(6 * 336 * 336 / h / w)
        assert resize_as_grid(w, h, 6, 336) == (max(int(w * r), 1), max(int(h * r), 1))
        gw, gh = resize_as_grid(w, h, 6, 336)
        assert math.ceil(gw * gh / R**2) == GRID_SLICES  # lands on N = 6 (the grid may still be 5 or 7 wide)


def test_the_grid_decision_is_seeded_per_path_and_hits_its_rate():
    paths = [f"synthetic/coco/train2017/{i:06d}.jpg" for i in range(20000)]
    picked = [draw(0, p) < 0.1 for p in paths]
    assert picked == [draw(0, p) < 0.1 for p in paths]  # the same decision every time (layouts == dataset)
    assert 0.09 < sum(picked) / len(picked) < 0.11
    assert len(set(picked[:100])) == 2  # different images get different decisions
    assert [draw(1, p) < 0.1 for p in paths] != picked  # the seed moves them
    resized = [ECCV.size(p, 640, 480, "uhd-eccv") for p in paths[:2000]]
    assert {s for s in resized if s} == {resize_as_grid(640, 480, 6, R)}
    assert [s is not None for s in resized] == picked[:2000]


def test_an_image_that_already_gives_six_slices_is_never_resized():
    always = TrainTimeResize(resize_as_grid_p=1.0)
    assert plan_slices(1008, 672, "uhd-eccv").n_slices == 6
    assert always.size("coco/x.jpg", 1008, 672, "uhd-eccv") is None
    assert plan_training_layout("coco/x.jpg", 1008, 672, "uhd", "uhd-eccv", always) == plan_slices(1008, 672,
                                                                                                  "uhd-eccv")
    assert always.size("coco/x.jpg", 640, 480, "uhd-eccv") == resize_as_grid(640, 480, 6, R)


def test_off_is_todays_layout():
    off = TrainTimeResize()
    assert not off.active
    for size in ((1, 1), (640, 480), (1000, 1000), (50, 2000), (4032, 3024)):
        for path in ("textvqa/a.jpg", "coco/b.jpg"):
            lay = plan_training_layout(path, *size, "uhd", "uhd-eccv", off)
            assert lay == plan_layout(*size, "uhd", "uhd-eccv") and lay.pre_resized is None


@pytest.mark.parametrize("size", [(1, 1), (336, 336), (337, 336), (640, 480), (1000, 1000), (50, 2000),
                                  (1920, 1080), (4032, 3024)])
def test_overview_only_is_the_unsliced_eccv_path(size):
    lay = plan_slices(*size, "uhd-eccv")
    only = lay.overview_only()
    # slice_image_minicpm with the slices dropped (--single): fit(W, H, upscale=True), one image, 144 queries
    assert only.slices == () and only.separators == () and only.images == (find_best_resize(*size, get_preset(
        "uhd-eccv"), allow_upscale=True),)
    assert only.with_compressor("spatial_resampler", True).num_tokens == 144
    record = {**lay.to_record(), **lay.overview_record()}
    assert visual_token_count(record, "spatial_resampler", True, overview_only=True) == 144
    assert visual_token_count(record, "resampler", True, overview_only=True) == 64
    cols, rows = (only.overview[0] // 14, only.overview[1] // 14)
    assert visual_token_count(record, "mlp", True, overview_only=True) == cols * rows
    if lay.sliced:  # fine-tuning the same image sees the slices too
        assert visual_token_count(record, "spatial_resampler", True) == 144 * (lay.n_slices + 1) + lay.n_slices


def test_profiles_turn_it_on_only_for_the_eccv_recipe():
    eccv = load_params(REPO / "params/paper-eccv-13b.yaml").slicing.train_time
    assert (eccv.textvqa_long_side, eccv.resize_as_grid_p, eccv.pretrain_overview_only) == (1024, 0.1, True)
    for name in ("params.yaml", "params/paper-7b.yaml", "params/paper-13b.yaml", "params/smoke.yaml"):
        assert not load_params(REPO / name).slicing.train_time.active, name
    assert Params().slicing.train_time == TrainTimeConfig()


def test_only_pretraining_encodes_overviews_only():
    params = load_params(REPO / "params/paper-eccv-13b.yaml")
    paths = {"validated_dir": "v", "layouts_path": "l", "raw_root": "r", "output_dir": "o"}
    pretrain = TrainConfig.from_params(params, "pretrain", **paths)
    finetune = TrainConfig.from_params(params, "finetune", **paths)
    assert pretrain.overview_only and not finetune.overview_only
    assert pretrain.train_time == finetune.train_time == params.slicing.train_time.resize == ECCV


@pytest.mark.parametrize("train_time, message", [
    ({"textvqa_long_side": -1}, "slicing.train_time.textvqa_long_side: must be >= 0"),
    ({"resize_as_grid_p": 1.5}, "slicing.train_time.resize_as_grid_p: must be in [0, 1]"),
    ({"pretrain_overview_only": 1}, "slicing.train_time.pretrain_overview_only: expected bool"),
])
def test_bad_values_name_their_key(train_time, message):
    block = {"textvqa_long_side": 0, "resize_as_grid_p": 0.0, "seed": 0, "pretrain_overview_only": False}
    data = {"strategy": "uhd", "preset": "uhd-eccv", "anyres_preset": "onevision", "train_time": block | train_time}
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse(SlicingConfig, data, "slicing")


@pytest.mark.parametrize("strategy, preset, message", [
    ("anyres", "uhd-eccv", "applies to strategy uhd only"),
    ("pad336", "uhd-eccv", "applies to strategy uhd only"),
    ("uhd", "uhd-eccv-eval", "pre-resizes every image itself"),
])
def test_train_time_needs_a_uhd_training_preset(strategy, preset, message):
    with pytest.raises(ConfigError, match=message):
        parse(SlicingConfig, {"strategy": strategy, "preset": preset, "anyres_preset": "onevision",
                              "train_time": {"textvqa_long_side": 0, "resize_as_grid_p": 0.0, "seed": 0,
                                             "pretrain_overview_only": True}}, "slicing")
