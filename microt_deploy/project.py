"""The project folder: its config file (``microt.toml``) and where each stage's artifacts live.

Every stage reads its inputs from and writes its outputs to this folder, so any stage can be rerun
alone and a user can stop after any stage and look at what it made.
"""

from __future__ import annotations

import copy
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w

from microt_deploy import atomic
from microt_deploy.errors import MicrotError

CONFIG_NAME = "microt.toml"

# The embedded default: a small MobileNetV2-style extractor on scikit-learn's digits, the two
# local tasks sharing it, the emulated board and the paper's standard ratio 0.5.
DEFAULT_CONFIG: dict[str, Any] = {
    "model": {
        "input_size": 32,
        "stem_channels": 8,
        # [expand ratio, out channels, stride, depthwise kernel] per inverted-residual block
        "blocks": [
            [1, 8, 1, 3],
            [4, 16, 2, 3],
            [4, 16, 1, 3],
            [4, 24, 2, 3],
            [4, 24, 1, 3],
            [4, 32, 1, 3],
            [4, 32, 1, 3],
        ],
        "split_block": 3,
        "feature_channels": 64,
        "teacher": "builtin:ssl-convnet",
        "teacher_dim": 64,
    },
    "train": {
        "seed": 0,
        "teacher_epochs": 30,
        "sskd_epochs": 30,
        "joint_epochs": 30,
        "batch_size": 64,
        "lr": 0.01,
        "momentum": 0.9,
        "weight_decay": 5e-4,
    },
    "data": {
        "dataset": "digits",
        "split": [0.6, 0.15, 0.25],
        "seed": 0,
    },
    "tasks": [
        {"name": "digits", "labels": "digit", "classes": 10},
        {"name": "loops", "labels": "loops", "classes": 3},
    ],
    "device": {
        "board": "qemu_mps2_an386",
        "port": "",
        "ratio": 0.5,
        "train_epochs": 30,
        "train_lr": 0.05,
        # How many samples of each split are streamed to the device (0 = the whole split). Sending a
        # 3 KiB image into QEMU's UART takes ~0.19 s, so the default keeps the demo near 5 minutes.
        "max_train_samples": 600,
        "max_calib_samples": 200,
        "max_test_samples": 300,
    },
    "eval": {
        "ratios": [0.3, 0.5, 0.7],
    },
}


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


@dataclass
class Project:
    """A project folder and its configuration."""

    root: Path
    config: dict[str, Any]

    # -- artifact locations (one folder per stage) --
    @property
    def config_path(self) -> Path:
        return self.root / CONFIG_NAME

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def export_dir(self) -> Path:
        return self.root / "export"

    @property
    def compiled_dir(self) -> Path:
        return self.root / "compiled"

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    def firmware_dir(self, board_id: str) -> Path:
        return self.root / "firmware" / board_id

    @property
    def runs_dir(self) -> Path:
        return self.root / "runs"

    def save(self) -> None:
        atomic.write_text(self.config_path, tomli_w.dumps(self.config))


def init_project(root: Path, overrides: dict[str, Any] | None = None) -> Project:
    """Create (or update) a project folder with the default config merged with ``overrides``."""
    root = Path(root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    existing: dict[str, Any] = {}
    if (root / CONFIG_NAME).is_file():
        existing = _read_config(root / CONFIG_NAME)
    config = _merge(_merge(DEFAULT_CONFIG, existing), overrides or {})
    project = Project(root=root, config=config)
    project.save()
    return project


def _read_config(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise MicrotError(f"{path} is not valid TOML ({err})", "fix the file or delete it to start over") from None


def open_project(root: Path) -> Project:
    """Open an existing project folder; a folder without ``microt.toml`` is an error with a hint."""
    root = Path(root).resolve()
    path = root / CONFIG_NAME
    if not path.is_file():
        raise MicrotError(
            f"{root} is not a microt-deploy project (no {CONFIG_NAME})",
            f"run `microt-deploy init {root}` first, or pass --project",
        )
    return Project(root=root, config=_merge(DEFAULT_CONFIG, _read_config(path)))
