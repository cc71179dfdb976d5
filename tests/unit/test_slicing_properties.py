"""Properties that must hold for every image size, not just the golden ones."""

import math

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from components.slicing import PRESETS, plan_slices
from components.slicing.anyres import plan_anyres
from components.slicing.layout import patch_grid
from components.slicing.strategies import plan_layout

MAX_SIDE = 16384
MAX_ASPECT = 100


@st.composite
def image_sizes(draw, max_side=MAX_SIDE, max_aspect=MAX_ASPECT):
    """Any size from 1x1 to max_side^2 with aspect ratio up to 1:max_aspect, biased to the edges."""
    width = draw(st.integers(1, max_side))
    low = max(1, math.ceil(width / max_aspect))
    high = min(max_side, width * max_aspect)
    height = draw(st.integers(low, high))
    return width, height


def model_side_token_count(layout) -> int:
    """What the model computes from a layout: one block per encoded image plus one token per separator,
    following the segment list it builds its embedding sequence from."""
    return sum(length for _, length in layout.segments())


@settings(max_examples=300, deadline=None)
@given(size=image_sizes(), preset=st.sampled_from(sorted(PRESETS)))
def test_every_slice_is_a_positive_multiple_of_the_patch(size, preset):
    lay = plan_slices(*size, preset=preset)
    for w, h in lay.images:
        assert w > 0 and h > 0
        assert w % 14 == 0 and h % 14 == 0
    assert len(lay.slices) == (lay.grid[0] * lay.grid[1] if lay.sliced else 0)


@settings(max_examples=300, deadline=None)
@given(size=image_sizes(), preset=st.sampled_from(sorted(PRESETS)),
       compressor=st.sampled_from(["resampler", "spatial_resampler", "mlp"]), schema=st.booleans())
def test_token_count_equals_the_model_side(size, preset, compressor, schema):
    lay = plan_slices(*size, preset=preset)
    assert lay.num_tokens == model_side_token_count(lay)
    variant = lay.with_compressor(compressor, spatial_schema=schema)
    assert variant.num_tokens == model_side_token_count(variant)
    per_image = [c * r for c, r in (patch_grid(s, 14) for s in lay.images)] if compressor == "mlp" else None
    queries = {"resampler": 64, "spatial_resampler": 144}.get(compressor, 0)
    expected = sum(per_image) if per_image else queries * len(lay.images)
    expected += len(lay.slices) if (schema and lay.sliced) else 0
    assert variant.num_tokens == expected


@settings(max_examples=400, deadline=None)
@given(n=st.floats(1.0, 20.0, exclude_min=True), log_aspect=st.floats(-math.log(6), math.log(6)))
def test_paper_theorem_slice_aspect(n, log_aspect):
    """arXiv App. B: for N <= 20 and aspect in [1:6, 6:1] every slice aspect lies in [1:2, 2:1]."""
    aspect = math.exp(log_aspect)
    area = n * 336 * 336
    width = max(1, round(math.sqrt(area * aspect)))
    height = max(1, round(math.sqrt(area / aspect)))
    actual_n = math.ceil(width * height / 336**2)
    assume(2 <= actual_n <= 20 and 1 / 6 <= width / height <= 6)
    lay = plan_slices(width, height, preset="paper")
    cols, rows = lay.grid
    slice_aspect = (width / cols) / (height / rows)
    assert 0.5 - 1e-9 <= slice_aspect <= 2 + 1e-9, (width, height, lay.grid)


@settings(max_examples=300, deadline=None)
@given(size=image_sizes())
def test_anyres_invariants(size):
    ar = plan_anyres(*size)
    h, w = ar.final_hw
    assert 1 <= h <= ar.unpadded_hw[0] and 1 <= w <= ar.unpadded_hw[1]
    assert ar.num_tokens == 729 + h * (w + 1)
    assert ar.best_resolution[0] % 384 == 0 and ar.best_resolution[1] % 384 == 0
    assert 1 <= ar.grid[0] <= 6 and 1 <= ar.grid[1] <= 6


@settings(max_examples=200, deadline=None)
@given(size=image_sizes(), strategy=st.sampled_from(["pad336", "fixed2x2"]))
def test_baselines(size, strategy):
    lay = plan_layout(*size, strategy=strategy, preset=strategy)
    assert lay.num_tokens == model_side_token_count(lay)
    if strategy == "pad336":
        assert lay.overview == (336, 336) and lay.num_tokens == 576
    else:
        assert lay.grid == (2, 2) and lay.images == ((336, 336),) * 5


@settings(max_examples=200, deadline=None)
@given(size=image_sizes(), strategy=st.sampled_from(["uhd", "fixed2x2", "pad336", "anyres"]),
       preset=st.sampled_from(sorted(PRESETS)), compressor=st.sampled_from(["resampler", "spatial_resampler", "mlp"]),
       schema=st.booleans())
def test_layouts_row_gives_every_model_variant_its_count(size, strategy, preset, compressor, schema):
    """One layouts table serves every (compressor, spatial_schema): `-S compressor=mlp` re-uses it."""
    from components.slicing.layout import visual_token_count

    preset = {"uhd": preset, "anyres": "onevision"}.get(strategy, strategy)
    lay = plan_layout(*size, strategy=strategy, preset=preset)
    expected = lay.num_tokens if strategy == "anyres" else lay.with_compressor(compressor, schema).num_tokens
    assert visual_token_count(lay.to_record(), compressor, schema) == expected
