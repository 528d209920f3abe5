"""Lays out PlatformIO projects: a real board's (platformio.ini + src/ + the fit-check files) and the
emulated board's registry-free one (a local development platform, toolchain and SCons package).

Owns: the folder layout of firmware/<board>/ for real boards, the board layer's rendered header,
the fit-check build description (portable C with the board's CPU flags against a linker script of
the board's FLASH/RAM) and the offline PlatformIO files under pio/ for the emulated board.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import asdict
from pathlib import Path
from typing import Any

import jinja2

from microt_deploy.boards import Board, load_board
from microt_deploy.errors import MicrotError, ToolMissingError
from microt_deploy.firmware.render import TEMPLATES, FirmwareConfig, _copy_sources, graph_prefixes, graphs_header

FIT_DIR = "fit"
FIT_IMAGE = "fit/firmware_fit.elf"
# Where `qemu` (the custom PlatformIO target) listens for the serial client.
QEMU_TARGET_PORT = 4444
PLATFORM_VERSION = "0.1.0"
_PIN = re.compile(r"^P([A-K])(\d{1,2})$")


def _pin(name: str, board: Board) -> tuple[str, int]:
    match = _PIN.match(name)
    if not match or int(match[2]) > 15:
        raise MicrotError(f"boards/{board.id}.toml: pin {name!r} is not like PG7",
                          "write pins as P<port letter><0..15>")
    return match[1], int(match[2])


def stm32_clock_hz(data: dict[str, Any]) -> int:
    """The core clock the [stm32] PLL values give: oscillator / M * N / (R on L4, P on F7 / H7)."""
    pll = data["pll"]
    out = pll["r"] if data["series"] == "L4" else pll["p"]
    return data["oscillator_hz"] * pll["n"] // (pll["m"] * out)


def stm32_layer_data(board: Board) -> dict[str, Any]:
    """The [stm32] table of a board file, checked: pins parse and the PLL gives the board's clock."""
    data = board.extra.get("stm32")
    need = ("series", "hal_header", "uart", "uart_af", "tx", "rx", "oscillator", "oscillator_hz", "pll",
            "flash_latency")
    if not isinstance(data, dict) or any(k not in data for k in need):
        raise MicrotError(f"boards/{board.id}.toml has no complete [stm32] table (needs {', '.join(need)})",
                          "add the UART, pins and clock tree of the board's ST-LINK port to its data file")
    if data["series"] not in ("L4", "F7", "H7") or data["oscillator"] not in ("MSI", "HSE", "HSE_BYPASS"):
        raise MicrotError(f"boards/{board.id}.toml: series {data['series']!r} / oscillator {data['oscillator']!r} "
                          "not supported", "use series L4, F7 or H7 and oscillator MSI, HSE or HSE_BYPASS")
    if data["series"] == "H7" and "supply" not in data:
        raise MicrotError(f"boards/{board.id}.toml: an H7 needs [stm32] supply", "e.g. supply = \"PWR_LDO_SUPPLY\"")
    clock = stm32_clock_hz(data)
    if clock != board.clock_hz:
        raise MicrotError(f"boards/{board.id}.toml: the PLL gives {clock:,} Hz, clock_hz says {board.clock_hz:,}",
                          "fix the [stm32] pll values or clock_hz")
    return {**data, "tx": _pin(data["tx"], board), "rx": _pin(data["rx"], board)}


def fit_toolchain(board: Board) -> dict[str, Any]:
    """The fit-check build: the portable C with the board's CPU flags, linked against a generic
    Cortex-M linker script with the board's FLASH/RAM. Xtensa boards have no compiler here: their
    fit is estimated with Cortex-M4F code (``estimate`` True)."""
    estimate = board.arch != "arm"
    cpu = list(load_board("qemu_mps2_an386").cpu_flags) if estimate else list(board.cpu_flags)
    return {
        "cc": "arm-none-eabi-gcc",
        "cflags": ["-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", "-Isrc", f"-I{FIT_DIR}", *cpu,
                   "-ffunction-sections", "-fdata-sections"],
        "ldflags": ["-T", f"{FIT_DIR}/link.ld", "-nostartfiles", "--specs=nano.specs", "-Wl,--gc-sections",
                    "-Wl,--print-memory-usage", f"-Wl,-Map={FIT_DIR}/firmware_fit.map", "-lm"],
        "image": FIT_IMAGE,
        "estimate": estimate,
    }


def render_board_project(tmp: Path, compiled_dir: Path, board: Board, config: FirmwareConfig,
                         env: jinja2.Environment, values: dict[str, Any]) -> None:
    """Write a real board's PlatformIO project into ``tmp`` (the staging folder of firmware/<board>)."""
    src, fit = tmp / "src", tmp / FIT_DIR
    src.mkdir()
    fit.mkdir()
    portable: list[str] = []
    for folder in (TEMPLATES / "runtime", TEMPLATES / "app", compiled_dir):
        portable += _copy_sources(folder, src)
    layer = _copy_sources(TEMPLATES / "boards" / board.family, src)
    (src / "mdt_graphs.h").write_text(graphs_header(graph_prefixes(compiled_dir / "mdt_model.h")))
    (src / "mdt_config.h").write_text(env.get_template("app/mdt_config.h.j2").render(**values))
    extra_flags: list[str] = []
    if board.family == "stm32":
        data = stm32_layer_data(board)
        (src / "mdt_board_stm32.h").write_text(
            env.get_template("boards/stm32/mdt_board_stm32.h.j2").render(board=board, s=data, tx=data["tx"],
                                                                         rx=data["rx"]))
        if data["oscillator"].startswith("HSE"):
            # The HAL derives UART divisors and SysTick from HSE_VALUE; its template default may differ.
            extra_flags.append(f"-DHSE_VALUE={data['oscillator_hz']}U")
    elif board.family == "esp32":
        project_values = {**values, "sources": portable, "board_sources": layer}
        (tmp / "CMakeLists.txt").write_text(env.get_template("pio/esp32/CMakeLists.txt.j2").render(board=board))
        component = env.get_template("pio/esp32/src_CMakeLists.txt.j2").render(**project_values)
        (src / "CMakeLists.txt").write_text(component)
        (tmp / "sdkconfig.defaults").write_text(env.get_template("pio/esp32/sdkconfig.defaults.j2").render(**values))
    (tmp / "platformio.ini").write_text(
        env.get_template("pio/platformio.ini.j2").render(board=board, extra_build_flags=extra_flags))
    fit_sources = _copy_sources(TEMPLATES / "boards" / "cmsdk", fit)
    (fit / "link.ld").write_text(env.get_template("boards/cmsdk/link.ld.j2").render(**values))
    tool = fit_toolchain(board)
    build = {
        "board": board.id, "family": board.family, "run": "platformio",
        "pio": {"env": board.id, **{k: board.extra[k] for k in ("pio_platform", "pio_board", "pio_framework",
                                                                 "upload_protocol")}},
        "sources": [f"src/{name}" for name in portable] + [f"{FIT_DIR}/{name}" for name in fit_sources],
        "board_sources": [f"src/{name}" for name in layer],
        **tool,
        "config": asdict(config),
    }
    (tmp / "build.json").write_text(json.dumps(build, indent=2) + "\n")


def _scons() -> tuple[str, Path]:
    try:
        import SCons
    except ImportError:
        raise ToolMissingError("SCons is not installed (PlatformIO's build engine, offline)",
                               "install it: pip install scons==4.11.1") from None
    return SCons.__version__, Path(SCons.__file__).resolve().parent.parent


def _pio_version(release: str, prefix: int) -> str:
    """PlatformIO's package version for a tool release: SCons 4.11.1 -> 4.41101.0 (prefix 4)."""
    parts = [int(p) for p in re.findall(r"\d+", release)[:3]] + [0, 0]
    return f"{prefix}.{parts[0]}{parts[1]:02d}{parts[2]:02d}.0"


def render_emulated_project(tmp: Path, board: Board, env: jinja2.Environment) -> dict[str, Any]:
    """Add a registry-free PlatformIO project to the emulated board's folder ``tmp``; returns the
    ``pio`` entry of its build.json."""
    from microt_deploy.targets.builder import require_tool
    from microt_deploy.targets.runner import qemu_command

    gcc = Path(require_tool("arm-none-eabi-gcc"))
    version = subprocess.run([str(gcc), "-dumpversion"], capture_output=True, text=True, check=True).stdout.strip()
    scons_release, scons_path = _scons()
    pio = tmp / "pio"
    platform, toolchain = pio / "platform", pio / "toolchain"
    scons_pkg = pio / "core" / "packages" / "tool-scons"
    for folder in (platform / "builder", toolchain / "bin", scons_pkg):
        folder.mkdir(parents=True)
    source = TEMPLATES / "pio" / "qemu"
    shutil.copy2(source / "platform" / "platform.py", platform / "platform.py")
    shutil.copy2(source / "platform" / "builder" / "main.py", platform / "builder" / "main.py")
    (platform / "platform.json").write_text(
        env.get_template("pio/qemu/platform/platform.json.j2").render(board=board, version=PLATFORM_VERSION))
    (toolchain / "package.json").write_text(
        env.get_template("pio/qemu/toolchain/package.json.j2").render(gcc_version=_pio_version(version, 1)))
    for tool in sorted(gcc.parent.glob("arm-none-eabi-*")):
        (toolchain / "bin" / tool.name).symlink_to(tool)
    scons_version = _pio_version(scons_release, 4)
    (scons_pkg / "package.json").write_text(env.get_template("pio/qemu/tool-scons/package.json.j2").render(
        scons_version=scons_version, scons_release=scons_release))
    (scons_pkg / "scons.py").write_text(
        env.get_template("pio/qemu/tool-scons/scons.py.j2").render(scons_path=str(scons_path)))
    # What PlatformIO's own installer would have written: the package's owner and version.
    meta = {"type": "tool", "name": "tool-scons", "version": scons_version,
            "spec": {"owner": "platformio", "id": None, "name": "tool-scons", "requirements": None, "uri": None}}
    (scons_pkg / ".piopm").write_text(json.dumps(meta))
    (tmp / "platformio.ini").write_text(env.get_template("pio/qemu/platformio.ini.j2").render(board=board))
    qemu = qemu_command(board, Path("firmware.elf"), QEMU_TARGET_PORT)[:-2]  # without -kernel <image>
    return {"env": board.id, "core_dir": "pio/core", "qemu": qemu,
            "qemu_serial": f"socket://127.0.0.1:{QEMU_TARGET_PORT}"}
