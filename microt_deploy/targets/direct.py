"""The direct build shared by the families built without PlatformIO (host, the emulated mps2 board):
every source in one flat folder, a Makefile a user can rerun, and one compiler call whose flags
live in build.json (the benchmark images reuse those very flags).
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import jinja2

from microt_deploy.boards import Board
from microt_deploy.firmware.render import TEMPLATES, FirmwareConfig, copy_sources, render_portable
from microt_deploy.targets.toolchain import BuildResult, compile_direct, host_sizes, linked_sizes, record_result


def direct_toolchain(board: Board, sanitize: bool = False) -> dict[str, Any]:
    """Compiler, flags and image name of a direct build for ``board`` (host or bare-metal Cortex-M)."""
    warn = ["-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", "-I."]
    if board.family == "host":
        # Sanitized host builds turn any out-of-bounds access or UB into a non-zero exit.
        san = ["-g", "-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer"]
        return {"cc": "gcc", "cflags": warn + (san if sanitize else []),
                "ldflags": (san if sanitize else []) + ["-lm"], "image": "firmware_host"}
    return {
        "cc": "arm-none-eabi-gcc",
        "cflags": [*warn, *board.cpu_flags, "-ffunction-sections", "-fdata-sections"],
        "ldflags": ["-T", "link.ld", "-nostartfiles", "--specs=nano.specs", "-Wl,--gc-sections",
                    "-Wl,--print-memory-usage", "-Wl,-Map=firmware.map", "-lm"],
        "image": "firmware.elf",
    }


def render_direct(tmp: Path, compiled_dir: Path, board: Board, config: FirmwareConfig, env: jinja2.Environment,
                  values: dict[str, Any], sanitize: bool = False) -> dict[str, Any]:
    """Portable firmware + the family's board layer (firmware_templates/boards/<family>) in one flat
    folder with its Makefile (and linker script where the family has one); returns build.json's dict."""
    tool = direct_toolchain(board, sanitize)
    sources = render_portable(tmp, compiled_dir, env, values)
    layer = TEMPLATES / "boards" / board.family
    sources += copy_sources(layer, tmp)
    if (layer / "link.ld.j2").is_file():
        (tmp / "link.ld").write_text(env.get_template(f"boards/{board.family}/link.ld.j2").render(**values))
    (tmp / "Makefile").write_text(env.get_template("app/Makefile.j2").render(board=board, sources=sources, **tool))
    return {"board": board.id, "family": board.family, "sources": sources, **tool, "config": asdict(config)}


def build_direct(board: Board, fw_dir: Path, desc: dict[str, Any], image: Path) -> BuildResult:
    """Compile a direct folder into ``image`` and record flash / RAM in its build.json."""
    log = compile_direct(board, fw_dir, desc, image)
    flash, ram = host_sizes(image) if board.family == "host" else linked_sizes(board, log)
    result = BuildResult(board=board.id, image=image, flash_bytes=flash, ram_bytes=ram,
                         flash_total=board.flash_bytes, ram_total=board.ram_bytes, log=log, built_by=desc["cc"])
    record_result(fw_dir, desc, result)
    return result
