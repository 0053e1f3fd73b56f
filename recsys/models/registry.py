"""Model registry: a model kind name -> the function that builds its network from a config.

The training job and offline tools build models by name so a config file (and a run directory)
can say which architecture it holds; today there is one kind, the graph-smoothed two-tower.
"""
from __future__ import annotations

from typing import Callable

from torch import nn

from recsys.models.config import ModelConfig
from recsys.models.two_tower import TwoTower

ModelBuilder = Callable[[ModelConfig, int, int, dict[str, int]], nn.Module]

MODEL_BUILDERS: dict[str, ModelBuilder] = {
    "two_tower": lambda config, n_items, n_users, media_dims: TwoTower(config, n_items, n_users, media_dims),
}


def build_model(kind: str, config: ModelConfig, n_items: int, n_users: int, media_dims: dict[str, int]) -> nn.Module:
    """Build model `kind` (raises ValueError listing the known kinds)."""
    if kind not in MODEL_BUILDERS:
        raise ValueError(f"unknown model kind {kind!r} (known: {sorted(MODEL_BUILDERS)})")
    return MODEL_BUILDERS[kind](config, n_items, n_users, media_dims)
