"""The emulated Cortex-M family (QEMU's MPS2 FPGA images, CMSDK peripherals): the CI board. Built
directly with arm-none-eabi-gcc, or through a registry-free PlatformIO project with the same
sources and flags (``pio`` option), and run in QEMU under ``-icount shift=0``."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jinja2
import serial

from microt_deploy.boards import Board
from microt_deploy.errors import MicrotError
from microt_deploy.firmware.render import TEMPLATES, FirmwareConfig
from microt_deploy.targets import platformio
from microt_deploy.targets.base import Target
from microt_deploy.targets.direct import build_direct, render_direct
from microt_deploy.targets.qemu import launch_qemu, qemu_command
from microt_deploy.targets.toolchain import BuildResult, linked_sizes, record_result

# Where `qemu` (the custom PlatformIO target) listens for the serial client.
QEMU_TARGET_PORT = 4444
PLATFORM_VERSION = "0.1.0"
CORE_DIR = "pio/core"


class CmsdkTarget(Target):
    family = "cmsdk"

    def render(self, tmp: Path, compiled_dir: Path, board: Board, config: FirmwareConfig,
               env: jinja2.Environment, values: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
        if options.get("sanitize"):
            raise MicrotError(f"sanitizers are only available for the host build, not {board.id}",
                              "use --board host")
        desc = render_direct(tmp, compiled_dir, board, config, env, values)
        if options.get("pio"):
            desc["pio"] = self._render_pio_project(tmp, board, env)
        return desc

    def _render_pio_project(self, tmp: Path, board: Board, env: jinja2.Environment) -> dict[str, Any]:
        """A PlatformIO project beside the direct build: a local development platform whose builder
        compiles exactly what build.json says, and a `qemu` target; returns build.json's ``pio``."""
        platform = tmp / "pio" / "platform"
        (platform / "builder").mkdir(parents=True)
        source = TEMPLATES / "pio" / "qemu"
        shutil.copy2(source / "platform" / "platform.py", platform / "platform.py")
        shutil.copy2(source / "platform" / "builder" / "main.py", platform / "builder" / "main.py")
        (platform / "platform.json").write_text(
            env.get_template("pio/qemu/platform/platform.json.j2").render(board=board, version=PLATFORM_VERSION))
        (tmp / "platformio.ini").write_text(env.get_template("pio/qemu/platformio.ini.j2").render(board=board))
        qemu = qemu_command(board, Path("firmware.elf"), QEMU_TARGET_PORT)[:-2]  # without -kernel <image>
        return {"env": board.id, "core_dir": CORE_DIR, "qemu": qemu,
                "qemu_serial": f"socket://127.0.0.1:{QEMU_TARGET_PORT}"}

    def build(self, board: Board, fw_dir: Path, desc: dict[str, Any], *, offline: bool = False) -> BuildResult:
        image = self.image_path(board, fw_dir)
        if "pio" not in desc:
            return build_direct(board, fw_dir, desc, image)
        core = platformio.offline_core(fw_dir / desc["pio"]["core_dir"])
        log = platformio.run_build(board, fw_dir, core, offline=True)
        built = fw_dir / ".pio" / "build" / desc["pio"]["env"] / "firmware.elf"
        if not built.is_file():
            raise MicrotError(f"`pio run` for {board.id} made no {built}", "see build.log in the folder")
        tmp = image.with_name(f".{image.name}.tmp")
        shutil.copyfile(built, tmp)
        tmp.replace(image)
        flash, ram = linked_sizes(board, log)
        result = BuildResult(board=board.id, image=image, flash_bytes=flash, ram_bytes=ram,
                             flash_total=board.flash_bytes, ram_total=board.ram_bytes, log=log,
                             built_by=f"PlatformIO, offline ({desc['cc']} {platformio.gcc_release()})")
        record_result(fw_dir, desc, result)
        return result

    def can_launch(self, board: Board) -> bool:
        return True

    @contextlib.contextmanager
    def launch(self, board: Board, image: Path, limit_s: float) -> Iterator[serial.Serial]:
        with launch_qemu(board, image, limit_s) as port:
            yield port


TARGET = CmsdkTarget()
