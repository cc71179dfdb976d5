"""plan_anyres against transformers 5.23 / LLaVA-NeXT (shared/golden/onevision_anyres*)."""

import math

import pytest
import torch
import torch.nn.functional as F

from components.slicing.anyres import multi_image_num_tokens, plan_anyres, video_num_tokens, video_tokens_per_frame
from tests.conftest import load_golden

GOLDEN = load_golden("onevision_anyres.public.json")


@pytest.mark.parametrize("case", GOLDEN["cases"], ids=lambda c: f"{c['size'][0]}x{c['size'][1]}")
def test_single_image(case):
    ar = plan_anyres(*case["size"])
    assert list(ar.best_resolution) == case["best_resolution"]
    assert list(ar.grid) == case["grid"]
    assert ar.num_crops == case["num_crops"]
    assert list(ar.unpadded_hw) == case["unpadded_hw"]
    assert list(ar.final_hw) == case["final_hw"]
    assert ar.downsampled == case["downsampled"]
    assert ar.num_tokens == case["num_image_tokens"]
    assert math.isclose(ar.downsample_ratio, case["downsample_ratio"], abs_tol=1e-6)
    if "llava_next_repo" in case:
        repo = plan_anyres(*case["size"], preset="onevision-repo")
        assert repo.num_tokens == case["llava_next_repo"]["num_image_tokens"]
        assert list(repo.final_hw) == case["llava_next_repo"]["final_hw"]


@pytest.mark.parametrize(
    ("size", "hf", "repo"),
    [((820, 1107), 5751, 5589), ((1107, 820), 5731, 5567), ((47, 423), 1161, 1053), ((2717, 4446), 7321, 7281)],
)
def test_unpad_rounding_variants(size, hf, repo):
    """onevision.md §3.1: HF's int(round(x, 7)) vs LLaVA-NeXT's int(x)."""
    assert plan_anyres(*size).num_tokens == hf
    assert plan_anyres(*size, preset="onevision-repo").num_tokens == repo


@pytest.mark.parametrize(("size", "tokens"), [((1920, 1920), 7209), ((582, 1921), 7254), ((944, 1153), 8765),
                                                ((14, 1), 757), ((645, 1921), 7401)])
def test_float_floor_division_and_extremes(size, tokens):
    assert plan_anyres(*size).num_tokens == tokens


@pytest.mark.parametrize("video", GOLDEN["video"], ids=lambda v: f"{v['num_frames']}f")
def test_video(video):
    assert video_tokens_per_frame() == video["tokens_per_frame"]
    assert video_num_tokens(video["num_frames"]) == video["num_video_tokens"]


@pytest.mark.parametrize("sample", GOLDEN["multi_image"], ids=lambda s: f"{len(s['sizes'])}img")
def test_multi_image(sample):
    counts = multi_image_num_tokens(sample["sizes"])
    assert counts == sample["tokens_per_image"]
    assert sum(counts) == sample["llava_next_repo_total"]


def test_interpolation_conventions():
    """The bilinear resizes the model will run (align_corners=False) give the reference values."""
    ref = GOLDEN["interpolation"]
    ramp = lambda h, w: (1000 * torch.arange(h, dtype=torch.float64)[:, None] + torch.arange(w))[None, None]  # noqa: E731
    pooled = F.interpolate(ramp(27, 27), size=(14, 14), mode="bilinear", align_corners=False)[0, 0]
    row0 = torch.tensor(ref["video_pool_27_to_14"]["out_row0"], dtype=torch.float64)
    assert torch.allclose(pooled[0], row0, atol=1e-5)
    assert math.isclose(pooled.sum().item(), ref["video_pool_27_to_14"]["out_sum"], rel_tol=1e-9)
    for key, (src, dst) in {"anyres_max_75x135_to_60x108": ((75, 135), (60, 108)),
                            "anyres_max_162x162_to_81x81": ((162, 162), (81, 81)),
                            "anyres_max_135x135_to_80x80": ((135, 135), (80, 80))}.items():
        out = F.interpolate(ramp(*src), size=dst, mode="bilinear", align_corners=False)[0, 0]
        assert math.isclose(out[0, 0].item(), ref[key]["out_00"], abs_tol=1e-6)
        assert math.isclose(out[-1, -1].item(), ref[key]["out_last"], abs_tol=1e-6)
        assert math.isclose(out.sum().item(), ref[key]["out_sum"], rel_tol=1e-9)
