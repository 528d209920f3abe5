"""The one interface every board family implements (host, cmsdk, stm32, esp32): lay out a rendered
firmware folder, build it, say where its image is, start it (emulated boards) or flash it (real
boards), and open the serial port to it. ``microt_deploy.targets`` picks the family by the board
file's ``family`` and the rest of the tool talks to this interface only.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jinja2
import serial

from microt_deploy.boards import Board
from microt_deploy.errors import MicrotError
from microt_deploy.firmware.render import FirmwareConfig
from microt_deploy.targets.toolchain import BuildResult


class Target:
    """A board family. Subclasses override what their boards do differently."""

    family = ""

    def render(self, tmp: Path, compiled_dir: Path, board: Board, config: FirmwareConfig,
               env: jinja2.Environment, values: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
        """Write the firmware folder's files into ``tmp``; return its build.json description.

        ``options`` holds the family's own rendering options (``sanitize``, ``pio``); a family that
        does not know one must refuse it."""
        raise NotImplementedError

    def stack_in_ram(self, board: Board) -> bool:
        """False where the board's linker script puts the stack outside the RAM region that
        ``ram_bytes`` budgets (the feature store may then use that room)."""
        return True

    def build(self, board: Board, fw_dir: Path, desc: dict[str, Any], *, offline: bool = False) -> BuildResult:
        """Build the rendered folder into an image; records the result in its build.json."""
        raise NotImplementedError

    def image_path(self, board: Board, fw_dir: Path) -> Path:
        """Where :meth:`build` leaves the image in ``fw_dir``."""
        return Path(fw_dir) / "firmware.elf"

    def can_launch(self, board: Board) -> bool:
        """True when this machine can run the board's image itself (host build, an emulator)."""
        return False

    @contextlib.contextmanager
    def launch(self, board: Board, image: Path, limit_s: float) -> Iterator[serial.Serial]:
        """Start ``image`` and yield an open serial port to it; stopped on exit."""
        raise MicrotError(f"{board.id} is a real board and cannot be launched here",
                          "flash it with `microt-deploy flash`, then pass --port (or let eval find it)")
        yield  # pragma: no cover - makes this a generator for contextmanager

    def flash(self, board: Board, fw_dir: Path, port: str | None, *, offline: bool = False,
              timeout_s: float | None = None, serial_number: str | None = None) -> str:
        """Put the built image on the board; returns the tool's log."""
        raise MicrotError(f"{board.id} is not flashed: `microt-deploy eval` starts it with the built image",
                          "flash only real boards (e.g. --board nucleo_l4r5zi)")
