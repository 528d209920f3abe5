"""Builds a rendered firmware folder into an image for the host (gcc) or the emulated Cortex-M4F
(arm-none-eabi-gcc, directly or through the offline PlatformIO project), measures its flash/RAM use
and turns a memory overflow into a one-line error. For real boards it builds what can be built here
(the fit check) and validates the PlatformIO project, recording what was and was not verified.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

from microt_deploy import atomic
from microt_deploy.boards import Board
from microt_deploy.errors import MicrotError, ToolMissingError

DEBIAN_PACKAGES = {"gcc": "gcc", "arm-none-eabi-gcc": "gcc-arm-none-eabi libnewlib-arm-none-eabi",
                   "arm-none-eabi-size": "binutils-arm-none-eabi", "size": "binutils",
                   "qemu-system-arm": "qemu-system-arm"}
BUILD_TIMEOUT_S = 300


@dataclass(frozen=True)
class BuildResult:
    """A built image and what it uses of the board (bytes; totals 0 when the board has no budget)."""

    board: str
    image: Path
    flash_bytes: int
    ram_bytes: int
    flash_total: int
    ram_total: int
    log: str
    # True where flash/RAM come from a stand-in build (ESP32: Cortex-M4F code, no Xtensa compiler here).
    estimate: bool = False


def require_tool(name: str) -> str:
    """Path of an external tool, or ToolMissingError naming the Debian package that provides it."""
    path = shutil.which(name)
    if path is None:
        package = DEBIAN_PACKAGES.get(name, name)
        raise ToolMissingError(f"{name} is not installed", f"install it: apt-get install {package}")
    return path


def image_path(board: Board, fw_dir: Path) -> Path:
    """Where the image of ``board`` lands in a rendered firmware folder: :func:`build` puts it there
    for the host and the emulated board; for a real board it is where `pio run` puts it."""
    if board.run == "platformio":
        return Path(fw_dir) / ".pio" / "build" / board.id / "firmware.elf"
    return Path(fw_dir) / ("firmware_host" if board.family == "host" else "firmware.elf")


def _read_build(fw_dir: Path) -> dict:
    path = fw_dir / "build.json"
    if not path.is_file():
        raise MicrotError(f"{fw_dir} is not a rendered firmware folder (no build.json)",
                          "run `microt-deploy build` to render it")
    return json.loads(path.read_text())


_REGION = re.compile(r"^\s*(FLASH|RAM):\s+(\d+)\s*(B|KB|MB|GB)\s+(\d+)\s*(B|KB|MB|GB)", re.MULTILINE)
_OVERFLOW = re.compile(r"region `?(\w+)'? overflowed by (\d+) bytes")
_UNITS = {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3}


def parse_memory_usage(log: str) -> dict[str, tuple[int, int]]:
    """``-Wl,--print-memory-usage`` output -> {region: (used, size)} in bytes."""
    return {m[1]: (int(m[2]) * _UNITS[m[3]], int(m[4]) * _UNITS[m[5]]) for m in _REGION.finditer(log)}


def overflow_error(board: Board, log: str) -> MicrotError | None:
    """The one-line error for a linker region overflow, or None when nothing overflowed."""
    match = _OVERFLOW.search(log)
    if not match:
        return None
    region, over = match[1], int(match[2])
    size = board.ram_bytes if region == "RAM" else board.flash_bytes
    return MicrotError(
        f"model does not fit {board.id}: {region} overflowed by {over:,} bytes (needs {size + over:,} of {size:,})",
        "choose an earlier split or a smaller model, lower max_slots/max_classes, or pick a board with more memory",
    )


def _host_sizes(image: Path) -> tuple[int, int]:
    out = subprocess.run([require_tool("size"), str(image)], capture_output=True, text=True, check=True).stdout
    text, data, bss = (int(v) for v in out.splitlines()[1].split()[:3])
    return text + data, data + bss


def _compile(board: Board, fw_dir: Path, desc: dict, image: Path) -> str:
    """One compiler call over the description's sources; the image appears only when it linked."""
    cc = require_tool(desc["cc"])
    tmp = image.with_name(f".{image.name}.tmp")
    cmd = [cc, *desc["cflags"], *desc["sources"], *desc["ldflags"], "-o", str(tmp.relative_to(fw_dir))]
    try:
        proc = subprocess.run(cmd, cwd=fw_dir, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise MicrotError(f"building {board.id} took over {BUILD_TIMEOUT_S} s", "check the machine's load") from None
    log = proc.stdout + proc.stderr
    if proc.returncode != 0:
        tmp.unlink(missing_ok=True)
        err = overflow_error(board, log)
        if err is not None:
            raise err
        first = next((line for line in log.splitlines() if "error" in line), log.strip()[-300:])
        raise MicrotError(f"building {board.id} failed: {first.strip()}", f"see the full log with `make -C {fw_dir}`")
    os.replace(tmp, image)
    return log


def _linked_sizes(board: Board, log: str) -> tuple[int, int]:
    usage = parse_memory_usage(log)
    if "FLASH" not in usage or "RAM" not in usage:
        raise MicrotError(f"no memory usage in the {board.id} link output", "check the linker (binutils) version")
    return usage["FLASH"][0], usage["RAM"][0]


def _build_with_pio(board: Board, fw_dir: Path, desc: dict, image: Path) -> str:
    from microt_deploy.targets import platformio

    log = platformio.build_offline(board, fw_dir, fw_dir / desc["pio"]["core_dir"])
    built = fw_dir / ".pio" / "build" / desc["pio"]["env"] / "firmware.elf"
    if not built.is_file():
        raise MicrotError(f"`pio run` for {board.id} made no {built}", "see the log of `pio run -v` in the folder")
    tmp = image.with_name(f".{image.name}.tmp")
    shutil.copyfile(built, tmp)
    os.replace(tmp, image)
    return log


def _build_board_project(board: Board, fw_dir: Path, desc: dict) -> BuildResult:
    """Real board: the fit check (portable C, the board's CPU flags, its FLASH/RAM) and the
    PlatformIO project's validation; build.json records what was and was not verified."""
    from microt_deploy.targets import platformio

    image = fw_dir / desc["image"]
    log = _compile(board, fw_dir, desc, image)
    flash, ram = _linked_sizes(board, log)
    platformio.validate_project(board, fw_dir)
    cpu = "Cortex-M4F code standing in for Xtensa (no Xtensa compiler here)" if desc["estimate"] else \
        " ".join(board.cpu_flags)
    pio = desc["pio"]
    verified = [
        f"pio project config parses platformio.ini; env:{board.id} has platform {pio['pio_platform']}, board "
        f"{pio['pio_board']}, framework {pio['pio_framework']}, upload {pio['upload_protocol']}",
        f"app + runtime + model compile with -std=c99 -Wall -Wextra -Werror and {cpu}",
        f"they link into {board.flash_bytes:,} B flash / {board.ram_bytes:,} B RAM: {flash:,} B / {ram:,} B used",
    ]
    not_verified = [
        f"the board layer ({', '.join(desc['board_sources'])}) and the {desc['pio']['pio_framework']} framework "
        "are not compiled here (the platform comes from the PlatformIO registry)",
        "the size of the HAL / SDK code and the vendor linker script's own regions are not counted",
        "nothing ran on the board: upload, UART and cycle counter are untested here",
    ]
    if desc["estimate"]:
        not_verified.insert(0, f"flash/RAM of {board.id} are an estimate from the ARM build, not Xtensa code")
    result = BuildResult(board=board.id, image=image, flash_bytes=flash, ram_bytes=ram,
                         flash_total=board.flash_bytes, ram_total=board.ram_bytes, log=log,
                         estimate=desc["estimate"])
    desc["result"] = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(result).items() if k != "log"}
    desc["verified"], desc["not_verified"] = verified, not_verified
    atomic.write_text(fw_dir / "build.json", json.dumps(desc, indent=2) + "\n")
    return result


def build(board: Board, fw_dir: Path) -> BuildResult:
    """Compile the rendered folder ``fw_dir``; records the result in its build.json.

    Real boards get the fit check and the PlatformIO validation; an emulated board rendered with
    the ``pio`` option is built by `pio run` offline, into the same image path."""
    fw_dir = Path(fw_dir)
    desc = _read_build(fw_dir)
    if desc.get("board") != board.id:
        raise MicrotError(f"{fw_dir} was rendered for {desc.get('board')}, not {board.id}",
                          f"render it again for {board.id}")
    if desc.get("run") == "platformio":
        return _build_board_project(board, fw_dir, desc)
    image = image_path(board, fw_dir)
    if "pio" in desc:
        log = _build_with_pio(board, fw_dir, desc, image)
    else:
        log = _compile(board, fw_dir, desc, image)
    if board.family == "host":
        flash, ram = _host_sizes(image)
    else:
        flash, ram = _linked_sizes(board, log)
    result = BuildResult(board=board.id, image=image, flash_bytes=flash, ram_bytes=ram,
                         flash_total=board.flash_bytes, ram_total=board.ram_bytes, log=log)
    desc["result"] = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(result).items() if k != "log"}
    atomic.write_text(fw_dir / "build.json", json.dumps(desc, indent=2) + "\n")
    return result
