"""Fixtures: a tiny real split model compiled by the real compiler, rendered and built per board."""

from pathlib import Path

import pytest

from microt_deploy.boards import load_board
from microt_deploy.targets import build, render_firmware
from tests.targets.split_model import build_split_model, compile_split_model


@pytest.fixture(scope="session")
def split_model(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("split_model")
    paths = build_split_model(root / "export")
    plan = compile_split_model(paths, root / "compiled")
    return {"paths": paths, "compiled": root / "compiled", "plan": plan, "root": root}


@pytest.fixture(scope="session")
def built(split_model):
    """board id -> (FirmwareConfig, BuildResult), built on first use."""
    cache: dict = {}

    def get(board_id: str):
        if board_id not in cache:
            board = load_board(board_id)
            fw = Path(split_model["root"]) / f"fw_{board_id}"
            config = render_firmware(split_model["compiled"], board, fw, {"max_tasks": 2, "max_classes": 10})
            cache[board_id] = (config, build(board, fw))
        return cache[board_id]

    return get
