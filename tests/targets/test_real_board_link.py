"""Reaching a real board the way `eval` does (pipeline.open_device): the port found by USB ids or
given with --port, opened exclusively; what happens with no board, a busy port, a port given for an
emulated board. The port discovery itself is tested in tests/link/test_ports.py."""

from __future__ import annotations

import os
import pty

import pytest
import serial
from rich.console import Console

from microt_deploy import pipeline
from microt_deploy.boards import load_board
from microt_deploy.errors import DeviceError, MicrotError, NoBoardError
from microt_deploy.link.ports import candidate_ports
from microt_deploy.project import init_project, open_project


@pytest.fixture()
def project(tmp_path):
    init_project(tmp_path / "p", {"device": {"board": "nucleo_l4r5zi"}})
    return open_project(tmp_path / "p")


def test_no_board_plugged_in_is_exit_5_in_one_line(project):
    board = load_board("nucleo_l4r5zi")
    if candidate_ports(board):
        pytest.fail("an ST-LINK is plugged into this machine: this test needs none")
    with pytest.raises(NoBoardError) as err:
        with pipeline.open_device(project, board, None, Console(quiet=True)):
            pass
    assert err.value.exit_code == 5 and "\n" not in str(err.value)
    assert str(err.value).startswith("no serial port of nucleo_l4r5zi found") and "--port" in str(err.value)


def test_a_busy_port_is_one_line_and_a_free_one_opens(project):
    master, slave = pty.openpty()
    path = os.ttyname(slave)
    try:
        holder = serial.Serial(path, exclusive=True)  # another program has the board's port
        with pytest.raises(DeviceError, match=rf"port {path} is busy"):
            with pipeline.open_device(project, load_board("nucleo_l4r5zi"), path):
                pass
        holder.close()
        with pipeline.open_device(project, load_board("nucleo_l4r5zi"), path) as device:
            assert device.port.is_open and device.port.port == path
    finally:
        os.close(master)
        os.close(slave)


def test_a_port_for_an_emulated_board_is_refused(project):
    with pytest.raises(MicrotError, match="--port is for real boards"):
        with pipeline.open_device(project, load_board("qemu_mps2_an386"), "/dev/ttyACM0"):
            pass


def test_the_projects_own_port_is_used_when_no_port_is_given(tmp_path):
    master, slave = pty.openpty()
    path = os.ttyname(slave)
    try:
        init_project(tmp_path / "q", {"device": {"board": "nucleo_l4r5zi", "port": path}})
        project = open_project(tmp_path / "q")
        with pipeline.open_device(project, load_board("nucleo_l4r5zi"), None) as device:
            assert device.port.port == path
    finally:
        os.close(master)
        os.close(slave)


def test_eval_refuses_an_image_whose_build_did_not_finish_or_later_failed(project):
    board = load_board("qemu_mps2_an386")
    fw = project.firmware_dir(board.id)
    fw.mkdir(parents=True)
    (fw / "build.json").write_text('{"board": "qemu_mps2_an386"}')  # rendered, never built
    with pytest.raises(MicrotError, match="no successful build of qemu_mps2_an386"):
        with pipeline.open_device(project, board, None):
            pass
    (fw / "build.json").write_text('{"board": "qemu_mps2_an386", "result": {}}')
    (fw / "firmware.elf").write_bytes(b"\x7fELF")
    (fw.parent / f"{board.id}.failed.log").write_text("model does not fit\n")
    with pytest.raises(MicrotError, match="the last build of qemu_mps2_an386 failed"):
        with pipeline.open_device(project, board, None):
            pass
