"""The compressor registry: which compressors exist, how many tokens each gives an image, and what actually runs.

One torch-free leaf module (it imports nothing from the project) because three layers need the same facts and
must not depend on each other to get them: `components.slicing` counts visual tokens from geometry alone (it
never imports model code), `components.model` builds the modules, and `components.config` validates params at
stage start without loading torch.

    resampler          arXiv v1 perceiver resampler: 64 learned queries per encoded image
    spatial_resampler  ECCV spatially constrained resampler: 144 queries on a 12x12 grid, one per region
    mlp                LLaVA-1.5 mlp2x_gelu projector: one token per ViT patch (no queries)

Two rules decide what runs for a (compressor, strategy) pair, and everything that records or counts uses them:
- projector rule: AnyRes (LLaVA-OneVision) projects every patch, so under strategy `anyres` the MLP runs
  whatever compressor was asked for;
- spatial-schema rule: the separators between slices belong to the UHD-style layouts; AnyRes marks rows with
  its own learned newline, so under `anyres` no schema runs.
"""

from __future__ import annotations

RESAMPLER = "resampler"
SPATIAL_RESAMPLER = "spatial_resampler"
MLP = "mlp"
COMPRESSORS = (RESAMPLER, SPATIAL_RESAMPLER, MLP)

SPATIAL_GRID = 12  # the spatial resampler's query grid: 12 x 12 regions, one query each
QUERIES = {RESAMPLER: 64, SPATIAL_RESAMPLER: SPATIAL_GRID * SPATIAL_GRID}  # tokens per encoded image

PATCH_PROJECTING_STRATEGY = "anyres"  # the slicing strategy (components.slicing.strategies) that forces the MLP


def check_compressor(compressor: str) -> str:
    """`compressor` itself when it is a known name, else ValueError listing the choices."""
    if compressor not in COMPRESSORS:
        raise ValueError(f"unknown compressor {compressor!r}; use one of {', '.join(COMPRESSORS)}")
    return compressor


def queries_per_image(compressor: str) -> int | None:
    """Compressed tokens per encoded image; None for the MLP, which keeps one token per ViT patch."""
    return QUERIES.get(check_compressor(compressor))


def effective_compressor(compressor: str, strategy: str) -> str:
    """The compressor that runs for `compressor` under slicing `strategy` (the projector rule)."""
    check_compressor(compressor)
    return MLP if strategy == PATCH_PROJECTING_STRATEGY else compressor


def effective_spatial_schema(spatial_schema: bool, strategy: str) -> bool:
    """Whether slice separators are inserted under slicing `strategy` (the spatial-schema rule)."""
    return bool(spatial_schema) and strategy != PATCH_PROJECTING_STRATEGY
