"""The STM32 family: bare-metal firmware for ST boards (L4 / L4+, F7, H7) with microt-deploy's own
register-level board layer, startup code and linker script (``layer``), laid out as a PlatformIO
project for the ST platform. The same project is built by the user's PlatformIO (with its
registry) or, offline, by a registry-free core with a stand-in for the ST platform and Debian's
arm-none-eabi-gcc; a board that QEMU emulates (B-L475E-IOT01A) runs its very image there.
"""

from __future__ import annotations

import contextlib
import shutil
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import jinja2
import serial

from microt_deploy.boards import Board
from microt_deploy.errors import MicrotError
from microt_deploy.firmware.render import TEMPLATES, FirmwareConfig, render_portable
from microt_deploy.targets import platformio
from microt_deploy.targets.base import Target
from microt_deploy.targets.qemu import launch_qemu
from microt_deploy.targets.toolchain import BuildResult, linked_sizes, record_result

PIO_TEMPLATES = TEMPLATES / "pio" / "stm32"
OFFLINE_PLATFORM = TEMPLATES / "pio" / "ststm32_offline"
OFFLINE_CORE = ".pio-offline-core"
# PlatformIO's own default for bare-metal ST projects is -Os; the generated platformio.ini sets -O2
# (custom_mdt_optimize, applied by mdt_build.py) because `microt-deploy bench` measures both on the
# MLPerf Tiny models (README, "Compiler benchmark"): -Os costs 3.5-5.7 % more instructions per
# inference (the DSP fast paths are assembly either way; the C around them is not) and saves 0.4-9.5 KB
# of flash, next to the 1-2 MB of flash of the supported STM32 boards; stack and SRAM are the same.
# The boards thus run what the benchmark's -O2 column measured.
OPTIMIZE = "-O2"


def _board_definition(board: Board) -> Path | None:
    """The board JSON the project must carry (None: the ST platform has the board); refuses a
    ``pio_board`` that neither the ST platform nor microt-deploy defines, before anything is written
    (PlatformIO itself only finds out at `pio run`, and `pio project config` does not check)."""
    name = board.extra.get("pio_board", "")
    own = PIO_TEMPLATES / "boards" / f"{name}.json"
    if own.is_file():
        return own
    if (OFFLINE_PLATFORM / "boards" / f"{name}.json").is_file():
        return None
    known = sorted(p.stem for p in [*(OFFLINE_PLATFORM / "boards").glob("*.json"),
                                    *(PIO_TEMPLATES / "boards").glob("*.json")])
    raise MicrotError(f"boards/{board.id}.toml: pio_board {name!r} is not a board id PlatformIO's ST platform "
                      f"knows (checked here: {', '.join(known)})",
                      "use PlatformIO's id for the board, or add its board JSON to "
                      "firmware_templates/pio/stm32/boards/")


LISTEN_TIMEOUT_S = 20.0


def _wait_until_listening(port: serial.Serial, board: Board) -> None:
    """QEMU's STM32L4 USART takes bytes off the socket before the guest has switched its receiver
    on, and drops them: a first frame sent at once is lost. Repeat HELLO with a short timeout until
    the firmware answers, then drop whatever late answers were still on their way."""
    from microt_deploy.errors import DeviceError
    from microt_deploy.link.device import Device

    deadline = time.monotonic() + LISTEN_TIMEOUT_S
    while True:
        try:
            Device(port, timeout=0.3).hello()
            break
        except DeviceError:
            if time.monotonic() > deadline or getattr(port, "process", None) is not None and port.process.poll() \
                    is not None:
                raise DeviceError(f"{board.id} in QEMU did not answer HELLO within {LISTEN_TIMEOUT_S:.0f} s",
                                  "run the image by hand in QEMU to see where it stops") from None
    time.sleep(0.2)
    port.reset_input_buffer()


class Stm32Target(Target):
    family = "stm32"

    def render(self, tmp: Path, compiled_dir: Path, board: Board, config: FirmwareConfig,
               env: jinja2.Environment, values: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
        from microt_deploy.targets.stm32 import layer

        if options.get("sanitize") or options.get("pio"):
            raise MicrotError(f"{board.id} takes neither the sanitizer nor the --pio option",
                              "it always gets a PlatformIO project")
        layer.layer_data(board)  # bad board data is refused before anything is written
        own_board = _board_definition(board)
        src = tmp / "src"
        src.mkdir()
        portable = render_portable(src, compiled_dir, env, values)
        board_sources = layer.render_layer(env, board, values, src, tmp)
        (tmp / "platformio.ini").write_text(env.get_template("pio/stm32/platformio.ini.j2").render(
            board=board, cpu_flags=board.cpu_flags, optimize=OPTIMIZE))
        shutil.copy2(PIO_TEMPLATES / "mdt_build.py", tmp / "mdt_build.py")
        if own_board is not None:  # a board PlatformIO's ST platform does not know travels with the project
            (tmp / "boards").mkdir()
            shutil.copy2(own_board, tmp / "boards" / own_board.name)
        return {
            "board": board.id, "family": board.family, "run": "platformio",
            "pio": {"env": board.id, **{k: board.extra[k] for k in ("pio_platform", "pio_board", "upload_protocol")},
                    "cpu_flags": list(board.cpu_flags), "optimize": OPTIMIZE},
            "sources": [f"src/{name}" for name in portable],
            "board_sources": [f"src/{name}" for name in board_sources],
            "config": asdict(config),
        }

    def stack_in_ram(self, board: Board) -> bool:
        from microt_deploy.targets.stm32 import layer

        return layer.layer_data(board)["stack_region"] == "RAM"

    def build(self, board: Board, fw_dir: Path, desc: dict[str, Any], *, offline: bool = False) -> BuildResult:
        fw_dir = Path(fw_dir)
        platformio.validate_project(board, fw_dir)
        offline = offline or platformio.forced_offline()
        core = self._offline_core(fw_dir) if offline else None
        log = platformio.run_build(board, fw_dir, core, offline=offline)
        image = self.image_path(board, fw_dir)
        if not image.is_file():
            raise MicrotError(f"`pio run` for {board.id} made no {image}", "see build.log in the folder")
        flash, ram = linked_sizes(board, log)
        built_by = (f"PlatformIO, offline (stand-in ST platform, arm-none-eabi-gcc {platformio.gcc_release()})"
                    if offline else "PlatformIO with the registry's ST platform")
        result = BuildResult(board=board.id, image=image, flash_bytes=flash, ram_bytes=ram,
                             flash_total=board.flash_bytes, ram_total=board.ram_bytes, log=log, built_by=built_by)
        record_result(fw_dir, desc, result, offline=offline)
        return result

    def _offline_core(self, fw_dir: Path) -> Path:
        return platformio.offline_core(fw_dir / OFFLINE_CORE, {"ststm32": OFFLINE_PLATFORM})

    def image_path(self, board: Board, fw_dir: Path) -> Path:
        return Path(fw_dir) / ".pio" / "build" / board.id / "firmware.elf"

    def can_launch(self, board: Board) -> bool:
        return bool(board.extra.get("qemu_machine"))

    @contextlib.contextmanager
    def launch(self, board: Board, image: Path, limit_s: float) -> Iterator[serial.Serial]:
        if not self.can_launch(board):
            raise MicrotError(f"{board.id} is a real board and QEMU does not emulate it",
                              "flash it with `microt-deploy flash`, then run eval (it finds the board's port)")
        with launch_qemu(board, image, limit_s) as port:
            _wait_until_listening(port, board)
            yield port

    def flash(self, board: Board, fw_dir: Path, port: str | None, *, offline: bool = False,
              timeout_s: float | None = None, serial_number: str | None = None) -> str:
        fw_dir = Path(fw_dir)
        offline = offline or platformio.forced_offline()
        core = self._offline_core(fw_dir) if offline else None
        return platformio.upload(board, fw_dir, port, offline=offline, core_dir=core, timeout_s=timeout_s,
                                 serial_number=serial_number)


TARGET = Stm32Target()
