"""One slicing implementation for training, evaluation, inference and the layouts stage."""

from .layout import Layout, Size, spatial_schema_separators
from .presets import PRESETS, UhdPreset, get_preset
from .uhd import plan_slices

__all__ = ["Layout", "PRESETS", "Size", "UhdPreset", "get_preset", "plan_slices", "spatial_schema_separators"]
