"""RoIAlign (pure torch) against a slow line-by-line port of torchvision's CPU kernel."""

from __future__ import annotations

import math

import pytest
import torch

from components.model.roi_align import roi_align, roi_align_weights


def _bilinear(img: torch.Tensor, y: float, x: float) -> torch.Tensor:
    """torchvision `bilinear_interpolate` (roi_align_kernel.cpp) for one point of a (C, H, W) map."""
    _, height, width = img.shape
    if y < -1.0 or y > height or x < -1.0 or x > width:
        return img.new_zeros(img.shape[0])
    y, x = max(y, 0.0), max(x, 0.0)
    y_low, x_low = int(y), int(x)
    if y_low >= height - 1:
        y_high = y_low = height - 1
        y = float(y_low)
    else:
        y_high = y_low + 1
    if x_low >= width - 1:
        x_high = x_low = width - 1
        x = float(x_low)
    else:
        x_high = x_low + 1
    ly, lx = y - y_low, x - x_low
    hy, hx = 1.0 - ly, 1.0 - lx
    return (
        hy * hx * img[:, y_low, x_low]
        + hy * lx * img[:, y_low, x_high]
        + ly * hx * img[:, y_high, x_low]
        + ly * lx * img[:, y_high, x_high]
    )


def reference_roi_align(
    input: torch.Tensor,
    rois: torch.Tensor,
    output_size: tuple[int, int],
    spatial_scale: float = 1.0,
    sampling_ratio: int = -1,
    aligned: bool = False,
) -> torch.Tensor:
    """Slow, loop-for-loop port of torchvision's `roi_align_forward_kernel_impl` (python floats)."""
    pooled_h, pooled_w = output_size
    outs = []
    for roi in rois.tolist():
        img = input[int(roi[0])]
        offset = 0.5 if aligned else 0.0
        start_w, start_h = roi[1] * spatial_scale - offset, roi[2] * spatial_scale - offset
        end_w, end_h = roi[3] * spatial_scale - offset, roi[4] * spatial_scale - offset
        roi_w, roi_h = end_w - start_w, end_h - start_h
        if not aligned:
            roi_w, roi_h = max(roi_w, 1.0), max(roi_h, 1.0)
        bin_h, bin_w = roi_h / pooled_h, roi_w / pooled_w
        grid_h = sampling_ratio if sampling_ratio > 0 else math.ceil(roi_h / pooled_h)
        grid_w = sampling_ratio if sampling_ratio > 0 else math.ceil(roi_w / pooled_w)
        count = max(grid_h * grid_w, 1)
        bins = []
        for ph in range(pooled_h):
            for pw in range(pooled_w):
                acc = img.new_zeros(img.shape[0])
                for iy in range(grid_h):
                    y = start_h + ph * bin_h + (iy + 0.5) * bin_h / grid_h
                    for ix in range(grid_w):
                        x = start_w + pw * bin_w + (ix + 0.5) * bin_w / grid_w
                        acc = acc + _bilinear(img, y, x)
                bins.append(acc / count)
        outs.append(torch.stack(bins, dim=1).reshape(-1, pooled_h, pooled_w))
    return torch.stack(outs) if outs else input.new_zeros(0, input.shape[1], pooled_h, pooled_w)


def _random_rois(gen: torch.Generator, n_images: int, height: int, width: int, k: int) -> torch.Tensor:
    """Fractional boxes, boxes crossing and outside the borders, sub-pixel and degenerate boxes."""
    x = torch.rand(k, 2, generator=gen, dtype=torch.float64) * (width + 4) - 2
    y = torch.rand(k, 2, generator=gen, dtype=torch.float64) * (height + 4) - 2
    boxes = torch.stack([x.min(1).values, y.min(1).values, x.max(1).values, y.max(1).values], dim=1)
    special = torch.tensor(
        [
            [0, 0, width, height],  # the whole map
            [width - 0.3, height - 0.2, width, height],  # sub-pixel corner
            [1.25, 2.5, 1.25, 4.0],  # zero width
            [-3.0, -3.0, -1.5, -1.2],  # entirely outside (left/top)
            [width + 0.5, 0, width + 3.0, height],  # entirely outside (right)
            [0.5, 0.5, 0.75, 0.6],  # tiny
            [2.0, 1.0, 1.0, 3.0],  # inverted (x2 < x1)
        ],
        dtype=torch.float64,
    )
    boxes = torch.cat([boxes, special])
    batch = torch.randint(0, n_images, (boxes.shape[0], 1), generator=gen).to(torch.float64)
    return torch.cat([batch, boxes], dim=1)


CASES = [
    # (output_size, spatial_scale, sampling_ratio, aligned)
    ((3, 2), 1.0, -1, False),
    ((3, 2), 1.0, -1, True),
    ((1, 1), 1.0, -1, False),
    ((4, 3), 0.5, -1, False),
    ((2, 4), 1.0, 2, True),
    ((3, 3), 2.0, 1, False),
]


@pytest.mark.parametrize("output_size,spatial_scale,sampling_ratio,aligned", CASES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_matches_reference_kernel(output_size, spatial_scale, sampling_ratio, aligned, dtype):
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(2, 3, 7, 9, generator=gen, dtype=torch.float64)
    rois = _random_rois(gen, 2, 7, 9, 12)
    expected = reference_roi_align(x, rois, output_size, spatial_scale, sampling_ratio, aligned)
    got = roi_align(x.to(dtype), rois.to(dtype), output_size, spatial_scale, sampling_ratio, aligned)
    assert got.shape == expected.shape == (rois.shape[0], 3, *output_size)
    assert got.dtype == dtype
    torch.testing.assert_close(got.double(), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("shape", [(1, 30), (30, 1), (1, 1), (2, 3)])
def test_maps_smaller_than_the_boxes_grid(shape):
    """12x12 equal boxes on maps narrower than 12 patches: sub-patch boxes are fine."""
    h, w = shape
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(1, 4, h, w, generator=gen, dtype=torch.float64)
    xs = [j * w / 12 for j in range(13)]
    ys = [i * h / 12 for i in range(13)]
    boxes = torch.tensor([[0, xs[j], ys[i], xs[j + 1], ys[i + 1]] for i in range(12) for j in range(12)])
    boxes = boxes.to(torch.float64)
    for aligned in (False, True):
        expected = reference_roi_align(x, boxes, (3, 2), aligned=aligned)
        torch.testing.assert_close(roi_align(x, boxes, (3, 2), aligned=aligned), expected, atol=1e-10, rtol=0)


def test_hand_computed_value():
    x = torch.tensor([[[[0.0, 1.0], [2.0, 3.0]]]])
    out = roi_align(x, torch.tensor([[0.0, 0.0, 0.0, 2.0, 2.0]]), 1)
    # 2x2 samples at 0.5/1.5: 1.5 + 2 + 2.5 + 3 (the 1.5 samples sit on the last row/column)
    assert out.item() == pytest.approx(9.0 / 4.0)


def test_list_of_boxes_equals_roi_tensor():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 2, 6, 5, generator=gen)
    per_image = [torch.tensor([[0.0, 0.0, 5.0, 6.0], [1.2, 0.4, 3.3, 2.9]]), torch.zeros(0, 4), torch.rand(3, 4) * 4]
    per_image[2][:, 2:] += per_image[2][:, :2]
    rois = torch.cat([torch.cat([torch.full((len(b), 1), float(i)), b], 1) for i, b in enumerate(per_image)])
    torch.testing.assert_close(roi_align(x, per_image, (2, 2)), roi_align(x, rois, (2, 2)))


def test_gradients_match_reference_and_gradcheck():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 2, 5, 6, generator=gen, dtype=torch.float64, requires_grad=True)
    rois = _random_rois(gen, 2, 5, 6, 5)
    w = torch.randn(rois.shape[0], 2, 3, 2, generator=gen, dtype=torch.float64)
    (g_ref,) = torch.autograd.grad((reference_roi_align(x, rois, (3, 2)) * w).sum(), x)
    (g_got,) = torch.autograd.grad((roi_align(x, rois, (3, 2)) * w).sum(), x)
    torch.testing.assert_close(g_got, g_ref, atol=1e-10, rtol=0)
    assert torch.autograd.gradcheck(lambda t: roi_align(t, rois, (2, 2), sampling_ratio=2), (x,))


def test_weights_are_convex_inside_the_map():
    """Boxes inside the map: each bin's taps sum to 1 (the resampler relies only on linearity, not on this)."""
    boxes = torch.tensor([[0.0, 0.0, 24.0, 24.0], [3.5, 2.25, 9.0, 7.0]])
    index, weight = roi_align_weights(boxes, 24, 24, (3, 3))
    assert index.shape == weight.shape and index.min() >= 0 and index.max() < 24 * 24
    torch.testing.assert_close(weight.sum(1), torch.ones(weight.shape[0]))


def test_half_precision_accumulates_in_float32():
    x = torch.randn(1, 8, 6, 6)
    rois = torch.tensor([[0.0, 0.5, 0.5, 5.5, 4.0]])
    out = roi_align(x.bfloat16(), rois, (2, 2))
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), roi_align(x.bfloat16().float(), rois, (2, 2)), atol=1e-2, rtol=1e-2)
