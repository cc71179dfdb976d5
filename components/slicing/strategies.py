"""`slicing.strategy` dispatch: one entry point from config to a layout, for every consumer."""

from __future__ import annotations

from .anyres import ANYRES_PRESETS, AnyresLayout, plan_anyres
from .baselines import plan_fixed2x2, plan_pad336
from .layout import Layout
from .presets import PRESETS
from .uhd import plan_slices

STRATEGIES = ("uhd", "anyres", "pad336", "fixed2x2")
# The preset a strategy uses when none is named; each baseline is its own preset.
DEFAULT_PRESETS = {"uhd": "uhd-arxiv", "anyres": "onevision", "pad336": "pad336", "fixed2x2": "fixed2x2"}


def default_preset(strategy: str) -> str:
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown slicing strategy {strategy!r}; choose one of {STRATEGIES}")
    return DEFAULT_PRESETS[strategy]


def plan_layout(width: int, height: int, strategy: str = "uhd", preset: str = "uhd-arxiv") -> Layout | AnyresLayout:
    """The layout of one image under a strategy; baselines take their own name as preset."""
    check_strategy(strategy, preset)
    if strategy == "uhd":
        return plan_slices(width, height, preset=preset)
    if strategy == "anyres":
        return plan_anyres(width, height, preset=preset)
    if strategy == "pad336":
        return plan_pad336(width, height)
    if strategy == "fixed2x2":
        return plan_fixed2x2(width, height)
    raise ValueError(f"unknown slicing strategy {strategy!r}; choose one of {STRATEGIES}")


def check_strategy(strategy: str, preset: str) -> None:
    """Fail at config time, not on the millionth image."""
    if strategy not in STRATEGIES:
        raise ValueError(f"slicing.strategy must be one of {STRATEGIES}, got {strategy!r}")
    allowed = {"uhd": PRESETS, "anyres": ANYRES_PRESETS}.get(strategy, (strategy,))
    if preset not in allowed:
        raise ValueError(
            f"slicing.preset {preset!r} does not apply to strategy {strategy!r}; choose one of {sorted(allowed)}"
        )
