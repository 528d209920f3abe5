"""Launching images: the watchdog, missing images and tools, real-board ports that do not exist."""

import time

import pytest

from microt_deploy.boards import load_board
from microt_deploy.errors import DeviceError, MicrotError, ToolMissingError
from microt_deploy.link.device import Device
from microt_deploy.targets import launch, qemu_command


def test_watchdog_kills_a_device_that_outlives_its_limit(built):
    _, result = built("host")
    with launch(load_board("host"), result.image, limit_s=0.5) as port:
        assert Device(port).hello().board == "host"
        time.sleep(1.0)
        assert port.process.poll() is not None  # killed by the watchdog, not hanging
        with pytest.raises(DeviceError):
            Device(port, timeout=0.5).hello()


def test_missing_image_and_missing_qemu(tmp_path, monkeypatch):
    board = load_board("qemu_mps2_an386")
    with pytest.raises(MicrotError, match="no firmware image at"):
        with launch(board, tmp_path / "nope.elf"):
            pass
    image = tmp_path / "firmware.elf"
    image.write_bytes(b"\x7fELF")
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ToolMissingError, match="apt-get install qemu-system-arm"):
        with launch(board, image):
            pass


def test_qemu_command_is_deterministic_and_loopback_only(tmp_path):
    cmd = qemu_command(load_board("qemu_mps2_an386"), tmp_path / "f.elf", 4321)
    text = " ".join(cmd)
    assert "-icount shift=0" in text and "-M mps2-an386" in text and "target=native" in text
    assert "host=127.0.0.1,port=4321,server=on,wait=on,nodelay=on" in text
    # An SoC machine has its own core: no -cpu, and never a semihosting exit that a board lacks.
    stm32 = qemu_command(load_board("disco_l475vg_iot01a"), tmp_path / "f.elf", 4321)
    assert stm32[stm32.index("-M") + 1] == "b-l475e-iot01a" and "-cpu" not in stm32
