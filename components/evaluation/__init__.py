"""Benchmark scoring with LLaVA-1.5 reference semantics (shared/design.md §6).

Use ``from components.evaluation import scoring``.
"""

from components.evaluation import scoring

__all__ = ["scoring"]
