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

from microt_deploy import atomic, config_schema
from microt_deploy.errors import MicrotError

CONFIG_NAME = "microt.toml"

# The embedded default (from the schema, microt_deploy/config_schema.py; docs/config.md explains each
# key): a small MobileNetV2-style extractor on scikit-learn's digits, the two local tasks sharing it,
# the emulated board and the paper's standard ratio 0.5.
DEFAULT_CONFIG: dict[str, Any] = config_schema.default_config()


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
    """Create (or update) a project folder with the default config merged with ``overrides``.

    The merged config is checked against the schema first: what a later stage would refuse is
    refused here, and nothing (not even the folder) is written then."""
    root = Path(root).resolve()
    existing: dict[str, Any] = {}
    if (root / CONFIG_NAME).is_file():
        existing = _read_config(root / CONFIG_NAME)
    config = _merge(_merge(DEFAULT_CONFIG, existing), overrides or {})
    config_schema.validate(config)
    root.mkdir(parents=True, exist_ok=True)
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
    config = _merge(DEFAULT_CONFIG, _read_config(path))
    config_schema.validate(config)
    return Project(root=root, config=config)
