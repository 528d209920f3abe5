"""A tiny but real project config for fast tests of training and export (seconds, not minutes)."""

from __future__ import annotations

import copy
from typing import Any

from microt_deploy.project import DEFAULT_CONFIG


def tiny_config(**train: Any) -> dict[str, Any]:
    """16x16 inputs, three small blocks cut after the second, 10 images per class, 2 epochs each."""
    cfg = copy.deepcopy(DEFAULT_CONFIG)
    cfg["model"].update(
        {
            "input_size": 16,
            "stem_channels": 8,
            "blocks": [[1, 8, 1, 3], [2, 8, 2, 3], [2, 16, 1, 3]],
            "split_block": 2,
            "feature_channels": 16,
            "teacher_dim": 8,
        }
    )
    cfg["train"].update({"teacher_epochs": 2, "sskd_epochs": 2, "joint_epochs": 3, "batch_size": 16})
    cfg["train"].update(train)
    cfg["data"]["max_per_class"] = 10
    return cfg
