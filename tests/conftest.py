"""Every test run keeps PlatformIO off the network: any pio call a code path makes runs in a
network namespace with a registry-free core (the offline build of the STM32 projects).

``spine_project``: one small MicroT project trained, exported, compiled and built (for the emulated
mps2-an386, the emulated B-L475E-IOT01A and the host) once per session; the end-to-end spine and the
CI-gate tests evaluate it."""

import os
from pathlib import Path

import pytest

os.environ["MICROT_PIO_OFFLINE"] = "1"

SPINE_BOARDS = ("qemu_mps2_an386", "disco_l475vg_iot01a", "host")
SPINE_CONFIG = {
    "data": {"max_per_class": 60},
    "train": {"teacher_epochs": 4, "sskd_epochs": 6, "joint_epochs": 10},
    "device": {"max_train_samples": 240, "max_calib_samples": 80, "max_test_samples": 40, "train_epochs": 20},
    "eval": {"ratios": [0.3, 0.5, 0.7]},
}


@pytest.fixture(scope="session")
def spine_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from rich.console import Console

    from microt_deploy import pipeline
    from microt_deploy.project import init_project

    root = tmp_path_factory.mktemp("spine")
    console = Console(stderr=True, quiet=True)
    cwd = os.getcwd()
    os.chdir(root.parent)
    try:  # a relative project folder, as `make demo` passes it
        relative = Path(root.name)
        init_project(relative, SPINE_CONFIG)
        pipeline.train(relative, console)
        pipeline.export(relative, console)
        pipeline.compile(relative, console)
        for board in SPINE_BOARDS:
            pipeline.build(relative, board, console)
    finally:
        os.chdir(cwd)
    return root
