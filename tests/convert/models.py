"""Small torch models that ``modelserve convert`` builds through ``module:callable``."""

from __future__ import annotations

import torch
from torch import nn


def mlp() -> nn.Module:
    """A 16 → 64 → 10 classifier with fixed weights."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 10))


def cnn() -> nn.Module:
    """A small convolutional classifier on [N, 3, 16, 16] images with fixed weights."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
        nn.Flatten(), nn.Linear(8 * 16 * 16, 10),
    )  # fmt: skip


def not_a_module() -> str:
    """What a wrong callable returns."""
    return "a string"
