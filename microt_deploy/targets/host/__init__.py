"""The host family: the same firmware built with gcc for this machine (optionally under ASan +
UBSan) and run on a pty, so the very pyserial code that talks to a board talks to it."""

from __future__ import annotations

import contextlib
import os
import pty
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jinja2
import serial

from microt_deploy import children
from microt_deploy.boards import Board
from microt_deploy.errors import MicrotError
from microt_deploy.firmware.render import FirmwareConfig
from microt_deploy.targets.base import Target
from microt_deploy.targets.direct import build_direct, render_direct
from microt_deploy.targets.qemu import Watchdog, stop
from microt_deploy.targets.toolchain import BuildResult


class HostTarget(Target):
    family = "host"

    def render(self, tmp: Path, compiled_dir: Path, board: Board, config: FirmwareConfig,
               env: jinja2.Environment, values: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
        if options.get("pio"):
            raise MicrotError(f"the PlatformIO option is for the emulated board, not {board.id}",
                              "real boards always get a PlatformIO project; the host build has none")
        return render_direct(tmp, compiled_dir, board, config, env, values, sanitize=bool(options.get("sanitize")))

    def build(self, board: Board, fw_dir: Path, desc: dict[str, Any], *, offline: bool = False) -> BuildResult:
        return build_direct(board, fw_dir, desc, self.image_path(board, fw_dir))

    def image_path(self, board: Board, fw_dir: Path) -> Path:
        return Path(fw_dir) / "firmware_host"

    def can_launch(self, board: Board) -> bool:
        return True

    @contextlib.contextmanager
    def launch(self, board: Board, image: Path, limit_s: float) -> Iterator[serial.Serial]:
        # The firmware owns the pty master (stdin/stdout); the host opens the slave like a real tty.
        master, slave = pty.openpty()
        try:
            proc = children.popen([str(image)], stdin=master, stdout=master, stderr=subprocess.DEVNULL,
                                  close_fds=True)
        except OSError as err:
            os.close(master)
            os.close(slave)
            raise MicrotError(f"cannot start {image} ({err})",
                              "rebuild it with `microt-deploy build --board host`") from None
        os.close(master)
        dog = Watchdog(proc, limit_s)
        port = None
        try:
            port = serial.Serial(os.ttyname(slave), baudrate=115200, timeout=0.1)
            port.process = proc  # lets callers check the firmware's exit status
            os.close(slave)
            slave = -1
            yield port
        finally:
            if port is not None:
                port.close()
            if slave >= 0:
                os.close(slave)
            dog.cancel()
            stop(proc)


TARGET = HostTarget()
