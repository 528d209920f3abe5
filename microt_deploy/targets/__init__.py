"""Stage package: targets. One sub-package per board family (host, cmsdk, stm32, esp32), each one
:class:`~microt_deploy.targets.base.Target`; this module picks the family from the board file and
offers the stage's verbs: render a firmware folder, build it, launch it, flash it.

Adding a family is one folder here (plus its board layer in firmware_templates/boards/ and its
board files): a ``TARGET`` object and an entry in ``FAMILIES``.
"""

from __future__ import annotations

import contextlib
import importlib
import json
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import serial

from microt_deploy import atomic
from microt_deploy.boards import Board
from microt_deploy.errors import MicrotError
from microt_deploy.firmware.render import FirmwareConfig, plan_sizes, read_model_sizes, template_env
from microt_deploy.targets.base import Target
from microt_deploy.targets.qemu import DEFAULT_LIMIT_S, qemu_command
from microt_deploy.targets.toolchain import BuildResult, read_build, require_tool

FAMILIES = ("host", "cmsdk", "stm32", "esp32")

__all__ = ["BuildResult", "FAMILIES", "Target", "build", "flash", "image_path", "launch", "qemu_command",
           "render_firmware", "require_tool", "target_for"]


def target_for(board: Board) -> Target:
    """The family object of ``board`` (its board file's ``family``)."""
    if board.family not in FAMILIES:
        raise MicrotError(f"no board layer for {board.id} (family '{board.family}') yet",
                          f"use one of the families {', '.join(FAMILIES)} (e.g. --board qemu_mps2_an386)")
    return importlib.import_module(f"microt_deploy.targets.{board.family}").TARGET


def render_firmware(compiled_dir: Path, board: Board, out_dir: Path,
                    options: dict[str, Any] | None = None) -> FirmwareConfig:
    """Render the firmware for ``board`` from ``compiled_dir`` (mdt_model.h/.c) into ``out_dir``,
    atomically (the old folder stays until the new one is complete).

    ``options``: the buffer sizes of ``firmware.render.DEFAULTS``, plus the family's own options
    (``sanitize``: host ASan + UBSan build; ``pio``: the emulated board through PlatformIO)."""
    compiled_dir, out_dir = Path(compiled_dir), Path(out_dir)
    target = target_for(board)
    header = compiled_dir / "mdt_model.h"
    if not header.is_file() or not (compiled_dir / "mdt_model.c").is_file():
        raise MicrotError(f"no compiled model (mdt_model.h/.c) in {compiled_dir}", "run `microt-deploy compile` first")
    options = dict(options or {})
    family_options = {k: options.pop(k) for k in ("sanitize", "pio") if k in options}
    config = plan_sizes(board, read_model_sizes(header), options)
    env = template_env()
    values = {**asdict(config), "board": board, "flash_bytes": board.flash_bytes, "ram_bytes": board.ram_bytes}
    with atomic.staged_dir(out_dir) as tmp:
        desc = target.render(tmp, compiled_dir, board, config, env, values, family_options)
        atomic.write_text(tmp / "build.json", json.dumps(desc, indent=2) + "\n")
    return config


def build(board: Board, fw_dir: Path, *, offline: bool = False) -> BuildResult:
    """Build the rendered folder ``fw_dir``; records the result in its build.json. ``offline``: real
    boards are built without PlatformIO's registry (also forced by MICROT_PIO_OFFLINE=1)."""
    fw_dir = Path(fw_dir)
    desc = read_build(fw_dir)
    if desc.get("board") != board.id:
        raise MicrotError(f"{fw_dir} was rendered for {desc.get('board')}, not {board.id}",
                          f"render it again for {board.id}")
    return target_for(board).build(board, fw_dir, desc, offline=offline)


def image_path(board: Board, fw_dir: Path) -> Path:
    """Where the image of ``board`` lands in a rendered firmware folder."""
    return target_for(board).image_path(board, Path(fw_dir))


def can_launch(board: Board) -> bool:
    """True when this machine can run the board's image itself (host build or an emulator)."""
    return target_for(board).can_launch(board)


@contextlib.contextmanager
def launch(board: Board, image: Path, limit_s: float = DEFAULT_LIMIT_S) -> Iterator[serial.Serial]:
    """Start ``image`` for ``board`` and yield an open serial port to it; stopped on exit."""
    image = Path(image)
    target = target_for(board)
    if not target.can_launch(board):
        with target.launch(board, image, limit_s) as port:  # raises the family's one-line refusal
            yield port
        return
    if not image.is_file():
        raise MicrotError(f"no firmware image at {image}", f"run `microt-deploy build --board {board.id}`")
    with target.launch(board, image, limit_s) as port:
        yield port


def flash(board: Board, fw_dir: Path, port: str | None = None, *, offline: bool = False) -> str:
    """Put the built image on a real board (PlatformIO's upload); returns the log."""
    return target_for(board).flash(board, Path(fw_dir), port, offline=offline)
