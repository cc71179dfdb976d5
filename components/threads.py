"""Torch's CPU thread count for one compute-heavy process (training, evaluation, `uhd infer`).

Ray and the Makefile set OMP_NUM_THREADS=1, which is right for parallel tests and data workers but leaves a
single model process on one core of two: training gains ~2x from the second core
(benchmarks/train_throughput.py), the evaluate stage 1.3x (POPE 1.12 -> 1.47 questions/s, 2 cores).
"""

from __future__ import annotations

import os

import torch


def use_cpu_cores(requested: int = 0) -> int:
    """`requested` torch threads, or this node's cores shared by its local workers (LOCAL_WORLD_SIZE, set by
    torch's launchers and Ray Train); nothing on a GPU. Returns the count set (0 when untouched)."""
    if torch.cuda.is_available():
        return 0
    local_workers = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    threads = requested or max(1, (os.cpu_count() or 1) // local_workers)
    torch.set_num_threads(threads)
    return threads
