"""plan_slices against the reference implementations' outputs (shared/golden/uhd_slices*)."""

import pytest

from components.slicing import plan_slices
from tests.conftest import load_golden

LABEL_TO_PRESET = {
    "uhd_v1_arxiv_march2024": "uhd-arxiv",
    "uhd_v1_eccv_core": "uhd-eccv",
    "uhd_v1_eccv_eval_pipeline": "uhd-eccv-eval",
    "minicpm_function_defaults": "minicpm",
    "uhd_v2_eval_core": "uhd-v2",
    "paper_formula_as_written": "paper",
}


def _cases():
    for block in load_golden("uhd_slices.public.json"):
        preset = LABEL_TO_PRESET[block["label"].split(" ")[0]]
        for case in block["cases"]:
            yield pytest.param(preset, case, id=f"{preset}-{case['size'][0]}x{case['size'][1]}")


@pytest.mark.parametrize(("preset", "case"), list(_cases()))
def test_grid_and_tokens(preset, case):
    lay = plan_slices(*case["size"], preset=preset)
    assert list(lay.grid) == case["grid"]
    assert lay.num_tokens == case["tokens"]
    assert lay.n_slices == case["n_slices"]
    if "sliced" in case:
        assert lay.sliced == case["sliced"]


@pytest.mark.parametrize(("preset", "case"), [p for p in _cases() if p.values[0] not in ("uhd-arxiv", "paper")])
def test_reference_sizes(preset, case):
    """ECCV-family presets reproduce the exact resized slice and overview sizes."""
    lay = plan_slices(*case["size"], preset=preset)
    assert [list(s) for s in lay.slices] == case["slices"]
    assert list(lay.overview) == case["overview"]
    if "separators" in case:
        assert list(lay.separators) == case["separators"]
    if "pre_resized" in case:
        assert list(lay.pre_resized) == case["pre_resized"]
    if "resampler_pool_hw" in case:
        pools = lay.extras["pool_hw"]
        assert list(pools["overview"]) == case["resampler_pool_hw"]["overview"]
        expected_slice = case["resampler_pool_hw"]["slice"]
        assert (list(pools["slice"]) if pools["slice"] else None) == expected_slice


@pytest.mark.parametrize(("preset", "case"), [p for p in _cases() if p.values[0] == "uhd-arxiv"])
def test_arxiv_fixes_the_slice_stretch(preset, case):
    """The March code stretched slices to the overview shape; we size each slice from its own crop, which
    is exactly the patch grid its position embeddings were interpolated to (posembed_patches_slice_wh)."""
    lay = plan_slices(*case["size"], preset=preset)
    assert list(lay.overview) == case["overview"]
    if lay.sliced:
        w, h = lay.slices[0]
        assert [w // 14, h // 14] == case["posembed_patches_slice_wh"]
        assert all(s == lay.slices[0] for s in lay.slices)


@pytest.mark.parametrize(("preset", "case"), [p for p in _cases() if p.values[0] == "paper"])
def test_paper_ties_are_recorded(preset, case):
    lay = plan_slices(*case["size"], preset=preset)
    assert [list(t) for t in lay.extras["ties"]] == case["ties"]
    assert lay.extras["N"] == case["N"]


def test_square_images_pick_three_by_two():
    """uhd.md §4: |log(2/3)| exceeds log(3/2) by one ulp, so the reference picks 3x2 for squares."""
    assert plan_slices(1000, 1000, "uhd-eccv").grid == (3, 2)
    assert plan_slices(1008, 1008, "minicpm").grid == (3, 2)


def test_rejects_bad_sizes():
    for bad in [(0, 10), (10, -1), (1.5, 10), (True, 3)]:
        with pytest.raises((ValueError, TypeError)):
            plan_slices(*bad)
    with pytest.raises(ValueError, match="unknown UHD preset"):
        plan_slices(10, 10, preset="uhd-v9")
