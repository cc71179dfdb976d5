"""Training: DeepSpeed config, dataset / sampler / collate, the per-worker loop (CPU tiny to A100 scale).

Nothing here imports deepspeed or ray at module import time; loop.py imports them inside functions.
"""
