"""One slicing implementation for training, evaluation, inference and the layouts stage.

The public API (shared/design.md §6): `plan_slices` (LLaVA-UHD presets), `plan_anyres` (OneVision AnyRes),
`plan_layout` (dispatch by `slicing.strategy`, baselines included) and the layout types they return.
"""

from .anyres import ANYRES_PRESETS, AnyresLayout, AnyresPreset, get_anyres_preset, plan_anyres
from .baselines import plan_fixed2x2, plan_pad336
from .layout import Layout, Size, spatial_schema_separators
from .presets import PRESETS, UhdPreset, get_preset
from .strategies import STRATEGIES, check_strategy, default_preset, plan_layout
from .uhd import plan_slices

__all__ = [
    "ANYRES_PRESETS", "AnyresLayout", "AnyresPreset", "Layout", "PRESETS", "STRATEGIES", "Size", "UhdPreset",
    "check_strategy", "default_preset", "get_anyres_preset", "get_preset", "plan_anyres", "plan_fixed2x2",
    "plan_layout", "plan_pad336", "plan_slices", "spatial_schema_separators",
]
