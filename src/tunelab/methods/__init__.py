"""One file per strategy, each registered by name (see registry.py)."""

from tunelab.methods.registry import all_strategies, get_strategy, register

__all__ = ["all_strategies", "get_strategy", "register"]
