"""Fixtures: the firmware rendered around the toy model and built for the host, one live device."""

from pathlib import Path

import pytest

from microt_deploy.boards import load_board
from microt_deploy.link.device import Device
from microt_deploy.targets import build, launch, render_firmware
from tests.firmware.toy_model import write_toy_model


@pytest.fixture(scope="session")
def host_image(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("host_fw")
    board = load_board("host")
    compiled = write_toy_model(root / "compiled")
    render_firmware(compiled, board, root / "fw", {"max_tasks": 2, "max_classes": 8, "max_slots": 64})
    return build(board, root / "fw").image


@pytest.fixture
def device(host_image):
    with launch(load_board("host"), host_image, limit_s=120) as port:
        yield Device(port, timeout=5.0, long_timeout=30.0)
