"""A factory for the ``module:`` teacher spec test (stands in for a user's DINOv2 loader)."""

from __future__ import annotations

import torch
from torch import nn


def make_teacher() -> nn.Module:
    torch.manual_seed(5)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 8))


def not_a_module() -> str:
    return "nope"


CALLS = {"forward": 0}


class CountingTeacher(nn.Module):
    """make_teacher()'s network, counting its forward calls (the cache test asserts none on a hit)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = make_teacher()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        CALLS["forward"] += 1
        return self.net(x)


def make_counting_teacher() -> nn.Module:
    return CountingTeacher()
