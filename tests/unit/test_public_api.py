"""The slicing API of shared/design.md §6 is importable from the package itself, as the README shows."""

import components.slicing as slicing
from components.slicing import AnyresLayout, Layout, default_preset, plan_anyres, plan_layout, plan_slices


def test_the_design_contract_imports_from_the_package():
    for name in ("plan_slices", "plan_anyres", "plan_layout", "Layout", "AnyresLayout", "Size"):
        assert name in slicing.__all__ and hasattr(slicing, name)


def test_plan_layout_dispatches_to_the_same_planners():
    assert plan_layout(1920, 1080, "uhd", "uhd-eccv") == plan_slices(1920, 1080, preset="uhd-eccv")
    assert plan_layout(1920, 1080, "anyres", "onevision") == plan_anyres(1920, 1080, preset="onevision")
    assert isinstance(plan_layout(640, 480, "pad336", "pad336"), Layout)
    assert isinstance(plan_anyres(640, 480), AnyresLayout)


def test_default_preset_per_strategy():
    assert [default_preset(s) for s in ("uhd", "anyres", "pad336", "fixed2x2")] == [
        "uhd-arxiv", "onevision", "pad336", "fixed2x2"]
    for strategy in ("uhd", "anyres", "pad336", "fixed2x2"):
        plan_layout(800, 600, strategy, default_preset(strategy))  # each default is valid for its strategy
