"""A factory for the ``module:`` teacher spec test (stands in for a user's DINOv2 loader)."""

from __future__ import annotations

import torch
from torch import nn


def make_teacher() -> nn.Module:
    torch.manual_seed(5)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 8))


def not_a_module() -> str:
    return "nope"
