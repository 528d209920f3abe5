"""The ESP32 family (Xtensa, ESP-IDF through PlatformIO's espressif32 platform). No Xtensa compiler
or emulator exists here: the project is rendered for the user's PlatformIO and never built here;
what fits is estimated by compiling the portable C for a Cortex-M4F against the board's memory,
and build.json and `microt-deploy boards` say so."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import jinja2

from microt_deploy.boards import Board, load_board
from microt_deploy.errors import MicrotError
from microt_deploy.firmware.render import TEMPLATES, FirmwareConfig, copy_sources, render_portable
from microt_deploy.targets import platformio
from microt_deploy.targets.base import Target
from microt_deploy.targets.toolchain import BuildResult, compile_direct, linked_sizes, record_result

FIT_DIR = "fit"
FIT_IMAGE = "fit/firmware_fit.elf"


def fit_toolchain() -> dict[str, Any]:
    """The fit estimate: the portable C with Cortex-M4F flags against a linker script of the board's
    FLASH / RAM (the emulated board's startup and layout stand in for the ESP-IDF's)."""
    cpu = list(load_board("qemu_mps2_an386").cpu_flags)
    return {
        "cc": "arm-none-eabi-gcc",
        "cflags": ["-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", "-Isrc", f"-I{FIT_DIR}", *cpu,
                   "-ffunction-sections", "-fdata-sections"],
        "ldflags": ["-T", f"{FIT_DIR}/link.ld", "-nostartfiles", "--specs=nano.specs", "-Wl,--gc-sections",
                    "-Wl,--print-memory-usage", f"-Wl,-Map={FIT_DIR}/firmware_fit.map", "-lm"],
        "image": FIT_IMAGE,
    }


class Esp32Target(Target):
    family = "esp32"

    def render(self, tmp: Path, compiled_dir: Path, board: Board, config: FirmwareConfig,
               env: jinja2.Environment, values: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
        if options.get("sanitize") or options.get("pio"):
            raise MicrotError(f"{board.id} takes neither the sanitizer nor the --pio option",
                              "it always gets an ESP-IDF PlatformIO project")
        src, fit = tmp / "src", tmp / FIT_DIR
        src.mkdir()
        fit.mkdir()
        portable = render_portable(src, compiled_dir, env, values)
        layer = copy_sources(TEMPLATES / "boards" / "esp32", src)
        project_values = {**values, "sources": portable, "board_sources": layer}
        (tmp / "CMakeLists.txt").write_text(env.get_template("pio/esp32/CMakeLists.txt.j2").render(board=board))
        component = env.get_template("pio/esp32/src_CMakeLists.txt.j2").render(**project_values)
        (src / "CMakeLists.txt").write_text(component)
        (tmp / "sdkconfig.defaults").write_text(env.get_template("pio/esp32/sdkconfig.defaults.j2").render(**values))
        (tmp / "platformio.ini").write_text(env.get_template("pio/esp32/platformio.ini.j2").render(board=board))
        fit_sources = copy_sources(TEMPLATES / "boards" / "cmsdk", fit)
        (fit / "link.ld").write_text(env.get_template("boards/cmsdk/link.ld.j2").render(**values))
        return {
            "board": board.id, "family": board.family, "run": "platformio",
            "pio": {"env": board.id, **{k: board.extra[k] for k in ("pio_platform", "pio_board", "pio_framework",
                                                                     "upload_protocol")}},
            "sources": [f"src/{name}" for name in portable] + [f"{FIT_DIR}/{name}" for name in fit_sources],
            "board_sources": [f"src/{name}" for name in layer],
            **fit_toolchain(),
            "config": asdict(config),
        }

    def build(self, board: Board, fw_dir: Path, desc: dict[str, Any], *, offline: bool = False) -> BuildResult:
        image = fw_dir / desc["image"]
        log = compile_direct(board, fw_dir, desc, image)
        flash, ram = linked_sizes(board, log)
        platformio.validate_project(board, fw_dir)
        result = BuildResult(board=board.id, image=image, flash_bytes=flash, ram_bytes=ram,
                             flash_total=board.flash_bytes, ram_total=board.ram_bytes, log=log, estimate=True,
                             built_by="an estimate: Cortex-M4F code standing in for Xtensa")
        verified = [
            f"pio project config parses platformio.ini; env:{board.id} has platform {board.extra['pio_platform']}, "
            f"board {board.extra['pio_board']}, framework {board.extra['pio_framework']}",
            "app + runtime + model compile with -std=c99 -Wall -Wextra -Werror (Cortex-M4F flags)",
        ]
        not_verified = [
            f"flash/RAM of {board.id} are an estimate from an ARM build, not Xtensa code",
            f"the board layer ({', '.join(desc['board_sources'])}) and ESP-IDF are never compiled here "
            "(no Xtensa toolchain)",
            "nothing ran on the board: upload, UART and cycle counter are untested here",
        ]
        record_result(fw_dir, desc, result, verified=verified, not_verified=not_verified)
        return result

    def image_path(self, board: Board, fw_dir: Path) -> Path:
        return Path(fw_dir) / ".pio" / "build" / board.id / "firmware.elf"

    def flash(self, board: Board, fw_dir: Path, port: str | None, *, offline: bool = False,
              timeout_s: float | None = None, serial_number: str | None = None) -> str:
        # esptool finds the chip by its serial port: the rig's `serial` (the USB-UART), not a probe id
        return platformio.upload(board, fw_dir, port, offline=offline, timeout_s=timeout_s)


TARGET = Esp32Target()
