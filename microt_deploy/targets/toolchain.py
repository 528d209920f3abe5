"""What every family's build shares: finding an external tool, one direct compiler call over a
rendered folder's build.json, reading a link's memory use and turning a region overflow into a
one-line error with the numbers, and the :class:`BuildResult` every build returns.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from microt_deploy import atomic, children
from microt_deploy.boards import Board
from microt_deploy.errors import MicrotError, ToolMissingError

DEBIAN_PACKAGES = {"gcc": "gcc", "arm-none-eabi-gcc": "gcc-arm-none-eabi libnewlib-arm-none-eabi",
                   "arm-none-eabi-size": "binutils-arm-none-eabi", "size": "binutils",
                   "qemu-system-arm": "qemu-system-arm (10.0 from bookworm-backports for the STM32 machines)"}
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
    # Who built it: "gcc", "platformio (offline: ...)", "platformio (registry)"; shown to the user.
    built_by: str = ""


def require_tool(name: str) -> str:
    """Path of an external tool, or ToolMissingError naming the Debian package that provides it."""
    path = shutil.which(name)
    if path is None:
        package = DEBIAN_PACKAGES.get(name, name)
        raise ToolMissingError(f"{name} is not installed", f"install it: apt-get install {package}")
    return path


def read_build(fw_dir: Path) -> dict[str, Any]:
    """The build.json of a rendered firmware folder."""
    path = Path(fw_dir) / "build.json"
    if not path.is_file():
        raise MicrotError(f"{fw_dir} is not a rendered firmware folder (no build.json)",
                          "run `microt-deploy build` to render it")
    return json.loads(path.read_text())


def record_result(fw_dir: Path, desc: dict[str, Any], result: BuildResult, **extra: Any) -> None:
    """Write the result (and any ``extra`` keys) into the folder's build.json, atomically."""
    desc["result"] = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(result).items() if k != "log"}
    desc.update(extra)
    atomic.write_text(Path(fw_dir) / "build.json", json.dumps(desc, indent=2) + "\n")


_REGION = re.compile(r"^\s*(\w+):\s+(\d+)\s*(B|KB|MB|GB)\s+(\d+)\s*(B|KB|MB|GB)", re.MULTILINE)
_OVERFLOW = re.compile(r"region `?(\w+)'? overflowed by (\d+) bytes")
_UNITS = {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3}


def parse_memory_usage(log: str) -> dict[str, tuple[int, int]]:
    """``-Wl,--print-memory-usage`` output -> {region: (used, size)} in bytes."""
    return {m[1]: (int(m[2]) * _UNITS[m[3]], int(m[4]) * _UNITS[m[5]]) for m in _REGION.finditer(log)}


class FitError(MicrotError):
    """A linker region overflowed: ``region`` and by how many bytes (``over``)."""

    def __init__(self, problem: str, fix: str = "", exit_code: int | None = None, *, region: str = "",
                 over: int = 0) -> None:
        super().__init__(problem, fix, exit_code)
        self.region, self.over = region, over


def overflow_error(board: Board, log: str) -> FitError | None:
    """The one-line error for a linker region overflow, or None when nothing overflowed."""
    match = _OVERFLOW.search(log)
    if not match:
        return None
    region, over = match[1], int(match[2])
    sizes = {"RAM": board.ram_bytes, "FLASH": board.flash_bytes}
    size = sizes.get(region)
    needs = f" (needs {size + over:,} of {size:,})" if size else ""
    return FitError(
        f"model does not fit {board.id}: {region} overflowed by {over:,} bytes{needs}",
        "choose an earlier split or a smaller model, lower max_slots/max_classes, or pick a board with more memory",
        region=region, over=over,
    )


def linked_sizes(board: Board, log: str) -> tuple[int, int]:
    """(flash, RAM) bytes used, from the link's memory-usage lines (the regions named FLASH and RAM:
    the ones the board file's flash_bytes / ram_bytes budget)."""
    usage = parse_memory_usage(log)
    if "FLASH" not in usage or "RAM" not in usage:
        raise MicrotError(f"no memory usage in the {board.id} link output", "check the linker (binutils) version")
    return usage["FLASH"][0], usage["RAM"][0]


def host_sizes(image: Path) -> tuple[int, int]:
    """(flash-like, RAM-like) bytes of a host executable: text + data, data + bss."""
    out = children.run([require_tool("size"), str(image)], capture_output=True, text=True, check=True).stdout
    text, data, bss = (int(v) for v in out.splitlines()[1].split()[:3])
    return text + data, data + bss


def compile_direct(board: Board, fw_dir: Path, desc: dict[str, Any], image: Path) -> str:
    """One compiler call over the description's sources; the image appears only when it linked."""
    cc = require_tool(desc["cc"])
    tmp = image.with_name(f".{image.name}.tmp")
    cmd = [cc, *desc["cflags"], *desc["sources"], *desc["ldflags"], "-o", str(tmp.relative_to(fw_dir))]
    try:
        proc = children.run(cmd, cwd=fw_dir, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S,
                            stdin=subprocess.DEVNULL)
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
